"""The compiled block of steps behind workflows/kernels.py (numba; imported only when used).

One call runs the steps of one block for every run of the batch, run by run: a run steps until
the block ends or it finishes (escape without run_to_budget, or divergence), exactly as the
reference loop's bookkeeping would have it (workflows/runs.py):

    step t:  g = ∇f(x) + noise_t           the problem's stochastic gradient
             x ← x + step(g)                the optimizer's update, in place, state with it
             escape / divergence test       one comparison against the run's threshold
             trace / tail loss              where step t is on the trace or in the tail

Arithmetic stays in the iterates' dtype (the per-step hyperparameters arrive already cast, as
torch's kernels cast their double scalars), and each expression keeps torch's order of
operations, including its fused multiply-adds: torch's vectorised addcmul, add(alpha=) and lerp
round a·b + c once, which `np.float64(a) * np.float64(b) + np.float64(c)` stored back into the array does too
(a product of two floats is exact in double; the one rounding left is the store's).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

SGD, MOMENTUM, RMSPROP, ADAM, AMSGRAD, ADAGRAD, PRECOND = range(7)
QUADRATIC, STAIB = range(2)
NORM, PROJECTION, COORDINATE = range(3)
LR, NEG_LR, STEP_SIZE, BIAS2_SQRT, BETA2, ONE_MINUS_BETA2 = range(6)
BETA1, ONE_MINUS_BETA1, EPS, MU, NESTEROV, BIAS_CORRECTION, ONE, TEN = range(8)


@njit(cache=True)
def gradient(kind, rotated, scale_noise, eigs, H, noise_std, quartic, noise_length, staib_b, fixed, x, noise,
             index, g, full_gradient):
    """g ← ∇f(x) + the step's noise, for one run (QuadraticSaddle.stochastic_grad, StaibToy's);
    full_gradient ← ∇f(x). noise_length > 0: proportional noise, scaled by ‖x‖/noise_length.
    Returns the noise's scale factor (1 for additive noise)."""
    d = x.shape[0]
    factor = fixed[ONE]
    if noise_length > 0:
        factor = norm(x) / noise_length
    if kind == QUADRATIC:
        if rotated:                                   # x @ H
            for k in range(d):
                acc = x[0] * H[0, k]
                for j in range(1, d):
                    acc += x[j] * H[j, k]
                g[k] = acc
        else:                                         # x * eigs
            for k in range(d):
                g[k] = x[k] * eigs[k]
        if quartic != 0:                              # + (quartic · ‖x‖²) · x
            sq = x[0] * x[0]
            for k in range(1, d):
                sq += x[k] * x[k]
            coefficient = quartic * sq
            for k in range(d):
                g[k] = g[k] + coefficient * x[k]
    else:                                             # staib_toy: h·x + 10·x⁹ (+ b_i below)
        ten = fixed[TEN]
        for k in range(d):
            x2 = x[k] * x[k]
            x4 = x2 * x2
            x8 = x4 * x4
            g[k] = eigs[k] * x[k] + ten * (x8 * x[k])
    for k in range(d):
        full_gradient[k] = g[k]
    if kind == STAIB:
        for k in range(d):
            g[k] = g[k] + staib_b[index, k]
    elif scale_noise:                                 # .addcmul_(z·factor, std): fma(z·factor, std, g)
        for k in range(d):
            z = noise[k] * factor if noise_length > 0 else noise[k]
            g[k] = np.float64(z) * np.float64(noise_std[k]) + np.float64(g[k])
    else:                                             # .add_(rotated noise · factor)
        for k in range(d):
            g[k] = g[k] + (noise[k] * factor if noise_length > 0 else noise[k])
    return factor


@njit(cache=True)
def update(code, full, A, step, fixed, x, s1, s2, s3, g, t):
    """x ← x + the optimizer's step at step t (1-based), for one run; s1, s2, s3: its state."""
    d = x.shape[0]
    neg_lr = step[NEG_LR]
    if code == SGD:                                   # x.add_(g.mul_(−lr))
        for k in range(d):
            x[k] = x[k] + g[k] * neg_lr
    elif code == MOMENTUM:                            # b = b·μ + g; direction b, or g.add_(b, alpha=μ) = fma(b, μ, g)
        mu = fixed[MU]
        for k in range(d):
            s1[k] = s1[k] * mu + g[k]
            if fixed[NESTEROV] != 0:
                direction = np.float64(s1[k]) * np.float64(mu) + np.float64(g[k])
            else:
                direction = s1[k]
            x[k] = x[k] + direction * neg_lr
    elif code == RMSPROP:                             # v = fma((1−β2)·g, g, v·β2); x += (g/(√v + ε))·(−lr)
        b2, c2, eps = step[BETA2], step[ONE_MINUS_BETA2], fixed[EPS]
        for k in range(d):
            s1[k] = s1[k] * b2
            s1[k] = np.float64(c2 * g[k]) * np.float64(g[k]) + np.float64(s1[k])
            x[k] = x[k] + (g[k] / (math.sqrt(s1[k]) + eps)) * neg_lr
    elif code == ADAGRAD:                             # s = fma(g, g, s); x += (g/(√s + ε))·(−lr)
        eps = fixed[EPS]
        for k in range(d):
            s1[k] = np.float64(g[k]) * np.float64(g[k]) + np.float64(s1[k])
            x[k] = x[k] + (g[k] / (math.sqrt(s1[k]) + eps)) * neg_lr
    elif code == PRECOND:                             # x += (A g)·(−lr), A fixed
        if full:
            for k in range(d):
                acc = A[k, 0] * g[0]
                for j in range(1, d):
                    acc += A[k, j] * g[j]
                s1[k] = acc
            for k in range(d):
                x[k] = x[k] + s1[k] * neg_lr
        else:
            for k in range(d):
                x[k] = x[k] + (g[k] * A[0, k]) * neg_lr
    elif fixed[BIAS_CORRECTION] != 0:                 # adam / amsgrad: torch's fused kernel, lane by lane
        b1, c1, eps = fixed[BETA1], fixed[ONE_MINUS_BETA1], fixed[EPS]
        b2, c2 = step[BETA2], step[ONE_MINUS_BETA2]
        step_size, bias2_sqrt = step[STEP_SIZE], step[BIAS2_SQRT]
        for k in range(d):
            s1[k] = s1[k] * b1 + g[k] * c1
            s2[k] = s2[k] * b2 + g[k] * g[k] * c2
            v = s2[k]
            if code == AMSGRAD:
                if v > s3[k]:
                    s3[k] = v
                v = s3[k]
            x[k] = x[k] - step_size * s1[k] / (math.sqrt(v) / bias2_sqrt + eps)
    else:                                             # adam / amsgrad without bias correction (adam.py's update)
        b1, c1, eps = fixed[BETA1], fixed[ONE_MINUS_BETA1], fixed[EPS]
        b2, c2 = step[BETA2], step[ONE_MINUS_BETA2]
        for k in range(d):
            s2[k] = s2[k] * b2
            s2[k] = np.float64(c2 * g[k]) * np.float64(g[k]) + np.float64(s2[k])
            v = s2[k]
            if code == AMSGRAD:
                if v > s3[k]:
                    s3[k] = v
                v = s3[k]
            denom = math.sqrt(v) + eps
            if b1 != 0:
                # m.lerp_(g, w = 1 − β1) as torch's vectorised kernel computes it: one fused
                # multiply-add, fma(w, g − m, m) for w < ½ else fma(w − 1, g − m, g). The product of
                # two floats is exact in double, so rounding a + b·c taken in double once to the
                # iterates' dtype is that fma (up to a double rounding, a few in 10⁹ operations).
                difference = g[k] - s1[k]
                if c1 < 0.5:
                    s1[k] = np.float64(c1) * np.float64(difference) + np.float64(s1[k])
                else:
                    s1[k] = np.float64(c1 - fixed[ONE]) * np.float64(difference) + np.float64(g[k])
                direction = s1[k] / denom
            else:
                direction = g[k] / denom
            x[k] = x[k] + direction * neg_lr


@njit(cache=True)
def escape_distance(kind, escape, basis, x):
    """QuadraticSaddle's / StaibToy's escape_distance for one run."""
    d = x.shape[0]
    if escape == COORDINATE:
        return abs(x[1])
    if escape == NORM:
        sq = x[0] * x[0]
        for k in range(1, d):
            sq += x[k] * x[k]
        return math.sqrt(sq)
    sq = 0.0 * x[0]
    for c in range(basis.shape[1]):
        acc = x[0] * basis[0, c]
        for k in range(1, d):
            acc += x[k] * basis[k, c]
        sq += acc * acc
    return math.sqrt(sq)


@njit(cache=True)
def norm(x):
    sq = x[0] * x[0]
    for k in range(1, x.shape[0]):
        sq += x[k] * x[k]
    return math.sqrt(sq)


@njit(cache=True)
def loss(kind, rotated, eigs, Q, quartic, x):
    """f(x) for one run, summed in double."""
    d = x.shape[0]
    total = 0.0
    if kind == QUADRATIC:
        for k in range(d):
            if rotated:
                y = 0.0
                for j in range(d):
                    y += np.float64(x[j]) * np.float64(Q[j, k])
            else:
                y = np.float64(x[k])
            total += 0.5 * np.float64(eigs[k]) * y * y
        if quartic != 0:
            sq = 0.0
            for k in range(d):
                sq += np.float64(x[k]) * np.float64(x[k])
            total += 0.25 * np.float64(quartic) * sq * sq
    else:
        for k in range(d):
            xk = np.float64(x[k])
            total += 0.5 * np.float64(eigs[k]) * xk * xk + xk ** 10
    return total


@njit(cache=True)
def second_moment_error(code, fixed, step, s1, s2, s3, full_gradient, noise_var, factor):
    """‖v − E[g²|x]‖ / ‖E[g²|x]‖ for one run: v the second-moment estimate the update divides by
    (RMSProp's v; Adam's and AMSGrad's v̂ = v / (1 − β₂ᵗ), their max for AMSGrad), E[g²|x] =
    (∇f(x))² + diag Σ at the point where g was drawn."""
    num, den = 0.0, 0.0
    scale = 1.0
    if code == ADAM or code == AMSGRAD:
        if fixed[BIAS_CORRECTION] != 0:
            scale = 1.0 / (np.float64(step[BIAS2_SQRT]) * np.float64(step[BIAS2_SQRT]))
    for k in range(full_gradient.shape[0]):
        v = np.float64(s1[k] if code == RMSPROP else (s3[k] if code == AMSGRAD else s2[k])) * scale
        expected = (np.float64(full_gradient[k]) * np.float64(full_gradient[k])
                    + np.float64(noise_var[k]) * np.float64(factor) * np.float64(factor))
        num += (v - expected) * (v - expected)
        den += expected * expected
    return math.sqrt(num / den) if den > 0 else np.nan


@njit(cache=True)
def step_block(flags, eigs, H, Q, noise_std, noise_var, quartic, noise_length, staib_b, basis, A,
               steps, fixed, x, s1, s2, s3, rows, noise, indices,
               threshold, done, escaped, radius, divergence_radius, t0,
               gap, gap_reached, gap_step, track_sum, track_count, track_at_escape,
               event_step, x_escape, x_final, trace_at, tail_at, trace, tail):
    """Steps t0+1 … t0+len(steps) for batch rows j (seed rows[j]). Per row, event_step[j] gets
    the step of its escape, divergence and finish in this block (0: none), x_escape/x_final the
    iterates at its escape and at its end; threshold/done/escaped, the gap's and the tracking
    error's per-seed records are updated as the reference loop does.
    flags: kind, optimizer code, escape measure, rotated, scale_noise, full, keep_escaped, gap on,
    tracking on. gap: [f_min, ε] (double)."""
    kind, code, escape, rotated, scale_noise, full = flags[0], flags[1], flags[2], flags[3], flags[4], flags[5]
    keep_escaped, gap_on, track_on = flags[6] != 0, flags[7] != 0, flags[8] != 0
    n_steps, n_rows, d = steps.shape[0], rows.shape[0], x.shape[1]
    g = np.empty(d, x.dtype)
    full_gradient = np.empty(d, x.dtype)
    scratch = np.empty(d, x.dtype)
    for j in range(n_rows):
        if done[j]:
            continue
        r = rows[j]
        xr = x[r]
        s1r = scratch if (code == PRECOND and full) else s1[r]
        s2r = s2[r]
        s3r = s3[r] if s3.shape[0] > 1 else s3[0]
        for i in range(n_steps):
            t = t0 + i + 1
            error = np.nan
            factor = gradient(kind, rotated, scale_noise, eigs, H, noise_std, quartic, noise_length, staib_b, fixed,
                              xr, noise[i, j] if kind == QUADRATIC else noise[0, 0],
                              indices[i, j] if kind == STAIB else 0, g, full_gradient)
            update(code, full, A, steps[i], fixed, xr, s1r, s2r, s3r, g, t)
            if track_on and not escaped[r]:             # the escape phase: steps 1 … escape_step
                error = second_moment_error(code, fixed, steps[i], s1r, s2r, s3r, full_gradient, noise_var, factor)
                track_sum[r] += error
                track_count[r] += 1
            distance = escape_distance(kind, escape, basis, xr)
            size = distance if escape == NORM else norm(xr)
            event = False
            if not (distance < threshold[j]) or (escape != NORM and not (size <= divergence_radius)):
                if not (size <= divergence_radius):   # non-finite, or too far: diverged, done
                    event_step[j, 1] = t
                    x_final[j] = xr
                    done[j] = True
                    threshold[j] = np.inf
                    break
                if distance >= radius and not escaped[r]:
                    event_step[j, 0] = t
                    x_escape[j] = xr
                    escaped[r] = True
                    threshold[j] = divergence_radius
                    event = True
                    if track_on:
                        track_at_escape[r] = error
            if gap_on and not gap_reached[r]:
                if loss(kind, rotated, eigs, Q, quartic, xr) - gap[0] <= gap[1]:
                    gap_reached[r] = True
                    gap_step[r] = t
                    event = True
            if event and not keep_escaped and escaped[r] and (not gap_on or gap_reached[r]):
                event_step[j, 2] = t                  # finished: escaped, and at its gap where asked
                x_final[j] = xr
                done[j] = True
                break
            if trace_at[i] >= 0:
                trace[trace_at[i], r] = loss(kind, rotated, eigs, Q, quartic, xr)
            if tail_at[i] >= 0:
                tail[tail_at[i], r] = loss(kind, rotated, eigs, Q, quartic, xr)
