"""A problem's parameter structure: the named tensors whose flattened concatenation is x.

The engine, the escape measures and the rows see one flat x [R, d] per cell (R runs); optimizers
that act on matrices (Muon's orthogonalisation, Shampoo's two-sided preconditioner, Adafactor's
factored second moments, LAMB's per-tensor trust ratio) see it in its shapes: matrix
factorisation's U [n, r], a deep linear network's W₁ … W_L, an MLP's weights and biases.

    class DeepLinear(FiniteSum):
        def __init__(...):
            self.shapes = (Shape("W1", (p, h)), Shape("W2", (h, q)))

`structure(problem)` is a problem's declared shapes, or one vector `x` [d] where it declares none;
`split(x, shapes)` gives views [R, *shape] of x's columns (writing into a view writes into x), and
`flat(tensors)` is their concatenation [R, d] back. Row-major flattening: x = (vec W₁, vec W₂, …)
with vec the C-order reshape.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch


class Shape(NamedTuple):
    """One named tensor of the parameter: its name (for labels and optimizer groups) and shape."""
    name: str
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def structure(problem) -> tuple[Shape, ...]:
    """The problem's declared shapes (checked to cover exactly its dim), or (Shape("x", (d,)),).

    Raises ValueError when the declared sizes do not add up to the problem's dimension or a name
    repeats."""
    declared = getattr(problem, "shapes", None)
    if not declared:
        return (Shape("x", (int(problem.dim),)),)
    shapes = tuple(Shape(str(name), tuple(int(n) for n in shape)) for name, shape in declared)
    total = sum(s.size for s in shapes)
    if total != problem.dim or len({s.name for s in shapes}) != len(shapes) or any(
            n < 1 for s in shapes for n in s.shape):
        raise ValueError(f"problem {problem.name}: shapes {format_shapes(shapes)} hold {total} numbers "
                         f"(names {[s.name for s in shapes]}); allowed: distinct names and positive sizes "
                         f"adding up to dim={problem.dim}")
    return shapes


def split(x: torch.Tensor, shapes: tuple[Shape, ...]) -> list[torch.Tensor]:
    """Views [R, *shape] of x [R, d], one per declared tensor, in order."""
    views, start = [], 0
    for s in shapes:
        views.append(x[:, start:start + s.size].view(x.shape[0], *s.shape))
        start += s.size
    return views


def flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """[R, d]: the per-tensor [R, *shape] flattened and concatenated (split's inverse)."""
    return torch.cat([t.reshape(t.shape[0], -1) for t in tensors], dim=1)


def format_shapes(shapes) -> str:
    """`U [10, 2]; b [4]`: what the README and `saddlescape validate` print."""
    return "; ".join(f"{name} [{', '.join(map(str, shape))}]" for name, shape in shapes)


def is_matrix(shape: Shape) -> bool:
    return len(shape.shape) == 2
