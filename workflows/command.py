"""The `saddlescape` command's process (and `python -m workflows`): its environment, set before
anything that reads it is imported, then the command line (workflows/cli.py). Importing a module
of saddlescape changes no environment; running the command does, here."""
import os


def environment():
    """Arrow's memory from the C library's malloc, which gives freed memory back, rather than
    pyarrow's default pool (mimalloc), which kept what the parquet reader's threads had freed: the
    driver's peak at 10⁵ cells was 0.1-0.2 GiB higher, most of it while the tables were written
    (docs/scaling.md). pyarrow reads it once, when it is imported; a choice already in the
    environment stands, and the workers of an embedded Ray inherit it."""
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")


def entry():
    environment()
    from .cli import entry as command      # after the environment: the command imports pyarrow

    command()
