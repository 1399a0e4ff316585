"""The run settings of a cell: everything besides its problem and its optimizer.

Torch-free, so that the row schema (workflows/core/rows.py) and the analysis can read it.
"""
from __future__ import annotations

from .params import Param, at_least, choice, non_negative, positive

RUN_SCHEMA = {
    "seeds": Param(256, int, ">= 1", at_least(1), "independent runs, simulated as one batch"),
    "seed": Param(0, int, ">= 0", non_negative, "fixes the problem's randomness and the noise stream"),
    "budget": Param(10_000, int, ">= 1", at_least(1), "steps; runs not escaped by then are censored"),
    "start_offset": Param(0.0, float, ">= 0", non_negative,
                          "start at distance start_offset from the saddle, in a random direction"),
    "run_to_budget": Param(False, bool, "true or false",
                           doc="keep escaped runs going to the budget (post-escape behaviour)",
                           applies=("run_to_budget",)),
    "trace_points": Param(0, int, ">= 0", non_negative,
                          "record every run's loss at this many log-spaced steps; 0: no trace",
                          applies=("trace_points",)),
    "tail_steps": Param(0, int, ">= 0", non_negative,
                        "loss statistics over the last tail_steps steps (the neighbourhood reached)",
                        applies=("tail_steps",)),
    "divergence_radius": Param(1e6, float, "> 0", positive,
                               "a run farther than this from the saddle (or non-finite) has diverged"),
    "dtype": choice("float32", "float32", "float64"),
    "sosp_epsilon": Param(0.0, float, ">= 0", non_negative,
                          "track the first (ε, √(ρε))-second-order stationary point, ‖∇f‖ ≤ ε and "
                          "λ_min(∇²f) ≥ −√(ρε); 0: off", hashed_at_default=False,
                          applies=("sosp_epsilon",)),
    "sosp_rho": Param(1.0, float, "> 0", positive, "ρ, the Hessian-Lipschitz constant in √(ρε)",
                      hashed_at_default=False, applies=("sosp_epsilon",)),
    "sosp_every": Param(10, int, ">= 1", at_least(1), "test for the SOSP every k steps (and at step 0)",
                        hashed_at_default=False, applies=("sosp_epsilon",)),
    "sosp_method": choice("auto", "auto", "exact", "lanczos",
                          doc="λ_min by a dense eigvalsh (exact), Lanczos on Hessian-vector products, "
                              "or exact up to d = 64 (auto)", hashed_at_default=False, applies=("sosp_epsilon",)),
    "cnc_samples": Param(4096, int, ">= 0", non_negative,
                         "stochastic gradients at the saddle for cnc_constant = E[(vᵀg)²]; 0: off",
                         hashed_at_default=False, applies=("cnc_samples",)),
    "gap_epsilon": Param(0.0, float, ">= 0", non_negative,
                         "record the first step with f − f_min ≤ gap_epsilon (the problem must know f_min); a "
                         "run then finishes only once it has also reached it; 0: off", hashed_at_default=False,
                         applies=("gap_epsilon",)),
    "tracking_error": Param(False, bool, "true or false",
                            doc="record the preconditioner's tracking error ‖v_t − E[g²|x_t]‖ / ‖E[g²|x_t]‖ per "
                                "run (diagonal adaptive optimizers on quadratic_saddle or staib_toy)",
                            hashed_at_default=False, applies=("tracking_error",)),
    "inject_fault": choice("none", "none", "raise",
                           doc="testing only: raise inside the engine after the first block",
                           applies=("inject_fault",)),
}
