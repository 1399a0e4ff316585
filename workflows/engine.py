"""The engine: one cell, all its seeds as one batch, one row per seed. No Ray, no YAML.

Every run starts at the saddle (plus an optional offset) and takes stochastic-gradient steps
until it escapes (the first step with escape_distance ≥ escape_radius), diverges (non-finite,
or beyond divergence_radius) or reaches the budget. A run that has not escaped by then is
right-censored: escaped = False and escape_step = the last step observed (the budget, or the
step at which it diverged), never a made-up escape time.

Second-order stationarity (`sosp_epsilon` > 0): every `sosp_every` steps (and at step 0) the
runs not there yet are tested for ‖∇f‖ ≤ ε and λ_min(∇²f) ≥ −√(ρε) (full gradient; λ_min
exact or by Lanczos, problems/curvature.py). A run then finishes only once it has both escaped
and reached an SOSP; one that never reaches it is censored like escape_step (sosp_step = the
last step observed). Off, none of this runs and the rows are as before.

Every row also carries the cell's cnc_constant, E[(vᵀg)²] over `cnc_samples` stochastic
gradients at the saddle (Daneshmand et al.'s correlated negative curvature), and, with
`tail_steps`, the tail's gap to the minimum f − f_min where the problem knows f_min. The side
computations draw from streams of their own: switching them on never changes the runs.

Speed: the noise of a block of steps is drawn in one generator call, and finished runs leave
the batch at block boundaries, so late, slow runs do not drag the finished ones along.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import time
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from optimizers import make_optimizer, select_runs
from problems import make_problem
from problems.curvature import min_hessian_eigenvalue

from .cell import cell_id, flatten_cell, normalize_cell

NOISE_BLOCK_ELEMENTS = 1 << 18   # per block: big enough to amortise the call, small enough for cache
MAX_BLOCK_STEPS = 64
TAIL_QUANTILES = (0.5, 0.9)
CNC_CHUNK = 512                  # stochastic gradients per call when estimating cnc_constant
# Seeds of the engine's side streams, far above any cell seed's 2·seed, 2·seed + 1.
CNC_STREAM, LANCZOS_STREAM = 1 << 40, 1 << 41


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
    # With SOSP tracking a run finishes when it has both escaped and reached an SOSP; without,
    # `sosp.reached` is all True and escaping alone finishes it, as before.
    sosp = SOSPTracker(cell, problem, runs)

    active = torch.arange(runs)            # original index of each row of the batch
    done = torch.zeros(runs, dtype=torch.bool)   # per batch row: finished (and not kept) or diverged
    # Per batch row: the escape radius, then the divergence radius once escaped, inf once done.
    threshold = torch.full((runs,), float(min(radius, divergence_radius)), dtype=dtype)
    keep_escaped = cell["run_to_budget"]
    if sosp.on:
        sosp.check(0, x, active, done)
    t = 0
    escape_is_distance, apply = problem.escape_is_distance, optimizer.apply
    while t < budget and len(active):
        block = max(1, min(MAX_BLOCK_STEPS, budget - t,
                           NOISE_BLOCK_ELEMENTS // (len(active) * problem.draw_size)))
        drawn = problem.draw(generator, block, len(active))
        for i in range(block):
            t += 1
            grad = problem.stochastic_grad(x, drawn[i])
            if apply is not None:                        # a fused kernel: x updated in place
                state = apply(grad, state, x)
            else:
                step, state = optimizer.update(grad, state, x)
                x.add_(step)
            distance = problem.escape_distance(x)
            # One cheap test per step: `threshold` is the escape radius until a run escapes and
            # the divergence radius after; NaN fails `<`, so a non-finite run raises it too. The
            # bookkeeping runs only on the steps where some run escapes or blows up.
            alarm = ~(distance < threshold)
            if not escape_is_distance:
                size = torch.linalg.vector_norm(x - problem.saddle, dim=-1)
                alarm |= ~(size <= divergence_radius)
            event = False
            if alarm.any():
                size = distance if escape_is_distance else size
                bad = ~(size <= divergence_radius) & ~done
                newly_escaped = (distance >= radius) & ~escaped[active] & ~bad
                if newly_escaped.any():
                    who = active[newly_escaped]
                    escaped[who], escape_step[who] = True, t
                    loss_at_escape[who] = problem.loss(x[newly_escaped]).double()
                    threshold[newly_escaped] = divergence_radius   # watched for divergence only
                    event = True
                # A run that finished earlier in this block keeps stepping until the block ends
                # (it leaves the batch then); what it does meanwhile is not recorded.
                if bad.any():
                    who = active[bad]
                    diverged[who], final_step[who], final_x[who] = True, t, x[bad]
                    escape_step[who[~escaped[who]]] = t     # censored where it blew up
                    done |= bad
                    threshold[bad] = math.inf
            if sosp.on and t % sosp.every == 0:
                event |= sosp.check(t, x, active, done)
            if event and not keep_escaped:
                finishing = escaped[active] & sosp.reached[active] & ~done
                if finishing.any():
                    who = active[finishing]
                    done |= finishing
                    final_step[who], final_x[who] = t, x[finishing]
            if t in trace_index:
                trace[trace_index[t], active[~done]] = problem.loss(x[~done]).double()
            if t >= tail_start:
                tail[t - tail_start, active[~done]] = problem.loss(x[~done]).double()
        if cell["inject_fault"] == "raise":
            raise RuntimeError(f"injected fault in cell {cell_id(cell)} at step {t}")
        if done.any():                                       # finished runs leave the batch
            keep = ~done
            x, active, state = x[keep], active[keep], select_runs(state, keep)
            done, threshold = done[keep], threshold[keep]
    final_x[active] = x

    rows = _rows(cell, problem, escaped, escape_step, diverged, final_step, loss_at_escape, final_x, tail)
    if sosp.on:
        sosp.add_columns(rows, final_step, final_x)
    trace_frame = None
    if len(steps_traced):
        trace_frame = pd.DataFrame({
            "seed": np.tile(np.arange(runs), len(steps_traced)),
            "step": np.repeat(steps_traced, runs),
            "loss": trace.flatten().numpy(),
        }).dropna(subset=["loss"])
        trace_frame.insert(0, "cell_id", rows["cell_id"].iloc[0])
    return Result(rows, trace_frame, time.perf_counter() - start_time)


class SOSPTracker:
    """The first step at which ‖∇f(x)‖ ≤ ε and λ_min(∇²f(x)) ≥ −√(ρε) (Jin et al. 2017), tested
    every `sosp_every` steps: the full gradient for the runs not there yet, then λ_min only for
    those whose gradient is small. Runs that never get there are censored like escape_step.
    Mind the scale: where √(ρε) ≥ the saddle's curvature the saddle itself passes (at step 0),
    as a degenerate saddle (curvature 0: deep_linear at depth 3) always does."""

    def __init__(self, cell, problem, runs):
        self.on = cell["sosp_epsilon"] > 0
        self.problem, self.every, self.method = problem, cell["sosp_every"], cell["sosp_method"]
        self.epsilon = cell["sosp_epsilon"]
        self.curvature_floor = -math.sqrt(cell["sosp_rho"] * cell["sosp_epsilon"])
        self.reached = torch.full((runs,), not self.on, dtype=torch.bool)
        self.step = torch.full((runs,), -1, dtype=torch.int64)
        # Lanczos start vectors: their own stream, so that SOSP tracking never changes the runs.
        self.generator = torch.Generator().manual_seed(LANCZOS_STREAM + cell["seed"])

    def check(self, t, x, active, skip) -> bool:
        """Test the batch rows not skipped; True if any reached the SOSP now."""
        candidates = ~self.reached[active] & ~skip
        if not candidates.any():
            return False
        grad_norm = torch.linalg.vector_norm(self.problem.grad(x[candidates]), dim=-1)
        small = torch.zeros_like(candidates)
        small[candidates] = grad_norm <= self.epsilon
        if not small.any():
            return False
        min_eig = min_hessian_eigenvalue(self.problem, x[small], self.method, self.generator)
        reached = torch.zeros_like(candidates)
        reached[small] = min_eig >= self.curvature_floor
        who = active[reached]
        self.reached[who], self.step[who] = True, t
        return bool(reached.any())

    def add_columns(self, rows, final_step, final_x):
        rows["sosp_reached"] = self.reached.numpy()
        rows["sosp_step"] = torch.where(self.reached, self.step, final_step).numpy()
        rows["final_min_eig"] = min_hessian_eigenvalue(self.problem, final_x, self.method,
                                                       self.generator).numpy()


def cnc_constant(problem, samples: int, seed: int) -> float:
    """E[(vᵀg)²] over stochastic gradients g at the saddle, v the escape direction: the correlated
    negative curvature constant of Daneshmand et al. (2018), from `samples` draws of a stream of
    its own (so that estimating it never changes the runs)."""
    if samples == 0:
        return math.nan
    generator = torch.Generator().manual_seed(CNC_STREAM + seed)
    chunk = min(samples, CNC_CHUNK)
    total, count = 0.0, 0
    while count < samples:
        runs = min(chunk, samples - count)
        drawn = problem.draw(generator, 1, runs)[0]
        g = problem.stochastic_grad(problem.saddle.expand(runs, problem.dim).clone(), drawn)
        total += float((g.double() @ problem.escape_direction.double()).square().sum())
        count += runs
    return total / samples


def _rows(cell, problem, escaped, escape_step, diverged, final_step, loss_at_escape, final_x, tail):
    runs = len(escaped)
    minimum_loss = math.nan if problem.minimum_loss is None else float(problem.minimum_loss)
    final_loss = problem.loss(final_x)
    final_grad_norm = torch.linalg.vector_norm(problem.grad(final_x), dim=-1)
    columns = {
        "cell_id": cell_id(cell),
        **flatten_cell(cell),
        **problem.derived(),
        "saddle_loss": float(problem.saddle_loss),
        "minimum_loss": minimum_loss,
        "cnc_constant": cnc_constant(problem, cell["cnc_samples"], cell["seed"]),
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
        # The same relative to the minimum, f − f_min (quantiles shift with it); NaN where
        # f_min is not known.
        for name in ("mean", *(f"q{int(q * 100)}" for q in TAIL_QUANTILES)):
            columns[f"tail_gap_{name}"] = columns[f"tail_loss_{name}"] - minimum_loss
    return pd.DataFrame(columns)
