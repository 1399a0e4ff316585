"""`python -m workflows ...` is the `saddlescape` command (a Ray job can run it from an uploaded
working directory without installing anything)."""
import sys

from .cli import main

sys.exit(main())
