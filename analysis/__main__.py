"""python -m analysis RESULTS [OUT_DIR] [--reference OPTIMIZER]: the report of a sweep's results (as
`saddlescape analyze`)."""
import argparse
import sys

from . import analyze


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis", description="The report of a sweep's results: fits, figures and report.md "
                                "(what `saddlescape analyze` writes).")
    p.add_argument("results", help="a results directory (results/<sweep>) or its rows.parquet")
    p.add_argument("out_dir", nargs="?", default=None, help="where to write the analysis (default: RESULTS/analysis)")
    p.add_argument("--reference", action="append", default=None, metavar="OPTIMIZER",
                   help="compare every variant against this optimizer name (all its variants) or variant label; "
                        "may be given more than once (default: the sweep's analysis.reference)")
    args = p.parse_args(argv)
    try:
        print(analyze(args.results, args.out_dir, reference=args.reference))
    except (ValueError, FileNotFoundError) as e:     # a results table that is not one
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to write the report", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
