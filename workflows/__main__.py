"""`python -m workflows ...` is the `saddlescape` command (a Ray job can run it from an uploaded
working directory without installing anything)."""
from .command import entry

entry()
