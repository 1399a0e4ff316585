"""Compiled blocks of steps (numba) for the cells most sweeps run: the engine's fast path.

The reference loop of workflows/engine.py costs about ten tensor operations per step; at the
sizes most cells have (64–1024 seeds, d = 2–10) each costs microseconds of Python and dispatch,
whatever the arithmetic. Here a whole block of steps (the steps whose noise was drawn in one
call) runs as one compiled call (workflows/_block_kernel.py): the same equations, the same noise
(drawn by the problem's own torch code), the same escape and divergence tests and the same
bookkeeping, at nanoseconds per coordinate-step instead of microseconds per step.

What it covers (`compiled_block`, else None and the engine runs its reference loop):
    problems     quadratic_saddle (every option), staib_toy
    optimizers   sgd, momentum, rmsprop, adam, amsgrad, adagrad, precond_sgd (target noise)
    cells        without SOSP tracking (λ_min needs the Hessian's eigenvalues), of at most
                 MAX_COMPILED_COORDINATES seeds × dim or at most MAX_WIDE_DIM dimensions
                 (beyond both, the reference loop's torch kernels win)

How it agrees with the reference (tests/test_kernels.py): the arithmetic is float32 (or the
cell's dtype) in the order torch's kernels use — torch.optim.Adam(fused=True)'s vector lanes for
adam, `self + value·t1·t2` for addcmul, and so on — so the iterates are the same to the last bit
in the common cases and differ by float rounding where torch's own order is not reproducible
(torch's fused Adam computes the last numel mod 8 elements in double; a rotated Hessian's matrix
product and x⁹ on staib_toy go through BLAS and Sleef). Losses on the trace and over the tail are
summed in double here. Escape steps then agree run for run except where a run crosses the escape
radius within float rounding of it.
"""
from __future__ import annotations

import numpy as np
import torch

from optimizers.precond_sgd import fixed_preconditioner

from .core.saddles import SYNTHETIC_SADDLES
from .core.schedules import Schedule
from .kernel_codes import (
    ADAGRAD,
    ADAM,
    AMSGRAD,
    BETA2,
    BIAS2_SQRT,
    COORDINATE,
    LR,
    MOMENTUM,
    N_STEP_COLUMNS,
    NEG_LR,
    NORM,
    ONE_MINUS_BETA2,
    OPTIMIZER_CODES,
    PRECOND,
    PROJECTION,
    QUADRATIC,
    RMSPROP,
    SGD,
    STAIB,
    STEP_SIZE,
)

COLUMN_CHUNK = 4096            # steps whose columns are computed at once (step_columns)
MAX_BLOCK = 1 << 16            # more steps than any block has (workflows/engine.py: MAX_BLOCK_STEPS)
# Above this many coordinates (seeds × dim), and in more than MAX_WIDE_DIM dimensions, the
# reference loop's torch kernels are faster: each run's norm is a sum in torch's order, one
# element at a time here, and at that size the step and the escape test each stream the batch
# from memory. Few dimensions keep the compiled block ahead at any batch size. Medians of 5
# alternate runs on one thread (seed-steps/s, compiled against reference): at d ≤ 16, adam
# 65536 × 16 7.4e6 against 6.8e6, sgd 262144 × 4 1.52e7 against 1.33e7, rmsprop 16384 × 10 1.31e7
# against 9.0e6; above, sgd 16384 × 100 1.05e6 against 1.17e6, adam 1024 × 1000 7.9e4 against
# 9.4e4 (before the fused loops vectorised, adam 16384 × 10 was already 6.9e6 against 1.16e7).
MAX_COMPILED_COORDINATES = 1 << 16
MAX_WIDE_DIM = 16


def compiled_block(cell: dict, problem, hp: dict):
    """A CompiledBlock for this cell, or None where the reference loop must run it."""
    if cell["sosp_epsilon"] > 0 or problem.name not in SYNTHETIC_SADDLES:
        return None
    if cell["seeds"] * problem.dim > MAX_COMPILED_COORDINATES and problem.dim > MAX_WIDE_DIM:
        return None
    name = cell["optimizer"]["name"]
    if name not in OPTIMIZER_CODES or (name == "precond_sgd" and (hp["target"] != "noise"
                                                                  or not problem.noise_cov_constant)):
        return None
    try:
        _kernel()
    except ImportError:                   # numba missing: the reference loop (same equations)
        return None
    return CompiledBlock(cell, problem, hp)


class CompiledBlock:
    """The batch's state as numpy arrays [J, d] (compacted with the batch at block ends, as the
    reference compacts its tensors), and one call of the compiled kernel per block of steps."""

    def __init__(self, cell: dict, problem, hp: dict):

        self.cell, self.problem, self.hp = cell, problem, hp
        self.schedule, self.beta2_power = Schedule(hp, cell["budget"]), 1.0
        self.chunk_start, self.chunk = 0, np.zeros((0, N_STEP_COLUMNS))
        self.name = cell["optimizer"]["name"]
        self.code = OPTIMIZER_CODES[self.name]
        self.dtype = np.float32 if cell["dtype"] == "float32" else np.float64
        f = self.dtype
        p = problem
        if p.name == "quadratic_saddle":
            self.kind = QUADRATIC
            self.eigs = p.eigs.numpy()
            self.rotated = p.basis is not None
            self.H = (p.H if self.rotated else torch.zeros(1, 1, dtype=p.H.dtype)).numpy()
            self.Q = (p.basis if self.rotated else torch.zeros(1, 1, dtype=p.H.dtype)).numpy()
            self.noise_std = p.noise_std.numpy()
            self.scale_noise = p.noise_basis is None        # draw() returned unit noise: scale it here
            self.quartic = f(p.quartic)
            self.noise_length = f(p.params["noise_length"] if p.proportional else 0.0)
            self.staib_b = np.zeros((1, 1), f)
            if p.params["escape_measure"] == "norm":
                self.escape, self.basis = NORM, np.zeros((1, 1), f)
            else:
                self.escape, self.basis = PROJECTION, p.escape_basis.numpy()
        else:                                                # staib_toy
            self.kind = STAIB
            self.eigs, self.rotated = p.h.numpy(), False
            self.H = self.Q = np.zeros((1, 1), f)
            self.noise_std, self.scale_noise, self.quartic, self.noise_length = np.zeros(p.dim, f), False, f(0), f(0)
            self.staib_b = p.b.numpy()
            self.escape, self.basis = COORDINATE, np.zeros((1, 1), f)
        # diag Σ (for proportional noise Σ at distance ℓ; the kernel scales it by (‖x‖/ℓ)²).
        cov = problem.Sigma if problem.name == "quadratic_saddle" else problem.noise_cov()
        self.noise_var = np.ascontiguousarray(torch.diagonal(cov).to(problem.saddle.dtype).numpy())
        self.track = bool(cell["tracking_error"])
        if self.code == PRECOND:
            A = fixed_preconditioner(problem, hp)
            self.full = A.dim() == 2
            self.A = A.numpy() if self.full else A.numpy()[None, :]
        else:
            self.full, self.A = False, np.zeros((1, 1), f)

    def init(self, x: torch.Tensor):
        """The batch's state: x (at first the engine's tensor itself) and the optimizer's, as
        numpy arrays [J, d] that shrink with the batch (compact)."""
        self.x = x.numpy()
        runs, d = self.x.shape
        # The diagonal Hessian and the noise's std tiled over the batch's coordinates: the fused
        # loop goes over all of them as one flat array.
        self.eigs_tiled, self.std_tiled = np.tile(self.eigs, runs), np.tile(self.noise_std, runs)
        self.preconditioner_tiled = np.tile(self.A[0], runs) if self.code == PRECOND and not self.full \
            else self.std_tiled
        self.fused = (self.kind == QUADRATIC and self.scale_noise and self.noise_length == 0
                      and not self.rotated and not self.track
                      and (self.code in (SGD, RMSPROP) or (self.code == MOMENTUM and not self.hp["nesterov"])
                           or (self.code == PRECOND and not self.full)
                           or (self.code == ADAM and self.hp["bias_correction"])))
        self.track_sum = np.zeros(runs, np.float64)
        self.track_count = np.zeros(runs, np.int64)
        self.track_at_escape = np.full(runs, np.nan, np.float64)
        zeros = lambda: np.zeros_like(self.x)   # noqa: E731
        self.s1, self.s2 = zeros(), zeros()
        self.s3 = zeros() if self.code == AMSGRAD else np.zeros((1, 1), self.dtype)
        if self.code == ADAGRAD:
            self.s1[:] = self.hp["initial_accumulator"]
        f = self.dtype
        self.events = (np.zeros((runs, 3), np.int64), np.zeros((runs, d), f), np.zeros((runs, d), f))
        self.no_noise, self.no_indices = np.zeros((1, 1, 1), f), np.zeros((1, 1), np.int64)
        self.constant = None

    def compact(self, keep: torch.Tensor):
        """The runs in `keep` (a mask over the batch) stay; the others leave, as in the reference."""
        keep = keep.numpy()
        self.x, self.s1, self.s2 = self.x[keep], self.s1[keep], self.s2[keep]
        if self.s3.shape[0] > 1:
            self.s3 = self.s3[keep]

    def step_columns(self, t0: int, steps: int) -> np.ndarray:
        """[steps, N_STEP_COLUMNS]: the hyperparameters of steps t0+1 … t0+steps, computed for
        COLUMN_CHUNK steps at once and sliced per block: each column is a function of its own step
        alone, so the numbers are the same at a fraction of the per-block cost. Not under a scheduled
        β₂ rule: its Π_s β₂ₛ is a running product, kept block by block as the reference loop does."""
        if self.schedule.rule and self.schedule.on:
            return self.compute_columns(t0, steps)
        if not (self.chunk_start <= t0 and t0 + steps <= self.chunk_start + len(self.chunk)):
            self.chunk_start = t0
            self.chunk = self.compute_columns(t0, max(steps, min(COLUMN_CHUNK, self.cell["budget"] - t0)))
        return self.chunk[t0 - self.chunk_start:t0 - self.chunk_start + steps]

    def compute_columns(self, t0: int, steps: int) -> np.ndarray:
        """The columns of steps t0+1 … t0+steps (η_t and β₂_t from the schedule), as torch's kernels
        compute them in double and cast them to the iterates' dtype. Adam's bias corrections:
        1 − β₁ᵗ, and 1 − β₂ᵗ as the fused kernel has it for a fixed β₂, 1 − Π_s β₂ₛ for one that
        follows the schedule."""
        hp = self.hp
        lrs, beta2 = self.schedule.block(t0, steps)
        out = np.zeros((steps, N_STEP_COLUMNS), np.float64)
        t = np.arange(t0 + 1, t0 + steps + 1, dtype=np.float64)
        out[:, LR], out[:, NEG_LR] = lrs, -lrs
        out[:, BETA2], out[:, ONE_MINUS_BETA2] = beta2, 1 - beta2
        if self.code in (ADAM, AMSGRAD):
            if hp["bias_correction"]:
                out[:, STEP_SIZE] = lrs / (1 - hp["beta1"] ** t)
                if self.schedule.rule and self.schedule.on:
                    powers = self.beta2_power * np.cumprod(beta2)
                    self.beta2_power = float(powers[-1])
                else:
                    powers = hp["beta2"] ** t
                out[:, BIAS2_SQRT] = np.sqrt(1 - powers)
            else:
                out[:, STEP_SIZE], out[:, BIAS2_SQRT] = lrs, 1.0
        return out.astype(self.dtype)

    def fixed_columns(self) -> np.ndarray:
        """[beta1, 1 − beta1, eps, momentum, nesterov, bias_correction, 1, 10] in the iterates' dtype
        (numba would compute in double with a Python constant)."""
        hp = self.hp
        beta1 = hp.get("beta1", 0.0)
        return np.array([beta1, 1 - beta1, hp.get("eps", 0.0), hp.get("momentum", 0.0),
                         float(hp.get("nesterov", False)), float(hp.get("bias_correction", True)), 1.0, 10.0],
                        self.dtype)

    def run(self, t0: int, noise: torch.Tensor, record, gap) -> int:
        """Steps t0+1 … t0+len(noise) for the runs of the batch; their events go to `record` (and
        the gap's to `gap`, a metrics.GapTracker). Returns the last step."""
        steps, J = len(noise), record.batch_size
        if self.constant is None:                         # what does not change from block to block
            self.constant = self.constants(record, gap)
        flags, fixed, gap_values, never = self.constant
        event_step, x_escape, x_final = self.events[0][:J], self.events[1][:J], self.events[2][:J]
        event_step[:] = 0                                 # escape, divergence, finish step (0: none)
        trace_at, tail_at = never[:steps], never[:steps]
        if record.trace_index or t0 + steps >= record.tail_start:
            t = np.arange(t0 + 1, t0 + steps + 1)
            trace_at = np.array([record.trace_index.get(int(s), -1) for s in t], np.int64)
            tail_at = np.where(t >= record.tail_start, t - record.tail_start, -1).astype(np.int64)
        noise_array = noise.numpy()
        staib = noise_array.dtype == np.int64             # staib_toy draws indices of b_i
        # By name: the kernel takes 42 arguments, and a positional call would have to match its
        # signature by position.
        events = _kernel()(
            flags=flags, eigs=self.eigs, eigs_tiled=self.eigs_tiled, std_tiled=self.std_tiled,
            preconditioner_tiled=self.preconditioner_tiled, H=self.H, Q=self.Q, noise_std=self.noise_std,
            noise_var=self.noise_var, quartic=self.quartic, noise_length=self.noise_length, staib_b=self.staib_b,
            basis=self.basis, A=self.A, steps=self.step_columns(t0, steps), fixed=fixed,
            x=self.x, s1=self.s1, s2=self.s2, s3=self.s3, rows=record.active.numpy(),
            noise=self.no_noise if staib else noise_array, indices=noise_array if staib else self.no_indices,
            threshold=record.threshold.numpy(), done=record.done.numpy(), escaped=record.escaped.numpy(),
            radius=self.dtype(record.radius), divergence_radius=self.dtype(record.divergence_radius), t0=t0,
            gap=gap_values, gap_reached=gap.reached.numpy(), gap_step=gap.step.numpy(), track_sum=self.track_sum,
            track_count=self.track_count, track_at_escape=self.track_at_escape, event_step=event_step,
            x_escape=x_escape, x_final=x_final, trace_at=trace_at, tail_at=tail_at, trace=record.trace.numpy(),
            tail=record.tail.numpy())
        if events:                                        # most blocks have none
            self.apply_events(event_step, x_escape, x_final, record)
        return t0 + steps

    def constants(self, record, gap):
        flags = np.array([self.kind, self.code, self.escape, self.rotated, self.scale_noise, self.full,
                          record.keep_escaped, gap.on, self.track, self.fused], np.int64)
        gap_values = np.array([gap.minimum_loss if gap.on else 0.0, gap.epsilon], np.float64)
        never = np.full(MAX_BLOCK, -1, np.int64)          # no step of the block on the trace or in the tail
        return flags, self.fixed_columns(), gap_values, never

    def apply_events(self, event_step, x_escape, x_final, record):
        """The block's escapes, divergences and finishes, through the record's own bookkeeping (the
        kernel already set `threshold`, `done` and the per-seed `escaped` flags as it went)."""
        for column, apply, snapshot in ((0, record.escape, x_escape), (1, record.diverge, x_final),
                                        (2, record.stop, x_final)):
            now = event_step[:, column] > 0
            if now.any():
                apply(torch.from_numpy(event_step[now, column]), torch.from_numpy(now),
                      torch.from_numpy(snapshot[now]))

    def tracking_columns(self, rows):
        """tracking_error_mean and tracking_error_at_escape (workflows/core/rows.py)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            rows["tracking_error_mean"] = self.track_sum / self.track_count
        rows["tracking_error_at_escape"] = self.track_at_escape

    def batch(self) -> torch.Tensor:
        """The iterates of the runs still in the batch."""
        return torch.from_numpy(self.x)


_COMPILED = None


def _kernel():
    """The compiled kernel (numba compiles on first use; cache=True keeps the machine code)."""
    global _COMPILED
    if _COMPILED is None:
        from ._block_kernel import step_block  # lazy: numba loads the compiled kernel (seconds)
        _COMPILED = step_block
    return _COMPILED

