"""Every performance figure of saddlescape in one go: prints tables, writes benchmarks/results.json.

    make bench          (or: .venv/bin/python benchmarks/run.py [--quick])

1. the engine against a hand-written per-seed loop with torch.optim, measured alternately;
2. the engine against the JAX reference (benchmarks/jax_reference.py: jit + scan, jax.random),
   both pinned to one core and measured alternately; skipped, with a line saying so, without
   the `bench` extra (pip install -e '.[bench]');
3. the engine against the floor: the memory traffic of the optimizer state plus the normal
   samples, at the bandwidth and generator rate measured in the same run, on small cells
   (R·d ≤ 10⁴) and large batches;
3b. optimizer classes named by class path (torch.optim.Adam, pytorch_optimizer.Lion, Lamb,
   Prodigy: batched or stepped per seed, benchmarks/adapter_speed.py) against the built-in adam;
3c. the built-in matrix optimizers (muon, matrix_whitening) against the built-in adam on matrix
   problems, per coordinate-step of a whole cell (benchmarks/matrix_speed.py);
4. the sweep overhead of Ray Tune on the `quick` sweep, with 1 and 2 workers;
5. `analyze` on 10⁶ and 10⁷ rows (--quick: 10⁶): time and peak memory (issue 25: 10⁷ within 2 GB);
6. the scale-out of the study's sweeps to 1, 8 and 64 workers, from the measured costs;
7. large grids (benchmarks/grid_scale.py, issue 25): the issue's grid of cheap cells at 10³, 10⁴
   and 10⁵ cells (--quick: 10³ and 10⁴), each run, rerun with nothing to compute and dry-run in a
   fresh driver process; the code before the block store (git ref GRID_BEFORE) at 10³ and 10⁴,
   alternately with this checkout, `uptime`'s load recorded with each figure. 30-60 minutes.

Engine and floor run on one thread, as one Ray Tune trial does. `--only jax,floor` runs a subset
(scale-out needs the sweep section); the file written holds what this run measured.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import adapter_speed, grid_scale, jax_reference, matrix_speed  # noqa: E402
from benchmarks.analysis_million_rows import measure as measure_analysis  # noqa: E402
from workflows.registry import make_problem  # noqa: E402
from workflows import normalize_cell, simulate  # noqa: E402
from workflows.engine import keep_freed_memory  # noqa: E402
from workflows.spec import load_sweeps  # noqa: E402

OPTIMIZERS = {"sgd": (torch.optim.SGD, {"lr": 1e-2}), "rmsprop": (torch.optim.RMSprop, {"lr": 1e-3}),
              "adam": (torch.optim.Adam, {"lr": 1e-3})}
STATE_BYTES = {"sgd": 8, "rmsprop": 16, "adam": 24}     # read + write of x (and v, m), float32
STUDY_SWEEPS = ("staib2019", "stepsize", "anisotropy", "noise_precond", "beta2", "alignment", "heavy_tails",
                "dimension", "mf_batch", "pca_gap", "tensor_precond", "phase_batch", "deep_linear_depth",
                "mlp_offset", "logistic_beta")
SCALING_SWEEP = "noise_precond"     # a sweep with minutes of work, for 1 against 2 workers
# The JAX comparison: issue 14's small cells (3000 steps, as its table) and two at R·d ≥ 10⁶.
JAX_SMALL = ((64, 10), (256, 4), (1024, 2), (1024, 10))
JAX_LARGE = ((16384, 100), (65536, 16))
SECTIONS = ("loop", "jax", "floor", "adapter", "matrix", "sweep", "analysis", "scale", "grids")
GRID_BEFORE = "b23bedb"      # the last commit before the block store (issue 25): a part file per cell


def saddle(d: int) -> dict:
    # Nearly flat (γ = 1e-6) with a far escape radius: no seed escapes within the measured
    # budgets, not even an adaptive method in its sign regime (η per step), so every seed runs
    # every step and the rate is the engine's, not the early stopping's.
    return {"name": "quadratic_saddle", "dim": d, "curvature": 1e-6, "escape_radius": 1e3}


def engine_rate(optimizer: str, runs: int, d: int, target_seconds: float) -> float:
    """Seed-steps per second of a whole simulate() call (set-up and row building included),
    with a budget sized from a short probe so that the call lasts about target_seconds."""
    cell = {"problem": saddle(d), "optimizer": {"name": optimizer}, "seeds": runs}
    probe = simulate({**cell, "budget": 50})
    budget = int(min(20_000, max(50, 50 * target_seconds / probe.seconds)))
    return runs * budget / simulate({**cell, "budget": budget}).seconds


def loop_rate(optimizer: str, d: int, steps: int) -> float:
    """The hand-written reference: one torch.optim optimizer per seed, a plain Python loop."""
    problem = make_problem(saddle(d), seed=0)
    generator = torch.Generator().manual_seed(1)
    cls, kwargs = OPTIMIZERS[optimizer]
    seeds = 2
    start = time.perf_counter()
    for _ in range(seeds):
        p = torch.nn.Parameter(torch.zeros(d))
        opt = cls([p], **kwargs)
        for _ in range(steps):
            drawn = problem.draw(generator, 1, 1)[0]
            p.grad = problem.stochastic_grad(p.detach()[None], drawn)[0]
            opt.step()
    return seeds * steps / (time.perf_counter() - start)


def bench_engine_vs_loop(quick: bool) -> list[dict]:
    rows = []
    runs_list = (1, 64, 1024) if quick else (1, 64, 1024, 16384)
    for optimizer in OPTIMIZERS:
        for d in (2, 10, 100):
            loops, steps = [], 150 if quick else 400
            for runs in runs_list:
                engines = []
                for _ in range(2):                   # alternate: loop, engine, loop, engine
                    loops.append(loop_rate(optimizer, d, steps))
                    engines.append(engine_rate(optimizer, runs, d, 0.3 if quick else 1.0))
                loop = statistics.median(loops)
                engine = max(engines)
                rows.append({"optimizer": optimizer, "dim": d, "seeds": runs, "engine_seed_steps_per_s": engine,
                             "loop_seed_steps_per_s": loop, "speedup": engine / loop})
    return rows


def bench_jax(quick: bool) -> dict | None:
    """Seed-steps per second of the engine (a whole simulate() call, as engine_rate) and of the JAX
    reference (the compiled call; compilation timed apart) on the same flat cell, both pinned to
    the same core and run alternately: engine, JAX block noise, JAX step noise, engine, ... The
    JAX figure is the faster noise placement's median. None when jax is not installed."""
    if not jax_reference.available():
        print("skipped: jax is not installed; for the JAX column: pip install -e '.[bench]' (or make bench)")
        return None
    repeats, large_budget = (3, 30) if quick else (5, 100)
    keep_freed_memory()                       # as a Ray trial does before its first cell
    rows, affinity = [], os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    with jax_reference.Peer() as peer:
        if peer.info["core"] is not None:     # the engine on the JAX worker's core, one at a time
            os.sched_setaffinity(0, {peer.info["core"]})
        try:
            for optimizer in OPTIMIZERS:
                for (runs, d), budget in [(size, 3000) for size in JAX_SMALL] + [(s, large_budget) for s in JAX_LARGE]:
                    rows.append(_jax_row(peer, optimizer, runs, d, budget, repeats, quick))
                    print(f"  {optimizer} {runs} x {d}: {rows[-1]['ratio']:.2f}x", flush=True)
        finally:
            if affinity is not None and peer.info["core"] is not None:
                os.sched_setaffinity(0, affinity)
    return {"jax": peer.info["jax"], "core": peer.info["core"], "xla_flags": peer.info["xla_flags"],
            "problem": {k: v for k, v in saddle(0).items() if k != "dim"}, "repeats": repeats, "rows": rows}


def _jax_row(peer, optimizer: str, runs: int, d: int, budget: int, repeats: int, quick: bool) -> dict:
    cell = normalize_cell({"problem": saddle(d), "optimizer": {"name": optimizer}, "seeds": runs, "budget": budget})
    # What the JAX reference reads: the same problem and hyperparameters, saddlescape's defaults.
    peer_cell = {key: cell[key] for key in ("problem", "optimizer", "seeds", "budget")}
    # --quick times only the placement that won most cells of the full runs: noise per block.
    placements = ["block"] if quick else ["block", "step"]
    compiled = {noise: peer.compile(peer_cell, noise) for noise in placements}
    simulate({**cell, "budget": 3})                                  # warm the allocator
    engine, jax_rates = [], {noise: [] for noise in placements}
    for repeat in range(repeats):
        result = simulate(cell)
        if result.rows.escaped.any():
            raise RuntimeError(f"{optimizer} {runs} x {d}: a seed escaped the flat cell, so not every seed "
                               "ran every step")
        engine.append(runs * budget / result.seconds)
        for noise in placements:
            answer = peer.run(peer_cell, noise, seed=repeat + 1)
            if answer["escaped_share"]:
                raise RuntimeError(f"{optimizer} {runs} x {d}: a JAX seed escaped the flat cell")
            jax_rates[noise].append(answer["seed_steps_per_s"])
    noise = max(placements, key=lambda n: statistics.median(jax_rates[n]))
    best, ours = statistics.median(jax_rates[noise]), statistics.median(engine)
    return {"optimizer": optimizer, "seeds": runs, "dim": d, "steps": budget,
            "saddlescape": ours, "saddlescape_spread": _spread(engine),
            "jax": best, "jax_spread": _spread(jax_rates[noise]),
            "ratio": ours / best, "jax_noise": noise, "jax_compile_s": compiled[noise]["compile_seconds"],
            "jax_block_steps": compiled[noise]["block_steps"], "engine_rates": engine, "jax_rates": jax_rates,
            "jax_compile": compiled}


def _spread(values: list[float]) -> str:
    """± half the range over the median, in percent: how much the repeats disagreed."""
    return f"±{50 * (max(values) - min(values)) / statistics.median(values):.0f}%"


def best_time(fn, reps: int = 5) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_floor(quick: bool) -> dict:
    n = 1 << 24
    a, b = torch.randn(n), torch.empty(n)
    bandwidth = 2 * 4 * n / best_time(lambda: b.copy_(a))            # bytes read + written per second
    generator = torch.Generator().manual_seed(0)
    normals = n / best_time(lambda: torch.randn(n, generator=generator, out=b))
    # Issue 14's small cells (R·d ≤ 10⁴, 3000 steps: set-up and per-block costs included, as in a
    # sweep's cell) and large batches (R·d ≥ 10⁶).
    shapes = [(size, 3000) for size in JAX_SMALL] + [(size, 60 if quick else 200) for size in
                                                    [(16384, 100), (65536, 16)] + ([] if quick else [(1024, 1000)])]
    rows = []
    for optimizer in OPTIMIZERS:
        floor = STATE_BYTES[optimizer] / bandwidth + 1 / normals       # seconds per coordinate-step
        for (runs, d), budget in shapes:
            cell = {"problem": saddle(d), "optimizer": {"name": optimizer}, "seeds": runs, "budget": budget}
            simulate({**cell, "budget": 3})                                # warm the allocator
            per = min(simulate(cell).seconds for _ in range(3)) / (runs * d * cell["budget"])
            rows.append({"optimizer": optimizer, "seeds": runs, "dim": d, "ns_per_coordinate_step": per * 1e9,
                         "floor_ns": floor * 1e9, "gap": per / floor})
    return {"bandwidth_GB_per_s": bandwidth / 1e9, "normals_M_per_s": normals / 1e6, "rows": rows}


def run_sweep(sweep: str, workers: int, storage: Path) -> dict:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "workflows", "run", "sweeps.yaml", "--sweep", sweep,
                    "--storage", str(storage), "--workers", str(workers), "--no-analyze"],
                   cwd=ROOT, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    meta = json.loads((storage / sweep / "meta.json").read_text())
    return {**meta["run"], "wall_seconds": wall, "cells": meta["cells"]["total"]}


def bench_sweep_overhead(storage_root: Path, sweeps: tuple[str, ...]) -> dict:
    """Each sweep on 1 and on 2 workers: wall time, Ray's start, Tune's time, the summed engine
    time of the cells, and what consolidating the results costs per cell."""
    out = {}
    for sweep in sweeps:
        runs = {w: run_sweep(sweep, w, storage_root / f"{sweep}-w{w}") for w in (1, 2)}
        for w, run in runs.items():
            run["tune_overhead_share"] = 1 - run["engine_seconds"] / (run["tune_seconds"] * w)
        out[sweep] = {"workers": runs, "speedup_2_over_1_wall": runs[1]["wall_seconds"] / runs[2]["wall_seconds"],
                      "speedup_2_over_1_tune": runs[1]["tune_seconds"] / runs[2]["tune_seconds"]}
    from workflows.cell import cell_id
    from workflows.store import Store
    quick = load_sweeps(ROOT / "sweeps.yaml", only="quick")["quick"]
    store = Store(str(storage_root / "quick-w1"), "quick")
    start = time.perf_counter()
    store.consolidate({cell_id(c): c for c in quick.cells}, {"sweep": "quick"})
    out["consolidate_seconds_per_cell"] = (time.perf_counter() - start) / len(quick.cells)
    # Fixed cost of a Tune run: its workers' start (imports of Ray Tune, torch, pandas), from
    # the 1-worker quick run: Tune's time not spent in the engine.
    one = out["quick"]["workers"][1]
    out["tune_fixed_seconds"] = one["tune_seconds"] - one["engine_seconds"]
    return out


def bench_scale_out(overhead: dict) -> list[dict]:
    """The study sweeps on 1, 8 and 64 workers: each cell's engine time as measured by the study
    (results/study/<sweep>/cells.parquet, this machine, one core per cell), balanced longest
    first as pack_cells does, plus Ray's start, Tune's fixed cost and the consolidation."""
    import pandas as pd

    rows = []
    for name in STUDY_SWEEPS:
        path = ROOT / "results" / "study" / name / "cells.parquet"
        if not path.exists():
            continue
        costs = sorted(pd.read_parquet(path, columns=["engine_seconds"]).engine_seconds.dropna(), reverse=True)
        for workers in (1, 8, 64):
            loads = [0.0] * workers
            for cost in costs:
                loads[loads.index(min(loads))] += cost
            wall = (overhead["quick"]["workers"][1]["ray_start_seconds"] + overhead["tune_fixed_seconds"]
                    + max(loads) + len(costs) * overhead["consolidate_seconds_per_cell"])
            rows.append({"sweep": name, "cells": len(costs), "workers": workers, "estimated_wall_s": wall,
                         "engine_s_total": sum(costs), "longest_cell_s": costs[0],
                         "limit": _limit(workers, len(costs), max(loads), costs[0])})
    return rows


def _limit(workers, n_cells, busiest, longest) -> str:
    if n_cells < workers:
        return f"cells: only {n_cells} cells for {workers} workers"
    if busiest <= 1.05 * longest:
        return "the longest cell (one cell runs on one worker)"
    return "compute (cells balance over the workers)"


def table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def print_jax(jax: dict):
    print(f"jax {jax['jax']} on core {jax['core']}, XLA_FLAGS={jax['xla_flags']!r}; cell: quadratic_saddle, "
          f"curvature 1e-6, escape_radius 1e3 (no seed escapes: every seed runs every step); medians of "
          f"{jax['repeats']} alternate runs, spread ± half the range; ratio = saddlescape / JAX; compile time apart")
    print(table(jax["rows"], ["optimizer", "seeds", "dim", "steps", "saddlescape", "saddlescape_spread",
                              "jax", "jax_spread", "ratio", "jax_noise", "jax_compile_s"]))


def print_sweep(sweep: dict, sweeps: tuple[str, ...]):
    rows = [{"sweep": s, "workers": w, **{k: sweep[s]["workers"][w][k] for k in
                                          ("cells", "wall_seconds", "ray_start_seconds", "tune_seconds",
                                           "engine_seconds", "tune_overhead_share")}}
            for s in sweeps for w in (1, 2)]
    print(table(rows, list(rows[0])))
    for s in sweeps:
        print(f"{s}: 2 workers over 1: {sweep[s]['speedup_2_over_1_wall']:.2f}x wall, "
              f"{sweep[s]['speedup_2_over_1_tune']:.2f}x in Tune")
    print(f"Tune's fixed cost (worker start): {sweep['tune_fixed_seconds']:.1f} s; "
          f"consolidation {sweep['consolidate_seconds_per_cell'] * 1e3:.1f} ms per cell")


class Clock:
    """Wall and CPU seconds (this process and its waited-for children: not Ray's daemons) per
    section, so that a run on a loaded machine still tells what each section costs."""

    def __init__(self):
        self.seconds = {}

    @staticmethod
    def _now():
        cpu = sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                     resource.getrusage(resource.RUSAGE_CHILDREN)))
        return time.perf_counter(), cpu

    @contextlib.contextmanager
    def section(self, name: str):
        wall, cpu = self._now()
        yield
        wall_end, cpu_end = self._now()
        self.seconds[name] = {"wall": wall_end - wall, "cpu": cpu_end - cpu}
        print(f"({name}: {wall_end - wall:.0f} s wall, {cpu_end - cpu:.0f} s CPU)", flush=True)


def sections(value: str) -> tuple[str, ...]:
    chosen = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [v for v in chosen if v not in SECTIONS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"--only={value!r}: a comma-separated subset of {', '.join(SECTIONS)}")
    return chosen


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter measurements")
    parser.add_argument("--only", type=sections, default=SECTIONS, metavar="SECTIONS",
                        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results.json"))
    args = parser.parse_args()
    only = args.only
    torch.set_num_threads(1)
    results = {"machine": {"cpus": torch.get_num_threads(), "platform": platform.platform(),
                           "processor": platform.processor(), "torch": torch.__version__,
                           "date": time.strftime("%Y-%m-%d")}}
    clock = Clock()
    if "loop" in only:
        with clock.section("loop"):
            print("1. engine against a per-seed torch.optim loop (seed-steps per second, one thread)")
            results["engine_vs_loop"] = bench_engine_vs_loop(args.quick)
            print(table(results["engine_vs_loop"], ["optimizer", "dim", "seeds", "engine_seed_steps_per_s",
                                                    "loop_seed_steps_per_s", "speedup"]))
    if "jax" in only:
        with clock.section("jax"):
            print("\n2. engine against the JAX reference (seed-steps per second, both on one core, alternately)")
            results["jax"] = bench_jax(args.quick)
            if results["jax"] is not None:
                print_jax(results["jax"])
    if "floor" in only:
        with clock.section("floor"):
            print("\n3. engine against the floor (state traffic + normal samples)")
            results["floor"] = bench_floor(args.quick)
            print(f"bandwidth {results['floor']['bandwidth_GB_per_s']:.1f} GB/s, "
                  f"normals {results['floor']['normals_M_per_s']:.0f} M/s")
            print(table(results["floor"]["rows"], ["optimizer", "seeds", "dim", "ns_per_coordinate_step",
                                                   "floor_ns", "gap"]))
    if "adapter" in only:
        with clock.section("adapter"):
            print("\n3b. optimizer classes by class path (the torch.optim adapter) against the built-in adam, "
                  f"R = {adapter_speed.RUNS}, d = {adapter_speed.DIM}, seed-steps per second")
            try:
                results["adapter"] = adapter_speed.measure(args.quick, repeats=3 if args.quick else 5)
            except ValueError as error:           # an ecosystem package missing: the `optimizers` extra
                print(f"skipped: {error}; pip install -e '.[optimizers]' (or make bench)")
                results["adapter"] = None
        if results.get("adapter"):
            print(table(results["adapter"], ["optimizer", "mode", "seed_steps_per_s", "min", "max",
                                             "vs_builtin_adam", "probe_seconds"]))
    if "matrix" in only:
        with clock.section("matrix"):
            print(f"\n3c. matrix optimizers against the built-in adam, R = {matrix_speed.RUNS}, whole cells, "
                  "ns per coordinate-step (best of 3)")
            results["matrix"] = matrix_speed.measure(args.quick)
            print(table(results["matrix"], ["problem", "optimizer", "ns_per_coordinate_step", "vs_builtin_adam"]))
    with tempfile.TemporaryDirectory() as tmp:
        if "sweep" in only:
            with clock.section("sweep"):
                sweeps = ("quick",) if args.quick else ("quick", SCALING_SWEEP)
                print(f"\n4. sweep overhead on the embedded local Ray: {', '.join(sweeps)}")
                results["sweep"] = bench_sweep_overhead(Path(tmp), sweeps)
                print_sweep(results["sweep"], sweeps)
        if "analysis" in only:
            with clock.section("analysis"):
                sizes = (10**6,) if args.quick else (10**6, 10**7)
                print(f"\n5. analyze on {' and '.join(f'{n:.0e}' for n in sizes)} rows (issue 25: 10^7 within 2 GB; "
                      "4000 cells x 250 seeds, 10^7: 40,000 cells); load = the 1-minute average before / after",
                      flush=True)
                results["analysis"] = []
                for size in sizes:
                    measured = measure_analysis(Path(tmp) / f"analysis_{size}", size)
                    results["analysis"].append(measured)
                    print(f"{size:.0e} rows: {measured['seconds']:.1f} s, peak {measured['peak_GiB']:.2f} GiB, load "
                          f"{measured['load'][0]:.1f} / {measured['load'][1]:.1f}", flush=True)
    if "scale" in only:
        print("\n6. scale-out of the study sweeps (from each cell's measured engine time)")
        if "sweep" not in results:
            print("skipped: it needs the sweep section's costs (--only ...,sweep,scale)")
        else:
            results["scale_out"] = bench_scale_out(results["sweep"])
            print(table(results["scale_out"], ["sweep", "cells", "workers", "estimated_wall_s", "longest_cell_s",
                                               "limit"]))
    if "grids" in only:
        with clock.section("grids"):
            sizes = [1000, 10_000] if args.quick else [1000, 10_000, 100_000]
            print(f"\n7. large grids: {', '.join(f'{n:,}' for n in sizes)} cells of the issue-25 grid (quadratic_saddle, "
                  f"dim 2, sgd, 16 seeds, budget 200), Ray backend, 2 workers, --no-analyze; before = {GRID_BEFORE} "
                  "at 10^3 and 10^4 cells, alternately; load = uptime's 1-minute average (2 cores)", flush=True)
            with tempfile.TemporaryDirectory(prefix="grid_scale_") as work:
                results["grids"] = grid_scale.measure_sizes(sizes, before=GRID_BEFORE, before_cells=[1000, 10_000],
                                                            workdir=Path(work), echo=lambda line: None)
            print(grid_scale.markdown(results["grids"]))
    results["section_seconds"] = clock.seconds
    Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
