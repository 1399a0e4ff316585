"""Step-size schedules η_t, and the β₂ rule that follows them, for every optimizer.

Every optimizer (built-in, torch.optim class through the adapter, plugin) takes these
hyperparameters besides its own; `lr` is then the schedule's η₁, the step size of step 1:

    lr_schedule     η_t for t = 1, 2, …, budget
    constant        lr                                          (the default)
    inverse_sqrt    lr / √t                                     (Staib et al.'s Experiment 2)
    cosine          final_lr + (lr − final_lr)(1 + cos(π (t − 1)/(budget − 1)))/2: lr at step 1,
                    final_lr at the budget (torch's CosineAnnealingLR with T_max = budget − 1)
    linear_warmup   lr · min(1, t / warmup_steps)              (LinearLR from 1/warmup_steps)
    step            lr · decay_factor^⌊(t − 1)/decay_every⌋    (StepLR)

    beta2_rule      paper: β₂_t = 1 − η_t^(2/3) at every step, Staib et al.'s rule evaluated where
                    it was derived (the moving average tracks E[ggᵀ] at the current step size);
                    none: β₂ as given. Under a constant step the rule is one fixed β₂, which the
                    sweep resolves once (beta2 = 1 − lr^(2/3)), so beta2_rule is then `none`.

The engine sets hp["lr"] (and hp["beta2"]) before every step where a schedule is on;
optimizers read their hyperparameters when they update (optimizers/base.py). Parameters that a
cell's schedule does not use are reset to their defaults (`canonical`), so that two spellings of
the same experiment get the same cell id; all of them enter a cell's hash only away from their
defaults (cells stored before schedules existed keep their ids).
"""
from __future__ import annotations

import math

import numpy as np

from .params import Param, at_least, choice, non_negative

SCHEDULES = ("constant", "inverse_sqrt", "cosine", "linear_warmup", "step")
SCHEDULE_SCHEMA: dict[str, Param] = {
    "lr_schedule": choice("constant", *SCHEDULES, hashed_at_default=False,
                          doc="the step size η_t of step t (lr is η₁)"),
    "final_lr": Param(0.0, float, ">= 0", non_negative, "cosine: η at the budget", hashed_at_default=False,
                      applies=("lr_schedule", "cosine")),
    "warmup_steps": Param(1, int, ">= 1", at_least(1), "linear_warmup: steps to reach lr", hashed_at_default=False,
                          applies=("lr_schedule", "linear_warmup")),
    "decay_factor": Param(0.1, float, "in (0, 1]", lambda v: 0 < v <= 1, "step: η is multiplied by this ...",
                          hashed_at_default=False, applies=("lr_schedule", "step")),
    "decay_every": Param(1000, int, ">= 1", at_least(1), "step: ... every decay_every steps", hashed_at_default=False,
                         applies=("lr_schedule", "step")),
    "beta2_rule": choice("none", "none", "paper", hashed_at_default=False,
                         doc="paper: β₂_t = 1 − η_t^(2/3) at every step (under a schedule)",
                         applies=("lr_schedule", *(s for s in SCHEDULES if s != "constant"))),
}
# The parameters each schedule reads (their Param.applies); the others are reset to their defaults.
USES = {schedule: tuple(k for k, p in SCHEDULE_SCHEMA.items() if k != "beta2_rule" and schedule in p.applies[1:])
        for schedule in SCHEDULES}


def canonical(hp: dict) -> dict:
    """hp with the schedule parameters its schedule does not read at their defaults, and the β₂
    rule off under a constant step (where it is just the one β₂ already in hp)."""
    schedule = hp.get("lr_schedule", "constant")
    out = dict(hp)
    for key in ("final_lr", "warmup_steps", "decay_factor", "decay_every"):
        if key in out and key not in USES[schedule]:
            out[key] = SCHEDULE_SCHEMA[key].default
    if schedule == "constant" and "beta2_rule" in out:
        out["beta2_rule"] = "none"
    return out


def is_scheduled(hp: dict) -> bool:
    return hp.get("lr_schedule", "constant") != "constant"


def learning_rates(hp: dict, steps: np.ndarray, budget: int) -> np.ndarray:
    """η_t for the 1-based steps t (float64 array)."""
    t = np.asarray(steps, dtype=np.float64)
    lr, schedule = hp["lr"], hp.get("lr_schedule", "constant")
    if schedule == "constant":
        return np.full_like(t, lr)
    if schedule == "inverse_sqrt":
        return lr / np.sqrt(t)
    if schedule == "cosine":
        span = max(budget - 1, 1)
        final = hp["final_lr"]
        return final + (lr - final) * (1 + np.cos(math.pi * np.minimum(t - 1, span) / span)) / 2
    if schedule == "linear_warmup":
        return lr * np.minimum(1.0, t / hp["warmup_steps"])
    if schedule == "step":
        return lr * hp["decay_factor"] ** np.floor((t - 1) / hp["decay_every"])
    raise ValueError(f"optimizer: lr_schedule={schedule!r} is not known; allowed: {', '.join(SCHEDULES)}")


def paper_beta2(lr):
    """Staib et al.'s rule β₂ = 1 − η^(2/3)."""
    return 1 - np.asarray(lr, dtype=np.float64) ** (2 / 3)


def beta2s(hp: dict, lrs: np.ndarray) -> np.ndarray:
    """β₂_t for the steps whose step sizes are `lrs`: the rule's where it is on, else hp's β₂."""
    if hp.get("beta2_rule", "none") == "paper":
        return paper_beta2(lrs)
    return np.full_like(np.asarray(lrs, dtype=np.float64), hp.get("beta2", 0.0))


class Schedule:
    """Sets hp's scheduled values before each step of the reference loop (the compiled block reads
    `learning_rates`/`beta2s` for a whole block at once)."""

    def __init__(self, hp: dict, budget: int):
        self.hp, self.base, self.budget = hp, dict(hp), budget      # base: lr is η₁
        self.on = is_scheduled(hp)
        self.rule = hp.get("beta2_rule", "none") == "paper"

    def set_step(self, t: int):
        if not self.on:
            return
        lr = float(learning_rates(self.base, np.array([t]), self.budget)[0])
        self.hp["lr"] = lr
        if self.rule:
            self.hp["beta2"] = float(paper_beta2(lr))

    def block(self, t0: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """(η_t, β₂_t) for steps t0+1 … t0+steps."""
        lrs = learning_rates(self.base, np.arange(t0 + 1, t0 + steps + 1), self.budget)
        return lrs, beta2s(self.base, lrs)
