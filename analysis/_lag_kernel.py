"""The lag map's loop over steps, compiled (numba; imported by analysis.lag only when used).

`advance` is analysis.lag.run_map's loop body for every node still below its threshold, step by
step, with the same operations in the same order on float64, so the escape steps are the numpy
loop's exactly (tests/test_lag_speed.py compares them): IEEE addition, multiplication, division and
square root round identically wherever they run, and numba does not fuse a·b + c (no fastmath).
The one operation whose rounding differs between numpy and the C library is a power with a
general exponent (numpy's vectorised pow): the exact preconditioner with α ≠ 1 stays on the numpy
loop (analysis.lag.run_map). Division by zero gives inf or NaN as numpy's does (error_model="numpy").

Why compiled: the numpy loop costs about 30 µs of dispatch per step whatever the nodes, and a cell
runs up to 3 budgets of steps (about 85 ms a cell at 10⁶ rows, most of analyze's time); here a
node-step costs a few ns.
"""
from __future__ import annotations

import math

import numpy as np

from numba import njit


@njit(cache=True, error_model="numpy")
def advance(index, y, m, u, top, n, out, t_from, level, spread, lrs, decay, fresh, bias1, bias2,
            b1, exact, running_max, eps, sigma, sigma2, curvature, quartic):  # pragma: no cover - compiled
    """Steps t_from … len(level) for the first n nodes of (index, y, m, u, top): a node that reaches
    level[t − 1] gets out[index] = t and leaves; the rest are kept, in order, at the front. Returns
    how many are left. spread: V_⊥(1 … len(level)) for the quartic's drift (zeros without it)."""
    last = len(level)
    one_minus_b1 = 1 - b1
    q = quartic / curvature
    for t in range(t_from, last + 1):
        if n == 0:
            break
        lr_curv = lrs[t - 1] * curvature
        a, b, b1t, b2t, threshold = decay[t - 1], fresh[t - 1], bias1[t - 1], bias2[t - 1], level[t - 1]
        others = spread[t - 2]
        hits = 0
        # Every node one step, in place (a loop without exits, which the compiler vectorises), then
        # the nodes that reached the level leave.
        for j in range(n):
            yj = y[j]
            drift = yj
            if quartic:
                r = sigma * yj / curvature
                drift = yj * (1 - q * (r * r + others))
            square = drift * drift + 1
            uj = square if exact else a * u[j] + b * square
            tj = top[j]
            if running_max:                       # np.maximum: NaN wins
                tj = math.nan if (uj != uj or tj != tj) else (uj if uj > tj else tj)
            mj = drift if b1 == 0 else b1 * m[j] + one_minus_b1 * drift
            v = tj if running_max else uj
            if exact:                             # alpha = 1: numpy's x ** 0.5 is its sqrt
                d = math.sqrt(sigma2 * v + eps)
            else:
                d = sigma * math.sqrt(v / b2t) + eps
            yj = yj + lr_curv * mj / (b1t * d)
            y[j], m[j], u[j], top[j] = yj, mj, uj, tj
            hits += yj >= threshold
        if hits:
            kept = 0
            for j in range(n):
                if y[j] >= threshold:
                    out[index[j]] = t
                else:
                    index[kept], y[kept], m[kept], u[kept], top[kept] = index[j], y[j], m[j], u[j], top[j]
                    kept += 1
            n = kept
    return n


@njit(cache=True, error_model="numpy")
def stable_moments(xx, xm, mm, gains, lam, sig, count, b1, b1_squared, settled, previous, t_from, steps
                   ):  # pragma: no cover - compiled
    """analysis.lag.StableSpread._with_momentum's loop: the stable coordinates' (x, m) second moments
    (xx, xm, mm, updated in place) for steps t_from … steps − 1, and V_⊥ at each, held once settled.
    The sum over coordinates runs in order from 0, as numpy's does below 8 terms (the caller keeps
    more coordinates on the numpy loop). Returns (V_⊥ per step, settled)."""
    out = np.empty(steps - t_from)
    one_minus_b1 = 1 - b1
    last = gains.shape[1] - 1
    for t in range(t_from, steps):
        i = t - t_from
        if settled > 8:                       # stationary: constant gains, constant V
            out[i:] = previous
            break
        total = 0.0
        close = True
        for j in range(len(lam)):
            k = gains[j, t]
            a11 = 1 - k * one_minus_b1 * lam[j]
            a12 = -k * b1
            a21 = one_minus_b1 * lam[j]
            n1 = -k * one_minus_b1 * sig[j]
            n2 = one_minus_b1 * sig[j]
            x0, x1, x2 = xx[j], xm[j], mm[j]
            xx[j] = a11 * a11 * x0 + 2 * a11 * a12 * x1 + a12 * a12 * x2 + n1 * n1
            xm[j] = a11 * a21 * x0 + (a11 * b1 + a12 * a21) * x1 + a12 * b1 * x2 + n1 * n2
            mm[j] = a21 * a21 * x0 + 2 * a21 * b1 * x1 + b1_squared * x2 + n2 * n2
            total += count[j] * xx[j]
            final = gains[j, last]            # np.allclose(k, final, rtol=1e-13, atol=0)
            if not ((abs(k - final) <= 1e-13 * abs(final) and math.isfinite(final)) or k == final):
                close = False
        floor = 1e-300 if 1e-300 > total else total
        still = abs(total - previous) <= 1e-13 * floor and close
        settled = settled + 1 if still else 0
        out[i] = total
        previous = total
    return out, settled
