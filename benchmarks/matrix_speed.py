"""The built-in matrix optimizers (muon, matrix_whitening) against the built-in adam, per
coordinate-step of a whole batched cell (set-up and rows included), R = 1024 runs, on the matrix
problems they are meant for. Issue 27's target: within 3x of adam on the same cell.

    .venv/bin/python benchmarks/run.py --only matrix
"""
from __future__ import annotations

import time

from workflows.registry import make_problem
from workflows import simulate

RUNS, BUDGET = 1024, 200
PROBLEMS = {
    "matrix_factorization U 10x2": {"name": "matrix_factorization", "size": 10, "rank": 2},
    "matrix_factorization U 32x8": {"name": "matrix_factorization", "size": 32, "rank": 8, "true_rank": 9},
    "deep_linear W 6x3, 3x4": {"name": "deep_linear"},
}
OPTIMIZERS = {
    "adam": {"name": "adam"},
    "muon": {"name": "muon"},
    "muon (bfloat16, as torch)": {"name": "muon", "ns_dtype": "bfloat16"},
    "matrix_whitening": {"name": "matrix_whitening"},
    "matrix_whitening left": {"name": "matrix_whitening", "sides": "left"},
}


def ns_per_coordinate_step(problem: dict, optimizer: dict, repeats: int) -> float:
    """Best of `repeats` whole cells; lr tiny so that no run escapes and every run takes every step."""
    cell = {"problem": problem, "optimizer": {**optimizer, "lr": 1e-7}, "seeds": RUNS, "budget": BUDGET,
            "cnc_samples": 0}
    simulate({**cell, "budget": 3})                      # first call: imports, kernels
    dim = make_problem(problem, seed=0).dim
    best = min(_seconds(cell) for _ in range(repeats))
    return best / (RUNS * BUDGET * dim) * 1e9


def _seconds(cell) -> float:
    start = time.perf_counter()
    simulate(cell)
    return time.perf_counter() - start


def measure(quick: bool, repeats: int = 3) -> list[dict]:
    rows = []
    for label, problem in PROBLEMS.items():
        adam = None
        for name, optimizer in OPTIMIZERS.items():
            ns = ns_per_coordinate_step(problem, optimizer, 1 if quick else repeats)
            adam = adam if adam is not None else ns
            rows.append({"problem": label, "optimizer": name, "ns_per_coordinate_step": round(ns, 1),
                         "vs_builtin_adam": round(ns / adam, 2)})
    return rows
