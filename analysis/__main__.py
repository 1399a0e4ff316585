"""python -m analysis results/<sweep> [out_dir]"""
import sys

from . import analyze

if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m analysis RESULTS_DIR_OR_ROWS_PARQUET [OUT_DIR]")
    print(analyze(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else None))
