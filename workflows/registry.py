"""One registry for problems and optimizers: what a name in a sweep file means.

A component is plain data, whatever its origin:

    Component(kind, name, schema, factory, validate, origin, doc)

    problem:    factory(params, generator, dtype, device) -> Problem
    optimizer:  factory(hp, problem) -> Optimizer (optax-style init/update, optimizers/base.py)

Where names come from, in the order they are looked up:

1. built-ins: the classes of problems/ and the modules of optimizers/;
2. this process's registrations, `register_problem` / `register_optimizer` (a notebook's own
   optimizer or problem); the Ray runner ships them to its workers with the cells;
3. plugins: entry points of the groups `saddlescape.problems` and `saddlescape.optimizers`
   (importlib.metadata), found the same way on the driver and on every Ray worker;
4. optimizers only: a dotted class path, `torch.optim.NAdam` or `pytorch_optimizer.Lion`, turned
   into a component by the torch.optim adapter (optimizers/torch_adapter.py). Only modules on an
   allow-list may be named (torch.optim, the ecosystem packages of the `optimizers` extra, and
   modules a plugin declares): a sweep file never imports arbitrary code.

Every lookup error is one line naming the key, the value and what is allowed.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .params import Param, resolve

KINDS = ("problem", "optimizer")
ENTRY_POINT_GROUPS = {"problem": "saddlescape.problems", "optimizer": "saddlescape.optimizers"}
# Modules whose torch.optim.Optimizer subclasses a sweep may name by their dotted path. Plugins
# add theirs (an entry point of the optimizers group whose value is a module).
ADAPTABLE_MODULES = ("torch.optim", "pytorch_optimizer", "schedulefree")


@dataclass(frozen=True)
class Component:
    kind: str                                   # "problem" or "optimizer"
    name: str                                   # what a sweep writes as <kind>.name
    schema: Mapping[str, Param]                 # every parameter, with its default and range
    factory: Callable[..., Any]                 # builds the problem / the optimizer
    validate_params: Callable[[dict], dict] | None = None   # defaults + checks; default: resolve(schema)
    origin: str = "built-in"                    # built-in, plugin <distribution>, adapter, this process
    doc: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)  # origin-specific facts (the adapter's mode, ...)

    def validate(self, params: dict) -> dict:
        """{parameter: value} with every default filled in and every value checked, in schema order."""
        if self.validate_params is not None:
            return self.validate_params(params)
        return resolve(f"{self.kind} {self.name}", self.schema, params)


def problem_component(cls, origin: str = "built-in") -> Component:
    """A Problem subclass (problems/base.py) as a component."""
    return Component("problem", cls.name, cls.SCHEMA, cls, cls.validate, origin,
                     (cls.__doc__ or "").strip().split("\n")[0])


def optimizer_component(module, origin: str = "built-in") -> Component:
    """An optimizer module (NAME, SCHEMA, build(hp, problem)) as a component."""
    return Component("optimizer", module.NAME, module.SCHEMA, module.build, None, origin,
                     (module.__doc__ or "").strip().split("\n")[0])


class Registry:
    """The components of one kind. Built-ins and plugins load on first use (plugins once per
    process, `refresh()` to look again); dotted optimizer names resolve through the adapter."""

    def __init__(self, kind: str):
        self.kind = kind
        self._builtins: dict[str, Component] | None = None
        self._local: dict[str, Component] = {}
        self._plugins: dict[str, Component] | None = None
        self._plugin_errors: dict[str, str] = {}
        self._adapted: dict[str, Component] = {}
        self._lock = threading.RLock()

    # --- what is registered ------------------------------------------------------------------
    def builtins(self) -> dict[str, Component]:
        if self._builtins is None:
            if self.kind == "problem":
                from problems import BUILTIN_PROBLEMS
                self._builtins = {c.name: problem_component(c) for c in BUILTIN_PROBLEMS}
            else:
                from optimizers import BUILTIN_OPTIMIZERS
                self._builtins = {m.NAME: optimizer_component(m) for m in BUILTIN_OPTIMIZERS}
        return self._builtins

    def plugins(self) -> dict[str, Component]:
        with self._lock:
            if self._plugins is None:
                self._plugins, self._plugin_errors = _load_plugins(self.kind)
            return self._plugins

    def registered(self) -> dict[str, Component]:
        """Every named component (built-ins, this process's, plugins), built-ins first."""
        return {**self.plugins(), **self._local, **self.builtins()}

    def names(self) -> list[str]:
        return list(self.registered())

    def plugin_errors(self) -> dict[str, str]:
        self.plugins()
        return dict(self._plugin_errors)

    def refresh(self):
        """Look for plugins again (after installing one into this process's environment)."""
        with self._lock:
            self._plugins = None
            self._adapted.clear()

    # --- registration --------------------------------------------------------------------------
    def register(self, component: Component) -> Component:
        if component.kind != self.kind:
            raise ValueError(f"register: {component.name!r} is a {component.kind}; allowed: a {self.kind}")
        if component.name in self.builtins():
            raise ValueError(f"{self.kind}.name={component.name!r} is a built-in {self.kind}; allowed: a new name")
        self._local[component.name] = component
        return component

    def local(self) -> dict[str, Component]:
        """This process's registrations (what the Ray runner ships to its workers)."""
        return dict(self._local)

    def adopt(self, components: dict[str, Component]):
        """A worker takes the driver's registrations."""
        self._local.update(components)

    # --- lookup ----------------------------------------------------------------------------------
    def get(self, name) -> Component:
        if not isinstance(name, str):
            raise ValueError(f"{self.kind}.name={name!r} is not a name; allowed: {self._allowed()}")
        found = self.registered().get(name)
        if found is not None:
            return found
        if self.kind == "optimizer" and "." in name:
            with self._lock:
                if name not in self._adapted:
                    from optimizers.torch_adapter import adapt
                    self._adapted[name] = adapt(name, self.adaptable_modules())
                return self._adapted[name]
        raise ValueError(f"{self.kind}.name={name!r} is not a known {self.kind}; allowed: {self._allowed()}")

    def adaptable_modules(self) -> tuple[str, ...]:
        declared = tuple(c.extra["module"] for c in self.plugins().values() if "module" in c.extra)
        return ADAPTABLE_MODULES + declared

    def _allowed(self) -> str:
        names = ", ".join(self.names())
        if self.kind == "optimizer":
            names += (", or a torch.optim.Optimizer class by its path in "
                      + ", ".join(self.adaptable_modules()) + " (e.g. torch.optim.NAdam)")
        return names


def _load_plugins(kind: str) -> tuple[dict[str, Component], dict[str, str]]:
    """Entry points of the kind's group. A problem plugin names a Problem subclass; an optimizer
    plugin names a module with NAME/SCHEMA/build (an optimizer of saddlescape's own shape), a
    torch.optim.Optimizer subclass (stepped by the adapter), or a module of such classes (its
    path then becomes nameable: `<module>.<Class>`). A plugin that fails to load is reported by
    `saddlescape validate`, never a crash."""
    found, errors = {}, {}
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUPS[kind]):
        origin = f"plugin {entry.dist.name if entry.dist else entry.value}"
        try:
            target = entry.load()
            found[entry.name] = _plugin_component(kind, entry.name, target, origin)
        except Exception as error:                     # noqa: BLE001 - reported, not fatal
            errors[entry.name] = f"{entry.value}: {type(error).__name__}: {error}"
    return found, errors


def _plugin_component(kind: str, name: str, target, origin: str) -> Component:
    import inspect

    if kind == "problem":
        from problems.base import Problem
        if inspect.isclass(target) and issubclass(target, Problem):
            if target.name != name:
                raise ValueError(f"the class's name is {target.name!r}, the entry point's {name!r}")
            return problem_component(target, origin)
        raise TypeError("allowed: a subclass of problems.base.Problem")
    if inspect.ismodule(target) and all(hasattr(target, a) for a in ("NAME", "SCHEMA", "build")):
        if target.NAME != name:
            raise ValueError(f"the module's NAME is {target.NAME!r}, the entry point's {name!r}")
        return optimizer_component(target, origin)
    if inspect.ismodule(target):            # a module of torch.optim.Optimizer classes
        return Component("optimizer", name, {}, None, None, origin, f"module {target.__name__}",
                         {"module": target.__name__})
    from optimizers.torch_adapter import adapt_class
    return adapt_class(name, target, origin)


REGISTRIES = {kind: Registry(kind) for kind in KINDS}


def registry(kind: str) -> Registry:
    return REGISTRIES[kind]


def get_problem(name) -> Component:
    return REGISTRIES["problem"].get(name)


def get_optimizer(name) -> Component:
    return REGISTRIES["optimizer"].get(name)


def register_problem(cls) -> Component:
    """Register a Problem subclass (or a problem built by problems.from_loss) in this process;
    sweeps run from this process may then name it, on the local backend and through Ray."""
    return REGISTRIES["problem"].register(problem_component(cls, "registered in this process"))


def register_optimizer(module_or_class, name: str | None = None) -> Component:
    """Register an optimizer in this process: a module (or any object) with NAME, SCHEMA and
    build(hp, problem), or a torch.optim.Optimizer subclass (stepped by the adapter, under
    `name`, default the class's name)."""
    import inspect

    origin = "registered in this process"
    if all(hasattr(module_or_class, a) for a in ("NAME", "SCHEMA", "build")):
        return REGISTRIES["optimizer"].register(optimizer_component(module_or_class, origin))
    if inspect.isclass(module_or_class):
        from optimizers.torch_adapter import adapt_class
        return REGISTRIES["optimizer"].register(adapt_class(name or module_or_class.__name__, module_or_class,
                                                            origin))
    raise TypeError("register_optimizer: allowed: a module with NAME, SCHEMA and build, or a "
                    "torch.optim.Optimizer subclass")


def local_registrations() -> dict[str, dict[str, Component]]:
    return {kind: REGISTRIES[kind].local() for kind in KINDS}


def adopt_registrations(registrations: dict[str, dict[str, Component]] | None):
    for kind, components in (registrations or {}).items():
        REGISTRIES[kind].adopt(components)


def unregister(kind: str, name: str):
    """Forget one of this process's registrations (tests, notebooks that redefine one)."""
    REGISTRIES[kind]._local.pop(name, None)
