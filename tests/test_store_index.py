"""The store's index keeps every cell's summary whole, whatever the other cells of its block hold."""
from workflows.blocks import BlockWriter
from workflows.engine import simulate
from workflows.store import Store


def test_cells_of_one_block_keep_summaries_the_first_cell_lacks(tmp_path):
    """Two cells in one block: in the first no run escapes (its KM median is undefined, so its
    summary has none), in the second every run does. The second's median reaches the index (the
    trackers read summaries there); the index's table took its columns from the first cell alone,
    and the trackers showed cells without their medians."""
    store = Store(str(tmp_path), "s")
    base = {"problem": {"name": "quadratic_saddle", "dim": 2, "quartic": 1.0}, "seeds": 8, "budget": 400,
            "sosp_epsilon": 0.05}
    cells = {"slow": dict(base, optimizer={"name": "sgd", "lr": 1e-6}),
             "fast": dict(base, optimizer={"name": "sgd", "lr": 0.05})}
    with BlockWriter(store, "t-", max_cells=10) as writer:
        for key, cell in cells.items():
            result = simulate(cell)
            writer.add(key, cell["seeds"], result.columns, result.trace, result.seconds)
    assert writer.blocks == 1
    index = store.index()
    assert "escape_step_km_median" not in index.entry("slow")["summary"]
    fast = index.entry("fast")["summary"]
    assert fast["escape_step_km_median"] > 0 and fast["escaped_fraction"] == 1.0
