"""How cells are grouped into Ray Tune trials.

Tune costs about 0.3 s per trial here (reuse_actors), so a trial must carry seconds of work.
Budgets are only upper bounds on a cell's steps (most cells stop early, when every seed has
escaped), so pack sizes are not derived from cost estimates alone: a sweep gets a few packs per
worker (few trials, so little overhead) and more only when the estimated work is large (so a
lost trial costs little and a cluster can balance). Packs are balanced by estimated cost,
longest first (LPT), and a pack runs its cells in order, writing each as it finishes.
"""
from __future__ import annotations

import heapq
import math

from .core.saddles import SYNTHETIC_SADDLES
from .registry import REGISTRIES

PACKS_PER_WORKER = 4
SECONDS_PER_PACK = 120.0
# Rough costs of the engine on one core: per step (Python and op dispatch) and per
# coordinate-step (memory traffic and noise). Used only to balance packs.
STEP_SECONDS = 40e-6
COORDINATE_STEP_SECONDS = 3e-9


# What the per-step costs were measured on: the built-in optimizers on the synthetic saddles.
# Elsewhere a step costs many times more, and the estimate says so (workflows/estimate.py): other
# problems' gradients (the study's logistic_regression cells took up to 453x their estimate,
# mlp_teacher_student 388x, matrix_factorization 38x), SOSP checks (up to 14x), and optimizers
# that are not built in (pytorch_optimizer.Prodigy, stepped per seed, 256 seeds: 43x).
MODELLED_PROBLEMS = SYNTHETIC_SADDLES


def unmodelled_kinds(cell: dict) -> list[str]:
    """What in this cell's step estimated_seconds does not model (see MODELLED_PROBLEMS): the
    problem (with "with SOSP checks" where it has them) and an optimizer that is not built in;
    empty when the estimate models the cell."""
    problem, optimizer = cell["problem"]["name"], cell["optimizer"]["name"]
    kinds = []
    if problem not in MODELLED_PROBLEMS or cell.get("sosp_epsilon"):
        kinds.append(problem + (" with SOSP checks" if cell.get("sosp_epsilon") else ""))
    if optimizer not in REGISTRIES["optimizer"].builtins():
        kinds.append(optimizer)
    return kinds


def estimated_seconds(cell: dict) -> float:
    dim = cell["problem"].get("dim", 2)
    per_step = STEP_SECONDS + COORDINATE_STEP_SECONDS * cell["seeds"] * dim
    if cell["optimizer"]["name"] in ("adaptive_full", "adagrad_full") or cell["optimizer"].get("form") == "full":
        per_step += COORDINATE_STEP_SECONDS * cell["seeds"] * dim**3 * 10   # a batched eigh per step
    return cell["budget"] * per_step


def pack_cells(cells: list[dict], workers: int) -> list[list[dict]]:
    if not cells:
        return []
    costs = [estimated_seconds(c) for c in cells]
    wanted = max(PACKS_PER_WORKER * workers, math.ceil(sum(costs) / SECONDS_PER_PACK))
    packs = longest_first(costs, min(len(cells), wanted))
    return [[cells[i] for i in pack] for pack in packs if pack]


def longest_first(costs: list[float], bins: int) -> list[list[int]]:
    """Longest processing time first (Graham 1969): the items by decreasing cost, each onto the
    least loaded of `bins`; the indices in each bin. The packs of a sweep and the wall time of
    its estimate (workflows/estimate.py) both come from here."""
    heap = [(0.0, b) for b in range(max(1, bins))]
    out: list[list[int]] = [[] for _ in heap]
    for index in sorted(range(len(costs)), key=lambda i: -costs[i]):
        load, which = heapq.heappop(heap)
        out[which].append(index)
        heapq.heappush(heap, (load + costs[index], which))
    return out
