"""The torch.optim adapter's speed against the built-in adam, in seed-steps per second.

    .venv/bin/python benchmarks/adapter_speed.py [--quick] [--repeats N]

`measure()` returns the table benchmarks/run.py reports: for each optimizer, a whole
simulate() call (set-up and row building included; the adapter's layout probe, a one-off cost per
cell, is measured on its own) on the same cell,
R = 1024 seeds of dimension d = 10, one thread (as one Ray Tune trial runs), on a nearly flat
saddle that no seed leaves within the budget (so every seed runs every step: the rate is the
stepping's, not the early stopping's). Each optimizer is measured `repeats` times, alternating
between optimizers; the table gives the median and the range.

A batched class (one [R, d] parameter) pays torch.optim's per-step Python overhead once per step;
a per-seed class pays it once per seed and step, so it is slower by about the batch size.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workflows import simulate  # noqa: E402

RUNS, DIM = 1024, 10
MAX_BUDGET = 20_000
# (label, optimizer spec): the built-in reference, then adapter classes of each layout.
OPTIMIZERS = [
    ("adam (built-in)", {"name": "adam", "lr": 1e-3}),
    ("torch.optim.Adam (fused)", {"name": "torch.optim.Adam", "lr": 1e-3, "fused": True}),
    ("torch.optim.Adam", {"name": "torch.optim.Adam", "lr": 1e-3}),
    ("pytorch_optimizer.Lion", {"name": "pytorch_optimizer.Lion", "lr": 1e-4}),
    ("pytorch_optimizer.Lamb", {"name": "pytorch_optimizer.Lamb", "lr": 1e-3}),
    ("pytorch_optimizer.Prodigy", {"name": "pytorch_optimizer.Prodigy", "lr": 1.0}),
]
REFERENCE = OPTIMIZERS[0][0]


def flat_saddle(d: int) -> dict:
    # As benchmarks/run.py: γ = 1e-6 and a far escape radius, so no seed escapes.
    return {"name": "quadratic_saddle", "dim": d, "curvature": 1e-6, "escape_radius": 1e3}


def layout_of(optimizer: dict, runs: int, d: int) -> str:
    """The adapter's layout for this cell (built-ins: 'built-in')."""
    from optimizers.torch_adapter import layout_of as adapter_layout
    from workflows.registry import get_optimizer

    component = get_optimizer(optimizer["name"])
    if "cls" not in component.extra:
        return "built-in"
    return adapter_layout(component, {k: v for k, v in optimizer.items() if k != "name"}, runs, d)


def rate(optimizer: dict, runs: int, d: int, target_seconds: float) -> tuple[float, bool]:
    """Seed-steps per second of one simulate() call lasting at least target_seconds (or running
    MAX_BUDGET steps), and whether every seed ran every step (nothing escaped or diverged). The
    budget grows 4x at a time, so that fixed costs (validation, rows) are amortised."""
    cell = {"problem": flat_saddle(d), "optimizer": optimizer, "seeds": runs, "cnc_samples": 0}
    budget = 4
    while True:
        result = simulate({**cell, "budget": budget})
        if result.seconds >= target_seconds or budget >= MAX_BUDGET:
            break
        budget = min(MAX_BUDGET, budget * 4)
    full = not (result.rows["escaped"].any() or result.rows["diverged"].any())
    return runs * budget / result.seconds, full


def probe_seconds(optimizer: dict, runs: int, d: int) -> float:
    """The adapter's one-off layout probe for this cell (cached per process afterwards)."""
    from optimizers import torch_adapter
    from workflows.registry import get_optimizer

    component = get_optimizer(optimizer["name"])
    if "cls" not in component.extra:
        return 0.0
    params = {k: v for k, v in optimizer.items() if k != "name"}
    torch_adapter.layout_of(component, params, runs, d)        # the class's checks, once
    torch_adapter._layouts.clear()                             # then the probe alone, uncached
    start = time.perf_counter()
    torch_adapter.layout_of(component, params, runs, d)
    return time.perf_counter() - start


def measure(quick: bool = False, repeats: int = 5, runs: int = RUNS, d: int = DIM) -> list[dict]:
    torch.set_num_threads(1)
    target = 0.5 if quick else 2.0
    rates = {label: [] for label, _ in OPTIMIZERS}
    full = {label: True for label, _ in OPTIMIZERS}
    for _, optimizer in OPTIMIZERS:                        # warm-up: imports, numba's compilation, the probe
        simulate({"problem": flat_saddle(d), "optimizer": optimizer, "seeds": runs, "budget": 4, "cnc_samples": 0})
    for _ in range(repeats):                               # alternate: every optimizer once per round
        for label, optimizer in OPTIMIZERS:
            value, ran_all = rate(optimizer, runs, d, target)
            rates[label].append(value)
            full[label] &= ran_all
    reference = statistics.median(rates[REFERENCE])
    rows = []
    for label, optimizer in OPTIMIZERS:
        values = rates[label]
        layout = layout_of(optimizer, runs, d)
        rows.append({"optimizer": label, "layout": layout,
                     "mode": layout if layout == "built-in" else ("batched" if layout == "batched" else "per_seed"),
                     "seeds": runs, "dim": d, "seed_steps_per_s": statistics.median(values),
                     "min": min(values), "max": max(values), "repeats": len(values),
                     "vs_builtin_adam": statistics.median(values) / reference, "every_seed_every_step": full[label],
                     "probe_seconds": probe_seconds(optimizer, runs, d)})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter calls (0.5 s instead of 2 s)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = measure(args.quick, args.repeats)
    print(f"| optimizer | mode (layout) | seed-steps/s, median [min, max] of {args.repeats} | vs built-in adam | "
          "layout probe (once per cell) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['optimizer']} | {r['mode']} ({r['layout']}) | {r['seed_steps_per_s']:.3g} "
              f"[{r['min']:.3g}, {r['max']:.3g}] | {r['vs_builtin_adam']:.3g}x"
              f"{'' if r['every_seed_every_step'] else ' (some seeds left early!)'} | {r['probe_seconds']:.2f} s |")


if __name__ == "__main__":
    main()
