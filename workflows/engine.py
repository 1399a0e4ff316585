"""The engine: one cell, all its seeds as one batch, one row per seed. No Ray, no YAML.

Every run starts at the saddle (plus an optional offset) and takes stochastic-gradient steps
until it escapes (the first step with escape_distance ≥ escape_radius), diverges (non-finite,
or beyond divergence_radius) or reaches the budget. A run that has not escaped by then is
right-censored: escaped = False and escape_step = the last step observed (the budget, or the
step at which it diverged), never a made-up escape time.

Speed: the noise of a block of steps is drawn in one generator call, and finished runs leave
the batch at block boundaries, so late, slow runs do not drag the finished ones along.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import time
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from optimizers import make_optimizer, select_runs
from problems import make_problem

from .cell import cell_id, flatten_cell, normalize_cell

NOISE_BLOCK_ELEMENTS = 1 << 18   # per block: big enough to amortise the call, small enough for cache
MAX_BLOCK_STEPS = 64
TAIL_QUANTILES = (0.5, 0.9)


class Result(NamedTuple):
    rows: pd.DataFrame               # one row per seed
    trace: pd.DataFrame | None       # long format: seed, step, loss (when trace_points > 0)
    seconds: float                   # engine wall time for the cell


@functools.cache
def keep_freed_memory() -> bool:
    """Every step allocates a few temporaries of R·d floats. glibc serves large ones with mmap
    and returns them to the OS when freed, so each step page-faults its temporaries in afresh:
    at R·d = 1.6e6 that was a third of the engine's time (9.5 against 6.3 ns per coordinate-step
    for adam, benchmarks/run.py). Keeping freed memory in the heap (no mmap, no trimming) lets
    the next step reuse it. Linux/glibc only; a no-op elsewhere."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    try:
        mallopt = ctypes.CDLL(libc_name).mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_MMAP_THRESHOLD, 1 << 30) and mallopt(M_TRIM_THRESHOLD, 1 << 30))


def simulate_cell(cell: dict) -> pd.DataFrame:
    """One row per seed; see `simulate` for the trace and the timing."""
    return simulate(cell).rows


def trace_steps(budget: int, points: int) -> np.ndarray:
    return np.unique(np.round(np.logspace(0, np.log10(budget), points)).astype(np.int64))


def simulate(cell: dict) -> Result:
    start_time = time.perf_counter()
    keep_freed_memory()
    cell = normalize_cell(cell)
    dtype = getattr(torch, cell["dtype"])
    runs, budget, seed = cell["seeds"], cell["budget"], cell["seed"]
    # Two streams from one seed: the problem's own randomness, and the per-step noise.
    problem = make_problem(cell["problem"], seed=2 * seed, dtype=dtype)
    optimizer = make_optimizer(cell["optimizer"], problem)
    generator = torch.Generator().manual_seed(2 * seed + 1)
    radius, divergence_radius = problem.escape_radius, cell["divergence_radius"]

    x = problem.saddle.expand(runs, problem.dim).clone()
    if cell["start_offset"]:
        direction = torch.randn(x.shape, generator=generator, dtype=dtype)
        x += cell["start_offset"] * direction / torch.linalg.vector_norm(direction, dim=-1, keepdim=True)
    state = optimizer.init(x)

    # Per-run records, indexed by the run's original index.
    escaped = torch.zeros(runs, dtype=torch.bool)
    diverged = torch.zeros(runs, dtype=torch.bool)
    escape_step = torch.full((runs,), budget, dtype=torch.int64)
    final_step = torch.full((runs,), budget, dtype=torch.int64)
    loss_at_escape = torch.full((runs,), float("nan"), dtype=torch.float64)
    final_x = x.clone()
    steps_traced = trace_steps(budget, cell["trace_points"]) if cell["trace_points"] else np.zeros(0, int)
    trace_index = {int(s): i for i, s in enumerate(steps_traced)}
    trace = torch.full((len(steps_traced), runs), float("nan"), dtype=torch.float64)
    tail_start = budget - cell["tail_steps"] + 1
    tail = torch.full((cell["tail_steps"], runs), float("nan"), dtype=torch.float64)

    active = torch.arange(runs)            # original index of each row of the batch
    done = torch.zeros(runs, dtype=torch.bool)   # per batch row: escaped (and not kept) or diverged
    keep_escaped = cell["run_to_budget"]
    t = 0
    while t < budget and len(active):
        block = max(1, min(MAX_BLOCK_STEPS, budget - t, NOISE_BLOCK_ELEMENTS // (len(active) * problem.dim)))
        drawn = problem.draw(generator, block, len(active))
        for i in range(block):
            t += 1
            grad = problem.stochastic_grad(x, drawn[i])
            step, state = optimizer.update(grad, state, x)
            x.add_(step)
            distance = problem.escape_distance(x)
            bad = ~(distance <= divergence_radius)          # NaN compares False: caught here
            hit = (distance >= radius) & ~bad
            newly_escaped = hit & ~escaped[active]
            if newly_escaped.any():
                who = active[newly_escaped]
                escaped[who], escape_step[who] = True, t
                loss_at_escape[who] = problem.loss(x[newly_escaped]).double()
                if not keep_escaped:
                    done |= newly_escaped
                    final_step[who], final_x[who] = t, x[newly_escaped]
            newly_diverged = bad & ~diverged[active]
            if newly_diverged.any():
                who = active[newly_diverged]
                diverged[who], final_step[who], final_x[who] = True, t, x[newly_diverged]
                escape_step[who[~escaped[who]]] = t         # censored where it blew up
                done |= newly_diverged
            if t in trace_index:
                trace[trace_index[t], active] = problem.loss(x).double()
            if t >= tail_start:
                tail[t - tail_start, active] = problem.loss(x).double()
        if cell["inject_fault"] == "raise":
            raise RuntimeError(f"injected fault in cell {cell_id(cell)} at step {t}")
        if done.any():                                       # finished runs leave the batch
            keep = ~done
            x, active, state = x[keep], active[keep], select_runs(state, keep)
            done = done[keep]
    final_x[active] = x

    rows = _rows(cell, problem, escaped, escape_step, diverged, final_step, loss_at_escape, final_x, tail)
    trace_frame = None
    if len(steps_traced):
        trace_frame = pd.DataFrame({
            "seed": np.tile(np.arange(runs), len(steps_traced)),
            "step": np.repeat(steps_traced, runs),
            "loss": trace.flatten().numpy(),
        }).dropna(subset=["loss"])
        trace_frame.insert(0, "cell_id", rows["cell_id"].iloc[0])
    return Result(rows, trace_frame, time.perf_counter() - start_time)


def _rows(cell, problem, escaped, escape_step, diverged, final_step, loss_at_escape, final_x, tail):
    runs = len(escaped)
    final_loss = problem.loss(final_x)
    final_grad_norm = torch.linalg.vector_norm(problem.grad(final_x), dim=-1)
    columns = {
        "cell_id": cell_id(cell),
        **flatten_cell(cell),
        **problem.derived(),
        "seed": np.arange(runs),
        "escaped": escaped.numpy(),
        "escape_step": escape_step.numpy(),
        "diverged": diverged.numpy(),
        "final_step": final_step.numpy(),
        "loss_at_escape": loss_at_escape.numpy(),
        "final_loss": final_loss.double().numpy(),
        "final_grad_norm": final_grad_norm.double().numpy(),
        "final_distance": problem.escape_distance(final_x).double().numpy(),
    }
    if cell["tail_steps"]:
        columns["tail_loss_mean"] = tail.nanmean(0).numpy()
        for q in TAIL_QUANTILES:
            columns[f"tail_loss_q{int(q * 100)}"] = tail.nanquantile(q, dim=0).numpy()
    return pd.DataFrame(columns)
