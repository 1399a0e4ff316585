"""The synthetic saddles: the problems whose Hessian and gradient noise are given in closed form
(problems/quadratic_saddle.py, problems/staib_toy.py), not estimated from data. What that allows
is read from here: the engine's compiled block and the preconditioner's tracking error
(workflows/kernels.py, workflows/cell.py), the time estimate's per-step costs (workflows/packing.py)
and the analysis's closed forms (analysis/prediction.py, analysis/lag_cells.py)."""
SYNTHETIC_SADDLES = ("quadratic_saddle", "staib_toy")
