"""The suite's own scheduling: under pytest-xdist (`make test`), the tests that share a module
fixture run in one process, so the fixture is made once (tests/conftest.py marks their group)."""
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_tests_sharing_a_module_fixture_run_in_one_process():
    """tests/test_analysis_scaling.py: four tests share the module fixture `rows`, one does not.
    With xdist's groups ignored (pytest 9.2 with pytest-xdist 3.8) they spread over both processes."""
    out = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p", "no:cacheprovider",
                          str(TESTS / "test_analysis_scaling.py")], cwd=TESTS.parent, capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    where = defaultdict(set)
    for process, test in re.findall(r"\[(gw\d+)\] \[\s*\d+%\] PASSED \S+::(test_\w+)", out.stdout):
        where[test].add(process)
    sharing = [test for test in where if test != "test_groups_split_on_categories_and_drop_the_paper_rule"]
    assert len(sharing) == 4 and len(set.union(*(where[test] for test in sharing))) == 1, out.stdout[-3000:]
