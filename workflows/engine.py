"""The engine: one cell, all its seeds as one batch, one row per seed. No Ray, no YAML.

Every run starts at the saddle (plus an optional offset) and takes stochastic-gradient steps
until it escapes (the first step with escape_distance ≥ escape_radius), diverges (non-finite,
or beyond divergence_radius) or reaches the budget. A run that has not escaped by then is
right-censored: escaped = False and escape_step = the last step observed (the budget, or the
step at which it diverged), never a made-up escape time. workflows/record.py keeps that record.

Second-order stationarity (`sosp_epsilon` > 0): every `sosp_every` steps (and at step 0) the
runs not there yet are tested for ‖∇f‖ ≤ ε and λ_min(∇²f) ≥ −√(ρε) (workflows/metrics.py). A
run then finishes only once it has both escaped and reached an SOSP; one that never reaches it
is censored like escape_step. Off, none of this runs and the rows are as before.

Every row also carries the cell's cnc_constant, E[(vᵀg)²] over `cnc_samples` stochastic
gradients at the saddle, and, with `tail_steps`, the tail's gap to the minimum f − f_min where
the problem knows f_min. The side computations draw from streams of their own: switching them
on never changes the runs.

Speed: the noise of a block of steps is drawn in one generator call, and finished runs leave
the batch at block boundaries, so late, slow runs do not drag the finished ones along. The
noise a run gets depends only on the cell (its seed, its block sizes and which runs are still
in the batch), never on the machine or the number of workers.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import time

import numpy as np
import pandas as pd
import torch

from optimizers import select_runs

from .cell import Cell, make_cell
from .core.schedules import Schedule
from .kernels import compiled_block
from .metrics import GapTracker, SOSPTracker, cnc_constant
from .record import TAIL_QUANTILES, RunRecord
from .registry import get_optimizer, make_problem

NOISE_BLOCK_ELEMENTS = 1 << 18   # per block: big enough to amortise the call, small enough for cache
MAX_BLOCK_STEPS = 64


class Result:
    """A cell's outcome: `columns` (its row table as column -> array, or a value every run shares),
    `rows` (the same as a DataFrame, one row per seed, made on first use), `trace` (long format:
    seed, step, loss, when trace_points > 0) and `seconds` (the engine's wall time for the cell).
    A sweep's runner stores the columns as they are: making a DataFrame of a cell's 60 columns and
    taking them apart again cost about 4 ms a cell, most of what a small cell's engine takes."""

    __slots__ = ("columns", "trace", "seconds", "_rows")

    def __init__(self, columns: dict, trace: pd.DataFrame | None, seconds: float):
        self.columns, self.trace, self.seconds, self._rows = columns, trace, seconds, None

    @property
    def rows(self) -> pd.DataFrame:
        if self._rows is None:
            self._rows = pd.DataFrame(self.columns, copy=False)
        return self._rows


def simulate_cell(cell: dict) -> pd.DataFrame:
    """One row per seed; see `simulate` for the trace and the timing."""
    return simulate(cell).rows


def simulate(cell: dict, *, reference: bool = False) -> Result:
    """All runs of one cell (workflows/cell.py: a normalised or partial cell dict). reference=True
    runs the reference loop below even where a compiled block covers the cell (the tests compare
    the two)."""
    started = time.perf_counter()
    cell = make_cell(cell)                 # a Cell as it is; a plain dict made into one, once
    dtype = getattr(torch, cell["dtype"])
    budget, seed = cell["budget"], cell["seed"]
    # Two streams from one seed: the problem's own randomness, and the per-step noise.
    problem = make_problem(cell["problem"], seed=2 * seed, dtype=dtype)
    hp = {k: v for k, v in cell["optimizer"].items() if k != "name"}     # live: a schedule may change them
    optimizer = get_optimizer(cell["optimizer"]["name"]).factory(hp, problem)
    schedule = Schedule(hp, budget)                   # η_t (and β₂_t) into hp before each step
    generator = torch.Generator().manual_seed(2 * seed + 1)
    x = start_points(cell, problem, generator)
    state = optimizer.init(x)
    record = RunRecord(cell, problem, x)
    sosp, gap = SOSPTracker(cell, problem, cell["seeds"]), GapTracker(cell, problem, cell["seeds"])
    if sosp.on:
        sosp.check(0, x, record.active, record.done)
    compiled = None if reference else compiled_block(cell, problem, hp)   # the loop below, compiled
    if compiled is not None:
        compiled.init(x)
    elif cell["tracking_error"]:
        raise ValueError("cell: tracking_error=True is measured by the compiled block (workflows/kernels.py), "
                         "which this cell cannot use; allowed: false")

    t = 0
    while t < budget and record.batch_size:
        noise = problem.draw(generator, block_steps(t, budget, record.batch_size, problem), record.batch_size)
        if compiled is not None:
            t = compiled.run(t, noise, record, gap)
        else:
            for drawn in noise:                                       # one step: draw, step, test, record
                t += 1
                schedule.set_step(t)
                state = step(optimizer, problem.stochastic_grad(x, drawn), state, x)
                event = record.observe(t, x)
                if sosp.on and t % sosp.every == 0:
                    event |= sosp.check(t, x, record.active, record.done)
                if gap.on:
                    event |= gap.check(t, x, record.active, record.done)
                if event:
                    record.finish(t, x, sosp.reached & gap.reached)
                record.record_losses(t, x)
        if cell["inject_fault"] == "raise":
            raise RuntimeError(f"injected fault in cell {cell.id} at step {t}")
        keep = record.drop_finished()                                 # finished runs leave the batch
        if keep is not None and compiled is not None:
            compiled.compact(keep)
        elif keep is not None:
            x, state = x[keep], select_runs(state, keep)
    record.close(compiled.batch() if compiled is not None else x)

    rows = row_table(cell, problem, record)
    rows["cnc_constant"] = cnc_constant(problem, cell["cnc_samples"], seed)
    if sosp.on:
        sosp.add_columns(rows, record.final_step, record.final_x)
    if gap.on:
        gap.add_columns(rows, record.final_step)
    if cell["tracking_error"]:
        compiled.tracking_columns(rows)
    return Result(rows, trace_table(record, cell.id), time.perf_counter() - started)


def start_points(cell: dict, problem, generator: torch.Generator) -> torch.Tensor:
    """[seeds, d]: the saddle, moved by start_offset in a uniformly random direction per run
    (drawn from the noise stream, before the first step's noise)."""
    x = problem.saddle.expand(cell["seeds"], problem.dim).clone()
    if cell["start_offset"]:
        direction = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x += cell["start_offset"] * direction / torch.linalg.vector_norm(direction, dim=-1, keepdim=True)
    return x


def block_steps(t: int, budget: int, runs: int, problem) -> int:
    """Steps whose noise is drawn in one call: at most MAX_BLOCK_STEPS and NOISE_BLOCK_ELEMENTS
    numbers, never past the budget."""
    return max(1, min(MAX_BLOCK_STEPS, budget - t, NOISE_BLOCK_ELEMENTS // (runs * problem.draw_size)))


def step(optimizer, grad: torch.Tensor, state, x: torch.Tensor):
    """x ← x + the optimizer's step, in place; returns the new state. A fused kernel (`apply`)
    where the optimizer has one."""
    if optimizer.apply is not None:
        return optimizer.apply(grad, state, x)
    update, state = optimizer.update(grad, state, x)
    x.add_(update)
    return state


def row_table(cell: Cell, problem, record: RunRecord) -> dict:
    """One row per seed, in the order of workflows/core/rows.py, as column -> array (a value the
    runs share stays a value: a DataFrame made of it repeats it on every row)."""
    runs = len(record.escaped)
    final_x = record.final_x
    minimum_loss = math.nan if problem.minimum_loss is None else float(problem.minimum_loss)
    columns = {
        "cell_id": cell.id,
        **cell.columns,
        **problem.derived(),
        "saddle_loss": float(problem.saddle_loss),
        "minimum_loss": minimum_loss,
        "cnc_constant": math.nan,                      # filled by the caller (a side computation)
        "seed": np.arange(runs),
        "escaped": record.escaped.numpy(),
        "escape_step": record.escape_step.numpy(),
        "diverged": record.diverged.numpy(),
        "final_step": record.final_step.numpy(),
        "loss_at_escape": record.loss_at_escape.numpy(),
        "final_loss": problem.loss(final_x).double().numpy(),
        "final_grad_norm": torch.linalg.vector_norm(problem.grad(final_x), dim=-1).double().numpy(),
        "final_distance": problem.escape_distance(final_x).double().numpy(),
    }
    if len(record.tail):
        tail = record.tail
        columns["tail_loss_mean"] = tail.nanmean(0).numpy()
        for q in TAIL_QUANTILES:
            columns[f"tail_loss_q{int(q * 100)}"] = tail.nanquantile(q, dim=0).numpy()
        # The same relative to the minimum, f − f_min (quantiles shift with it); NaN where
        # f_min is not known.
        for name in ("mean", *(f"q{int(q * 100)}" for q in TAIL_QUANTILES)):
            columns[f"tail_gap_{name}"] = columns[f"tail_loss_{name}"] - minimum_loss
    # A DataFrame (Result.rows) is made of it without copies or block consolidation: the arrays
    # are fresh, or the record's, which is done with (1.9 → 1.1 ms at 64 × 10).
    return columns


def trace_table(record: RunRecord, key: str) -> pd.DataFrame | None:
    """Long format (cell_id, seed, step, loss), where the cell asks for a trace."""
    steps = record.steps_traced
    if not len(steps):
        return None
    runs = record.trace.shape[1]
    frame = pd.DataFrame({"seed": np.tile(np.arange(runs), len(steps)), "step": np.repeat(steps, runs),
                          "loss": record.trace.flatten().numpy()}).dropna(subset=["loss"])
    frame.insert(0, "cell_id", key)
    return frame


@functools.cache
def keep_freed_memory() -> bool:
    """Every step allocates a few temporaries of R·d floats. glibc serves large ones with mmap
    and returns them to the OS when freed, so each step page-faults its temporaries in afresh:
    at R·d = 1.6e6 that was a third of the engine's time (9.5 against 6.3 ns per coordinate-step
    for adam, benchmarks/run.py). Keeping freed memory in the heap (no mmap, no trimming) lets
    the next step reuse it. A process-wide setting: a trial's process calls it when it starts
    (workflows/tune_runner.py), never the engine on import. Linux/glibc only; a no-op elsewhere."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    try:
        mallopt = ctypes.CDLL(libc_name).mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_MMAP_THRESHOLD, 1 << 30) and mallopt(M_TRIM_THRESHOLD, 1 << 30))
