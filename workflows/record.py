"""Per-run bookkeeping of the engine: which runs escaped, diverged or finished, and when; their
losses at escape, on the trace and over the tail; and the batch of runs still stepping.

A run (a seed) is in one of these states:

    running ──escape──▶ escaped ──(its SOSP too, unless run_to_budget)──▶ finished
       │                   │
       └──divergence──▶ diverged (finished)     (an escaped run can still diverge under run_to_budget)

Escape is the first step with escape_distance ≥ escape_radius; divergence the first with a
non-finite iterate or ‖x − x*‖ > divergence_radius. A run that has not escaped when it stops is
right-censored: escape_step is the last step observed (the budget, or the step it diverged).

Runs are indexed two ways: by their seed index (0 … seeds−1, the row of the results) and by
their row in the batch (`active[j]` is the seed of batch row j). Finished runs keep stepping to
the end of the current block of steps (they leave the batch then); nothing they do meanwhile
is recorded.
"""
from __future__ import annotations

import math

import numpy as np
import torch

TAIL_QUANTILES = (0.5, 0.9)


def trace_steps(budget: int, points: int) -> np.ndarray:
    """`points` log-spaced steps from 1 to the budget (fewer where they round to the same step)."""
    if not points:
        return np.zeros(0, np.int64)
    return np.unique(np.round(np.logspace(0, np.log10(budget), points)).astype(np.int64))


class RunRecord:
    def __init__(self, cell: dict, problem, x: torch.Tensor):
        runs, budget = len(x), cell["budget"]
        self.problem, self.budget = problem, budget
        self.keep_escaped = cell["run_to_budget"]
        self.radius, self.divergence_radius = problem.escape_radius, cell["divergence_radius"]
        # Per seed.
        self.escaped = torch.zeros(runs, dtype=torch.bool)
        self.diverged = torch.zeros(runs, dtype=torch.bool)
        self.escape_step = torch.full((runs,), budget, dtype=torch.int64)
        self.final_step = torch.full((runs,), budget, dtype=torch.int64)
        self.loss_at_escape = torch.full((runs,), math.nan, dtype=torch.float64)
        self.final_x = x.clone()
        self.steps_traced = trace_steps(budget, cell["trace_points"])
        self.trace_index = {int(s): i for i, s in enumerate(self.steps_traced)}
        self.trace = torch.full((len(self.steps_traced), runs), math.nan, dtype=torch.float64)
        self.tail_start = budget - cell["tail_steps"] + 1
        self.tail = torch.full((cell["tail_steps"], runs), math.nan, dtype=torch.float64)
        # Per batch row.
        self.active = torch.arange(runs)
        self.done = torch.zeros(runs, dtype=torch.bool)        # finished (and not kept) or diverged
        # The escape radius until a row escapes, then the divergence radius, inf once done: one
        # comparison per step tests both.
        self.threshold = torch.full((runs,), float(min(self.radius, self.divergence_radius)), dtype=x.dtype)

    # --- the batch -----------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return len(self.active)

    def drop_finished(self) -> torch.Tensor | None:
        """Finished rows leave the batch (at a block's end); returns the mask of the rows kept, or
        None where none left."""
        if not self.done.any():
            return None
        keep = ~self.done
        self.active, self.done, self.threshold = self.active[keep], self.done[keep], self.threshold[keep]
        return keep

    def close(self, x_batch):
        """The runs still in the batch at the budget end there, at x_batch."""
        self.final_x[self.active] = x_batch

    # --- events, per step (the reference loop) -----------------------------------------------------
    def observe(self, t: int, x: torch.Tensor) -> bool:
        """Escape and divergence at step t; True where some row escaped (an event the finishing
        test then looks at). One cheap test per step: the bookkeeping runs only on the steps
        where some row crosses its threshold or blows up (NaN fails `<`)."""
        problem = self.problem
        distance = problem.escape_distance(x)
        alarm = ~(distance < self.threshold)
        if not problem.escape_is_distance:
            size = torch.linalg.vector_norm(x - problem.saddle, dim=-1)
            alarm |= ~(size <= self.divergence_radius)
        if not alarm.any():
            return False
        size = distance if problem.escape_is_distance else size
        bad = ~(size <= self.divergence_radius) & ~self.done
        newly = (distance >= self.radius) & ~self.escaped[self.active] & ~bad
        if newly.any():
            self.escape(t, newly, x[newly])
        if bad.any():
            self.diverge(t, bad, x[bad])
        return bool(newly.any())

    def escape(self, t, rows: torch.Tensor, x_rows: torch.Tensor):
        """Batch rows `rows` (a mask) escaped at step(s) t, at iterates x_rows."""
        who = self.active[rows]
        self.escaped[who], self.escape_step[who] = True, torch.as_tensor(t).expand(len(who))
        self.loss_at_escape[who] = self.problem.loss(x_rows).double()
        self.threshold[rows] = self.divergence_radius          # watched for divergence only

    def diverge(self, t, rows: torch.Tensor, x_rows: torch.Tensor):
        who = self.active[rows]
        steps = torch.as_tensor(t).expand(len(who))
        self.diverged[who], self.final_step[who], self.final_x[who] = True, steps, x_rows
        censored = ~self.escaped[who]
        self.escape_step[who[censored]] = steps[censored]          # censored where it blew up
        self.done |= rows
        self.threshold[rows] = math.inf

    def finish(self, t: int, x: torch.Tensor, reached: torch.Tensor):
        """Rows that have escaped and reached their SOSP (`reached`, per seed; all True without
        SOSP tracking) stop now, unless run_to_budget keeps them going."""
        if self.keep_escaped:
            return
        finishing = self.escaped[self.active] & reached[self.active] & ~self.done
        if finishing.any():
            self.stop(t, finishing, x[finishing])

    def stop(self, t, rows: torch.Tensor, x_rows: torch.Tensor):
        who = self.active[rows]
        self.done |= rows
        self.final_step[who], self.final_x[who] = torch.as_tensor(t).expand(len(who)), x_rows

    def record_losses(self, t: int, x: torch.Tensor):
        """The loss of the rows still running, where step t is on the trace or in the tail."""
        traced, in_tail = t in self.trace_index, t >= self.tail_start
        if not (traced or in_tail):
            return
        running = ~self.done
        loss = self.problem.loss(x[running]).double()
        if traced:
            self.trace[self.trace_index[t], self.active[running]] = loss
        if in_tail:
            self.tail[t - self.tail_start, self.active[running]] = loss
