"""Every private use of Ray, Ray Tune and torch is in workflows/core/compat.py, checked against the
versions it names: if an upgrade removes or reshapes one of them, this test fails and says which,
before a sweep does (re-check each use against the new version, then update compat.CHECKED)."""
import importlib.metadata
import re
from pathlib import Path

from workflows.core import compat

ROOT = Path(__file__).resolve().parent.parent


def test_each_private_use_is_still_there_as_used():
    uses = compat.private_uses()
    gone = [what for what, ok in uses.items() if not ok]
    assert not gone, (f"workflows/core/compat.py uses what this Ray/torch no longer has as it was checked "
                      f"against {compat.CHECKED}: {gone}")


def test_the_installed_versions_are_the_checked_ones():
    """The pins in pyproject.toml allow only the releases compat.py was checked against."""
    for package, checked in compat.CHECKED.items():
        installed = importlib.metadata.version(package).split("+")[0]
        assert installed.split(".")[:2] == checked.split(".")[:2], (
            f"{package} {installed} is installed; workflows/core/compat.py was checked against {checked}: re-check "
            "its private uses, then update CHECKED")


def test_no_private_use_outside_compat():
    """ray._private, Ray Tune's internals, torch's underscore functions and atexit's: only in compat.py."""
    private = re.compile(r"ray\._private|ray\._common|ray\._raylet|ray\.air\._internal|tune\.execution\.class_cache|"
                         r"torch\._[a-z]|atexit\._run_exitfuncs")
    product = re.compile(private.pattern + r"|\bos\._exit\b")          # a test's forked child may os._exit
    found = [f"{p.relative_to(ROOT)}:{n}" for package in ("workflows", "problems", "optimizers", "analysis", "tests")
             for p in (ROOT / package).rglob("*.py") if p.name not in ("compat.py", "test_compat.py")
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if (private if package == "tests" else product).search(line)]
    assert not found, found


def test_configure_sets_only_what_the_user_has_not():
    import os

    saved = {k: os.environ.get(k) for k in (*compat.RAY_ENVIRONMENT, *compat.RAY_FORCED)}
    try:
        os.environ["RAY_AIR_NEW_OUTPUT"] = "1"              # the user's own
        os.environ.pop("PL_DISABLE_FORK", None)
        compat.configure()
        assert os.environ["RAY_AIR_NEW_OUTPUT"] == "1" and os.environ["PL_DISABLE_FORK"] == "1"
        assert os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
