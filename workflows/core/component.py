"""What a name in a sweep file stands for, as plain data: a problem or an optimizer, with its
parameters' schema and a factory (workflows/registry.py resolves names to these).

    problem:    factory(params, generator, dtype, device) -> Problem
    optimizer:  factory(hp, problem) -> Optimizer (optax-style init/update, optimizers/base.py)

Every optimizer also takes a step-size schedule (schedules.py): its schema is its own
parameters and the schedule's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .params import Param, resolve
from .schedules import SCHEDULE_SCHEMA, canonical


class MissingExtra(ValueError):
    """A name whose package is an optional extra that is not installed (one line, as any lookup
    error); `extra` names the extra (`pip install -e '.[<extra>]'`)."""

    def __init__(self, message: str, extra: str):
        super().__init__(message)
        self.extra = extra


@dataclass(frozen=True)
class Component:
    kind: str                                   # "problem" or "optimizer"
    name: str                                   # what a sweep writes as <kind>.name
    schema: Mapping[str, Param]                 # every parameter, with its default and range
    factory: Callable[..., Any]                 # builds the problem / the optimizer
    validate_params: Callable[[dict], dict] | None = None   # defaults + checks; default: resolve(schema)
    origin: str = "built-in"                    # built-in, plugin <distribution> <version>, adapter, this process
    doc: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)  # origin-specific facts (the adapter's mode, ...)

    def __post_init__(self):
        # Every optimizer also takes a step-size schedule (workflows/core/schedules.py): its schema is
        # its own parameters and the schedule's, where a name is not its own already (schedulefree
        # classes have a warmup_steps of their own: the name is theirs).
        own = dict(self.schema)
        object.__setattr__(self, "own_schema", own)
        if self.kind == "optimizer":
            object.__setattr__(self, "schema", {**own, **{k: p for k, p in SCHEDULE_SCHEMA.items() if k not in own}})

    def validate(self, params: dict) -> dict:
        """{parameter: value} with every default filled in and every value checked, in schema order."""
        owner = f"{self.kind} {self.name}"
        schedule = {k: p for k, p in self.schema.items() if k not in self.own_schema}
        own = {k: v for k, v in params.items() if k not in schedule}
        out = self.validate_params(own) if self.validate_params is not None else resolve(owner, self.own_schema, own)
        if not schedule:
            return out
        timing = resolve(owner, schedule, {k: v for k, v in params.items() if k in schedule})
        if timing.get("beta2_rule", "none") != "none" and "beta2" not in out:
            raise ValueError(f"{owner}: beta2_rule={timing['beta2_rule']!r} is not allowed: it sets a beta2 this "
                             "optimizer does not have; allowed: none (the rule serves rmsprop, adam, amsgrad, "
                             "adaptive_full)")
        return canonical({**out, **timing})
