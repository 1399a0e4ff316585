"""THEORY.md's closed forms for a quadratic saddle, vectorised over numpy arrays.

Escape coordinate, eigenvalue −γ, noise std σ₁ along it, started at the saddle, escape at |x| = r.
Plain SGD is x_{t+1} = a x_t + η σ₁ ξ_t with a = 1 + ηγ, so x_t ≈ aᵗ W with
W ~ N(0, s²), s² = η σ₁² / (γ (2 + ηγ)), and τ = ln(r/|W|) / ln a.
"""
from __future__ import annotations

import numpy as np

# E[ln(1/|Z|)] for Z ~ N(0, 1) is (γ_Euler + ln 2)/2: the constant in E[τ].
EULER_C = (np.euler_gamma + np.log(2)) / 2


def sgd_escape_time(lr, curvature, sigma_escape, escape_radius=1.0):
    """E[τ_SGD] = (ln(r/s) + C) / ln(1 + ηγ)   (THEORY.md §3, checked by Monte Carlo)."""
    lr, gamma, sigma, r = map(np.asarray, (lr, curvature, sigma_escape, escape_radius))
    s = np.sqrt(lr * sigma**2 / (gamma * (2 + lr * gamma)))
    return (np.log(r / s) + EULER_C) / np.log1p(lr * gamma)


def sgd_escape_sd(lr, curvature):
    """sd(τ_SGD) = (π/√8) / ln(1 + ηγ): the spread of ln|W|, independent of σ₁."""
    return (np.pi / np.sqrt(8)) / np.log1p(np.asarray(lr) * np.asarray(curvature))


def preconditioned_escape_time(lr, curvature, sigma_escape, escape_radius=1.0, p_escape=1.0):
    """A fixed diagonal preconditioner with entry p₁ along the escape direction only scales the
    step there: E[τ_P] = E[τ_SGD](η → η p₁) with the noise std σ₁ unchanged."""
    return sgd_escape_time(np.asarray(lr) * np.asarray(p_escape), curvature, sigma_escape, escape_radius)


def ideal_escape_time(lr, curvature, sigma_escape, escape_radius=1.0, alpha=1.0):
    """The ideal preconditioner A = Σ^(−α/2) built from the noise alone: p₁ = σ₁^(−α)."""
    p_escape = np.asarray(sigma_escape, dtype=float) ** (-np.asarray(alpha))
    return preconditioned_escape_time(lr, curvature, sigma_escape, escape_radius, p_escape)
