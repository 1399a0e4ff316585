"""AMSGrad (Reddi, Kale & Kumar 2018), as torch.optim.Adam(amsgrad=True) computes it:

    m ← β₁ m + (1 − β₁) g,   v ← β₂ v + (1 − β₂) g²,   v̂ ← max(v̂, v)
    A_t = diag(√(v̂ / (1 − β₂ᵗ)) + ε)⁻¹                the preconditioner never grows
    x ← x − η A_t m / (1 − β₁ᵗ)

Adam whose preconditioner is monotone: a stale large gradient keeps the steps small for good,
where Adam forgets it after ~1/(1 − β₂) steps (docs/theory.md, the lag theory).
"""
from .adam import SCHEMA as ADAM_SCHEMA
from .adam import adam_family
from .base import Optimizer

NAME = "amsgrad"
SCHEMA = dict(ADAM_SCHEMA)


def build(hp: dict, problem=None) -> Optimizer:
    return adam_family(hp, amsgrad=True)
