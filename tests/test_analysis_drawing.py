"""analysis/drawing.py: figure jobs drawn in forked children give what drawing them one after the
other gives, in the jobs' order; a job that raises or whose process dies is a skipped figure with
its reason, never a crash or a hang of the report."""
import os
import sys

import pytest
from matplotlib.figure import Figure

from analysis import drawing
from analysis.figures import Saver


def line_job(n):
    def draw(path):
        fig = Figure(figsize=(3, 2))
        fig.subplots().plot(range(n), [i * i for i in range(n)])
        return Saver(80, ("png",))(fig, path, f"{n} points"), ""
    return draw


def jobs():
    def fails(path):
        raise ValueError("no data")

    def dies(path):
        os._exit(3)

    return [("a", line_job(3)), ("fails", fails), ("b", line_job(5)), ("none", lambda p: (None, "nothing to draw")),
            ("dies", dies), ("c", line_job(7))]


@pytest.mark.skipif(sys.platform != "linux", reason="figures are drawn in forked children on Linux only")
def test_forked_and_sequential_drawing_agree(tmp_path, monkeypatch):
    monkeypatch.setattr(drawing, "_cores", lambda: 2)
    with drawing.Drawing(jobs(), tmp_path / "forked", first=("c",)) as forked:
        assert forked.forked and len(forked.running) == 2          # started at once, the 'first' among them
        assert any(index == 5 for index, _ in forked.running.values())
        drawn, skipped = forked.result()
    assert [path.name for path, _ in drawn] == ["a.png", "b.png", "c.png"]
    assert [caption for _, caption in drawn] == ["3 points", "5 points", "7 points"]
    assert all((tmp_path / "forked" / name).stat().st_size > 0 for name in ("a.png", "b.png", "c.png"))
    assert dict(skipped) == {"fails.png": "failed: ValueError: no data", "none.png": "nothing to draw",
                             "dies.png": "failed: the process drawing it died (exit code 3)"}

    monkeypatch.setattr(drawing, "_cores", lambda: 1)
    plain = [job for job in jobs() if job[0] != "dies"]               # in this process it would end the test
    with drawing.Drawing(plain, tmp_path / "plain") as sequential:
        assert not sequential.forked
        drawn_here, skipped_here = sequential.result()
    assert [(p.name, c) for p, c in drawn_here] == [(p.name, c) for p, c in drawn]
    assert dict(skipped_here) == {k: v for k, v in skipped if k != "dies.png"}


def test_leaving_early_terminates_the_children(tmp_path, monkeypatch):
    monkeypatch.setattr(drawing, "_cores", lambda: 2)

    def sleeps(path):
        import time
        time.sleep(60)

    with pytest.raises(KeyboardInterrupt):
        with drawing.Drawing([("s1", sleeps), ("s2", sleeps)], tmp_path) as slow:
            children = [child for _, child in slow.running.values()]
            raise KeyboardInterrupt
    assert children and not any(child.is_alive() for child in children)
