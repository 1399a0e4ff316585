"""Side measurements of a cell, beside the runs themselves: the first second-order stationary
point of each run (SOSPTracker) and the correlated-negative-curvature constant at the saddle
(cnc_constant). Each draws from a random stream of its own, so switching it on never changes
the runs.
"""
from __future__ import annotations

import math

import torch

from problems.curvature import min_hessian_eigenvalue

CNC_CHUNK = 512                  # stochastic gradients per call when estimating cnc_constant
# Seeds of the side streams, far above any cell seed's 2·seed, 2·seed + 1.
CNC_STREAM, LANCZOS_STREAM = 1 << 40, 1 << 41


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


class GapTracker:
    """The first step at which f(x) − f_min ≤ gap_epsilon: the time to a given accuracy (Staib et
    al.'s comparison at matched accuracy), tested every step for the runs not there yet. Needs
    the problem's f_min. Runs that never get there are censored like escape_step."""

    def __init__(self, cell, problem, runs):
        self.on = cell["gap_epsilon"] > 0
        self.problem, self.epsilon = problem, cell["gap_epsilon"]
        if self.on and problem.minimum_loss is None:
            raise ValueError(f"cell: gap_epsilon={self.epsilon!r} needs the minimum loss of problem {problem.name}, "
                             "which it does not know; allowed: 0 (off)")
        self.minimum_loss = None if problem.minimum_loss is None else float(problem.minimum_loss)
        self.reached = torch.full((runs,), not self.on, dtype=torch.bool)
        self.step = torch.full((runs,), -1, dtype=torch.int64)

    def check(self, t, x, active, skip) -> bool:
        """Test the batch rows not skipped; True if any reached the gap now."""
        candidates = ~self.reached[active] & ~skip
        if not candidates.any():
            return False
        hit = torch.zeros_like(candidates)
        hit[candidates] = self.problem.loss(x[candidates]).double() - self.minimum_loss <= self.epsilon
        who = active[hit]
        self.reached[who], self.step[who] = True, t
        return bool(hit.any())

    def add_columns(self, rows, final_step):
        rows["gap_reached"] = self.reached.numpy()
        rows["gap_step"] = torch.where(self.reached, self.step, final_step).numpy()


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
