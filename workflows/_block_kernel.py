"""The compiled block of steps behind workflows/kernels.py (numba; imported only when used).

One call runs the steps of one block for the whole batch, as the reference loop does
(workflows/engine.py, workflows/record.py), step by step:

    step t:  g = ∇f(x) + noise_t           the problem's stochastic gradient, every run
             x ← x + step(g)                the optimizer's update, in place, state with it
             escape / divergence test       per run, one comparison against its threshold
             gap, trace, tail               per run still running

The update goes over the batch's coordinates as one flat array where the gradient is diagonal
(the loop the compiler vectorises, as torch's kernels are), else run by run. Runs that finished
earlier in the block keep stepping until it ends, as in the reference; nothing they do is
recorded, and they leave the batch when the engine compacts it.

Arithmetic stays in the iterates' dtype (the per-step hyperparameters arrive already cast, as
torch's kernels cast their double scalars), and each expression keeps torch's order of
operations, including its fused multiply-adds: torch's vectorised addcmul, add(alpha=) and lerp
round a·b + c once, which `np.float64(a) * np.float64(b) + np.float64(c)` rounded to the
iterates' dtype does too (a product of two floats is exact in double; the one rounding left is
the cast's). numba's float() of a float32 stays a float32: np.float64 it is; and the rounding
back goes through `cast` (np.float32 for float32 cells, a no-op for float64 ones).

Division is IEEE's (error_model="numpy"): x/0 is ±inf or NaN, as in torch, where numba's default
raises ZeroDivisionError; the run then diverges as in the reference. It is also what lets the
compiler vectorise the adaptive updates (a division that may raise is a branch): adam's fused step
went from 4.4 to 1.2 ns per coordinate at 1024 × 2.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from .kernel_codes import (
    ADAGRAD,
    ADAM,
    AMSGRAD,
    BETA1,
    BETA2,
    BIAS2_SQRT,
    BIAS_CORRECTION,
    COORDINATE,
    EPS,
    MOMENTUM,
    MU,
    NEG_LR,
    NESTEROV,
    NORM,
    ONE,
    ONE_MINUS_BETA1,
    ONE_MINUS_BETA2,
    PRECOND,
    QUADRATIC,
    RMSPROP,
    SGD,
    STAIB,
    STEP_SIZE,
    TEN,
)


def cast(value, like):
    """value rounded to the dtype of the array `like` (chosen when numba compiles)."""
    raise NotImplementedError("compiled only")


@overload(cast, inline="always")
def _cast(value, like):
    if like.dtype == types.float32:
        return lambda value, like: np.float32(value)
    return lambda value, like: np.float64(value)


@njit(cache=True, inline="always", error_model="numpy")
def fma(a, b, c, like):
    """a·b + c rounded once to `like`'s dtype (torch's vectorised fused multiply-add)."""
    return cast(np.float64(a) * np.float64(b) + np.float64(c), like)


@njit(cache=True, inline="always", error_model="numpy")
def update(code, x, s1, s2, s3, j, k, g, steps, i, fixed):
    """The optimizer's update of coordinate (j, k) (g its stochastic gradient, already
    preconditioned for PRECOND): x and the state s1, s2, s3 in place."""
    neg_lr = steps[i, NEG_LR]
    if code == SGD or code == PRECOND:                # x.add_(g.mul_(−lr))
        x[j, k] = x[j, k] + g * neg_lr
    elif code == MOMENTUM:                            # b = b·μ + g; direction b, or g.add_(b, alpha=μ) = fma(b, μ, g)
        mu = fixed[MU]
        s1[j, k] = s1[j, k] * mu + g
        direction = fma(s1[j, k], mu, g, x) if fixed[NESTEROV] != 0 else s1[j, k]
        x[j, k] = x[j, k] + direction * neg_lr
    elif code == RMSPROP:                             # v = fma((1−β2)·g, g, v·β2); x += (g/(√v + ε))·(−lr)
        s1[j, k] = fma(steps[i, ONE_MINUS_BETA2] * g, g, s1[j, k] * steps[i, BETA2], x)
        x[j, k] = x[j, k] + (g / (math.sqrt(s1[j, k]) + fixed[EPS])) * neg_lr
    elif code == ADAGRAD:                             # s = fma(g, g, s); x += (g/(√s + ε))·(−lr)
        s1[j, k] = fma(g, g, s1[j, k], x)
        x[j, k] = x[j, k] + (g / (math.sqrt(s1[j, k]) + fixed[EPS])) * neg_lr
    elif fixed[BIAS_CORRECTION] != 0:                 # adam / amsgrad: torch's fused kernel, lane by lane
        s1[j, k] = s1[j, k] * fixed[BETA1] + g * fixed[ONE_MINUS_BETA1]
        s2[j, k] = s2[j, k] * steps[i, BETA2] + g * g * steps[i, ONE_MINUS_BETA2]
        v = s2[j, k]
        if code == AMSGRAD:
            if v > s3[j, k]:
                s3[j, k] = v
            v = s3[j, k]
        x[j, k] = x[j, k] - steps[i, STEP_SIZE] * s1[j, k] / (math.sqrt(v) / steps[i, BIAS2_SQRT] + fixed[EPS])
    else:                                             # adam / amsgrad without bias correction (adam.py's update)
        s2[j, k] = fma(steps[i, ONE_MINUS_BETA2] * g, g, s2[j, k] * steps[i, BETA2], x)
        v = s2[j, k]
        if code == AMSGRAD:
            if v > s3[j, k]:
                s3[j, k] = v
            v = s3[j, k]
        denom = math.sqrt(v) + fixed[EPS]
        if fixed[BETA1] != 0:
            # m.lerp_(g, w = 1 − β1) as torch's vectorised kernel computes it: one fused
            # multiply-add, fma(w, g − m, m) for w < ½ else fma(w − 1, g − m, g).
            c1 = fixed[ONE_MINUS_BETA1]
            if c1 < 0.5:
                s1[j, k] = fma(c1, g - s1[j, k], s1[j, k], x)
            else:
                s1[j, k] = fma(c1 - fixed[ONE], g - s1[j, k], g, x)
            x[j, k] = x[j, k] + (s1[j, k] / denom) * neg_lr
        else:
            x[j, k] = x[j, k] + (g / denom) * neg_lr


@njit(cache=True, inline="always", error_model="numpy")
def diagonal_gradient(X, e, eigs, quartic_terms, quartic):
    """x·eigs, + (λ‖x‖²)·x with a quartic (quartic_terms: λ‖x‖² of each coordinate's run): the
    general path's order. The branch is the same for every e: the compiler hoists it."""
    if quartic:
        return X[e] * eigs[e] + quartic_terms[e] * X[e]
    return X[e] * eigs[e]


@njit(cache=True, error_model="numpy")
def fused_steps(code, x, s1, s2, noise, i, eigs, noise_std, preconditioner, quartic_terms, quartic, steps, fixed):
    """Step i of the whole batch for the common cell: quadratic_saddle with a diagonal Hessian
    (a quartic allowed), unit noise per coordinate, and sgd, momentum, rmsprop, bias-corrected
    adam or the diagonal fixed noise preconditioner. One flat loop per optimizer over every coordinate
    of every run, without a branch that changes inside it: the loop the compiler vectorises. eigs,
    noise_std, the preconditioner and the quartic's λ‖x‖² arrive tiled to the batch's length.
    The same expressions as `update` and the general path."""
    n = x.size
    X, S1, S2, Z = x.reshape(n), s1.reshape(n), s2.reshape(n), noise[i].reshape(n)
    neg_lr = steps[i, NEG_LR]
    if code == SGD:
        for e in range(n):
            g = fma(Z[e], noise_std[e], diagonal_gradient(X, e, eigs, quartic_terms, quartic), X)
            X[e] = X[e] + g * neg_lr
    elif code == PRECOND:
        for e in range(n):
            g = fma(Z[e], noise_std[e], diagonal_gradient(X, e, eigs, quartic_terms, quartic), X)
            X[e] = X[e] + (g * preconditioner[e]) * neg_lr
    elif code == ADAM:
        b1, c1, eps = fixed[BETA1], fixed[ONE_MINUS_BETA1], fixed[EPS]
        b2, c2 = steps[i, BETA2], steps[i, ONE_MINUS_BETA2]
        step_size, bias2_sqrt = steps[i, STEP_SIZE], steps[i, BIAS2_SQRT]
        for e in range(n):
            g = fma(Z[e], noise_std[e], diagonal_gradient(X, e, eigs, quartic_terms, quartic), X)
            S1[e] = S1[e] * b1 + g * c1
            S2[e] = S2[e] * b2 + g * g * c2
            X[e] = X[e] - step_size * S1[e] / (math.sqrt(S2[e]) / bias2_sqrt + eps)
    elif code == RMSPROP:
        b2, c2, eps = steps[i, BETA2], steps[i, ONE_MINUS_BETA2], fixed[EPS]
        for e in range(n):
            g = fma(Z[e], noise_std[e], diagonal_gradient(X, e, eigs, quartic_terms, quartic), X)
            S1[e] = fma(c2 * g, g, S1[e] * b2, X)
            X[e] = X[e] + (g / (math.sqrt(S1[e]) + eps)) * neg_lr
    else:                                             # heavy-ball momentum
        mu = fixed[MU]
        for e in range(n):
            g = fma(Z[e], noise_std[e], diagonal_gradient(X, e, eigs, quartic_terms, quartic), X)
            S1[e] = S1[e] * mu + g
            X[e] = X[e] + S1[e] * neg_lr


@njit(cache=True, error_model="numpy")
def general_steps(kind, code, rotated, scale_noise, full, x, s1, s2, s3, noise, indices, i, eigs, H, noise_std,
                  quartic, noise_length, staib_b, A, steps, fixed, g, full_gradient, factor):
    """Step i of the whole batch, run by run, for every other cell: a rotated Hessian (x H), a
    quartic (λ‖x‖²·x), proportional noise (scaled by ‖x‖/ℓ), staib_toy (h·x + 10·x⁹ + b_i), a full
    preconditioner (A g) and the other optimizers. full_gradient[j] keeps ∇f where g was drawn,
    factor[j] the noise's scale (for the tracking error)."""
    J, d = x.shape
    for j in range(J):
        squared = x[j, 0] * x[j, 0]
        for k in range(1, d):
            squared += x[j, k] * x[j, k]
        factor[j] = math.sqrt(squared) / noise_length if noise_length > 0 else fixed[ONE]
        for k in range(d):
            if kind == STAIB:                             # h·x + 10·x⁹
                x2 = x[j, k] * x[j, k]
                x4 = x2 * x2
                gk = eigs[k] * x[j, k] + fixed[TEN] * ((x4 * x4) * x[j, k])
            elif rotated:                                 # x @ H
                gk = x[j, 0] * H[0, k]
                for m in range(1, d):
                    gk += x[j, m] * H[m, k]
            else:
                gk = x[j, k] * eigs[k]
            if quartic != 0:                              # + (λ‖x‖²)·x
                gk = gk + (quartic * squared) * x[j, k]
            full_gradient[j, k] = gk
            if kind == STAIB:
                g[k] = gk + staib_b[indices[i, j], k]
            else:
                z = noise[i, j, k] * factor[j] if noise_length > 0 else noise[i, j, k]
                g[k] = fma(z, noise_std[k], gk, x) if scale_noise else gk + z
        for k in range(d):
            gk = g[k]
            if code == PRECOND:
                if full:                                  # (A g)_k
                    gk = A[k, 0] * g[0]
                    for m in range(1, d):
                        gk += A[k, m] * g[m]
                else:
                    gk = gk * A[0, k]
            update(code, x, s1, s2, s3, j, k, gk, steps, i, fixed)


@njit(cache=True, error_model="numpy")
def loss(kind, rotated, eigs, Q, quartic, x, j):
    """f(x_j), summed in double."""
    d = x.shape[1]
    total = 0.0
    if kind == QUADRATIC:
        for k in range(d):
            if rotated:
                y = 0.0
                for m in range(d):
                    y += np.float64(x[j, m]) * np.float64(Q[m, k])
            else:
                y = np.float64(x[j, k])
            total += 0.5 * np.float64(eigs[k]) * y * y
        if quartic != 0:
            sq = 0.0
            for k in range(d):
                sq += np.float64(x[j, k]) * np.float64(x[j, k])
            total += 0.25 * np.float64(quartic) * sq * sq
    else:
        for k in range(d):
            xk = np.float64(x[j, k])
            total += 0.5 * np.float64(eigs[k]) * xk * xk + xk ** 10
    return total


@njit(cache=True, error_model="numpy")
def projected_distance(escape, basis, x, j):
    """‖x_j‖ within the escape subspace (projection) or |x_j[1]| (staib_toy's coordinate)."""
    if escape == COORDINATE:
        return abs(x[j, 1])
    squared = 0.0 * x[j, 0]
    for c in range(basis.shape[1]):
        acc = x[j, 0] * basis[0, c]
        for k in range(1, x.shape[1]):
            acc += x[j, k] * basis[k, c]
        squared += acc * acc
    return math.sqrt(squared)


@njit(cache=True, error_model="numpy")
def tracking_error(code, fixed, steps, i, s1, s2, s3, full_gradient, noise_var, factor, j):
    """‖v − E[g²|x]‖ / ‖E[g²|x]‖ for run j: v the second-moment estimate the update divides by
    (RMSProp's v; Adam's and AMSGrad's v̂ = v / (1 − β₂ᵗ), their max for AMSGrad), E[g²|x] =
    (∇f(x))² + factor² diag Σ at the point where g was drawn."""
    scale = 1.0
    if (code == ADAM or code == AMSGRAD) and fixed[BIAS_CORRECTION] != 0:
        scale = 1.0 / (np.float64(steps[i, BIAS2_SQRT]) * np.float64(steps[i, BIAS2_SQRT]))
    num, den = 0.0, 0.0
    for k in range(full_gradient.shape[1]):
        v = np.float64(s1[j, k] if code == RMSPROP else (s3[j, k] if code == AMSGRAD else s2[j, k])) * scale
        expected = (np.float64(full_gradient[j, k]) * np.float64(full_gradient[j, k])
                    + np.float64(noise_var[k]) * np.float64(factor[j]) * np.float64(factor[j]))
        num += (v - expected) * (v - expected)
        den += expected * expected
    return math.sqrt(num / den) if den > 0 else np.nan


@njit(cache=True, error_model="numpy")
def step_block(flags, eigs, eigs_tiled, std_tiled, preconditioner_tiled, H, Q, noise_std, noise_var, quartic,
               noise_length, staib_b, basis, A, steps, fixed, x, s1, s2, s3, rows, noise, indices,
               threshold, done, escaped, radius, divergence_radius, t0,
               gap, gap_reached, gap_step, track_sum, track_count, track_at_escape,
               event_step, x_escape, x_final, trace_at, tail_at, trace, tail):
    """Steps t0+1 … t0+len(steps) for the batch (x, s1, s2, s3: [J, d], run j is seed rows[j]).
    Per run, event_step[j] gets the step of its escape, divergence and finish in this block (0:
    none), x_escape/x_final the iterates at its escape and at its end; threshold/done/escaped, the
    gap's and the tracking error's per-seed records are updated as the reference loop does.
    Returns how many events (escapes, divergences, finishes) the block had.
    flags: kind, optimizer code, escape measure, rotated, scale_noise, full, keep_escaped, gap on,
    tracking on, fused. gap: [f_min, ε] (double)."""
    kind, code, escape, rotated, scale_noise, full = flags[0], flags[1], flags[2], flags[3], flags[4], flags[5]
    keep_escaped, gap_on, track_on, fused = flags[6] != 0, flags[7] != 0, flags[8] != 0, flags[9] != 0
    J, d = x.shape
    g = np.empty(d, x.dtype)
    full_gradient = np.empty((J, d), x.dtype)
    factor = np.empty(J, x.dtype)
    n = J * d
    quartic_terms = np.zeros(n, x.dtype)
    # ‖x‖² < (1 − 2⁻²⁰)·threshold² (in double) implies √‖x‖² < threshold after the iterates' own
    # rounding of the square root (relative error ≤ 2⁻²⁴ in float32): the same test, decided early.
    clearly_below = 1.0 - 2.0 ** -20
    squares = np.empty(J, x.dtype)                        # ‖x_j‖² of the quiet steps' pre-test
    bound = np.empty(J)                                   # its bound: (1 − 2⁻²⁰)·threshold², ∞ when done
    stale = True                                          # bound to be recomputed (thresholds changed)
    events = 0                                            # entries of event_step set (returned)
    for i in range(steps.shape[0]):
        t = t0 + i + 1
        if fused:
            if quartic != 0:                              # λ‖x‖² of each run, before the step
                for j in range(J):
                    squared = x[j, 0] * x[j, 0]
                    for k in range(1, d):
                        squared += x[j, k] * x[j, k]
                    for k in range(d):
                        quartic_terms[j * d + k] = quartic * squared
            fused_steps(code, x, s1, s2, noise, i, eigs_tiled[:n], std_tiled[:n], preconditioner_tiled[:n],
                        quartic_terms, quartic != 0, steps, fixed)
        else:
            general_steps(kind, code, rotated, scale_noise, full, x, s1, s2, s3, noise, indices, i, eigs, H,
                          noise_std, quartic, noise_length, staib_b, A, steps, fixed, g, full_gradient, factor)
        # A step with nothing to record but events (no gap, tracking, trace or tail) and the norm
        # as escape measure: a run whose ‖x‖² is clearly below its threshold² has no event, and is
        # passed over without the square root and the bookkeeping below.
        quiet = escape == NORM and not gap_on and not track_on and trace_at[i] < 0 and tail_at[i] < 0
        if quiet:
            # The whole batch at once first: every run's ‖x‖² (each summed in coordinate order,
            # as below, but coordinate by coordinate over the runs: loops the compiler vectorises
            # where d is small) and how many are not clearly below their bound. Most steps have
            # none, and then the run-by-run loop below has nothing to do.
            if stale:
                for j in range(J):
                    bound[j] = np.inf if done[j] else clearly_below * np.float64(threshold[j]) * np.float64(threshold[j])
                stale = False
            for j in range(J):
                squares[j] = x[j, 0] * x[j, 0]
            for k in range(1, d):
                for j in range(J):
                    squares[j] += x[j, k] * x[j, k]
            near = 0
            for j in range(J):
                near += not (np.float64(squares[j]) < bound[j])     # NaN too: it diverged
            if near == 0:
                continue
            stale = True                                  # the loop below may change thresholds
        for j in range(J):
            if done[j]:
                continue
            squared = x[j, 0] * x[j, 0]                   # ‖x‖², in order (the reference's norm)
            for k in range(1, d):
                squared += x[j, k] * x[j, k]
            if quiet and np.float64(squared) < clearly_below * np.float64(threshold[j]) * np.float64(threshold[j]):
                continue
            r = rows[j]
            size = math.sqrt(squared)
            distance = size if escape == NORM else projected_distance(escape, basis, x, j)
            error = np.nan
            if track_on and not escaped[r]:               # the escape phase: steps 1 … escape_step
                error = tracking_error(code, fixed, steps, i, s1, s2, s3, full_gradient, noise_var, factor, j)
                track_sum[r] += error
                track_count[r] += 1
            event = False
            if not (distance < threshold[j]) or (escape != NORM and not (size <= divergence_radius)):
                if not (size <= divergence_radius):       # non-finite, or too far: diverged, done
                    event_step[j, 1] = t
                    events += 1
                    x_final[j] = x[j]
                    done[j] = True
                    threshold[j] = np.inf
                    continue
                if distance >= radius and not escaped[r]:
                    event_step[j, 0] = t
                    events += 1
                    x_escape[j] = x[j]
                    escaped[r] = True
                    threshold[j] = divergence_radius
                    event = True
                    if track_on:
                        track_at_escape[r] = error
            if gap_on and not gap_reached[r]:
                if loss(kind, rotated, eigs, Q, quartic, x, j) - gap[0] <= gap[1]:
                    gap_reached[r] = True
                    gap_step[r] = t
                    event = True
            if event and not keep_escaped and escaped[r] and (not gap_on or gap_reached[r]):
                event_step[j, 2] = t                      # finished: escaped, and at its gap where asked
                events += 1
                x_final[j] = x[j]
                done[j] = True
                continue
            if trace_at[i] >= 0:
                trace[trace_at[i], r] = loss(kind, rotated, eigs, Q, quartic, x, j)
            if tail_at[i] >= 0:
                tail[tail_at[i], r] = loss(kind, rotated, eigs, Q, quartic, x, j)
    return events
