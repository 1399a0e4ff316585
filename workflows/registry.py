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

Plugins load lazily, one entry point at a time: a sweep that names only built-ins imports no
plugin, and a plugin that fails to load is recorded (`plugin_errors`, `saddlescape validate`)
and fails only the sweeps that name it. A name not found is looked for again after rescanning
the installed distributions, so a plugin installed while the process runs (a long-lived Ray
worker, a notebook) is found without a restart.

Every lookup error is one line naming the key, the value and what is allowed.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import threading
from dataclasses import dataclass

import torch

from optimizers import BUILTIN_OPTIMIZERS
from optimizers.base import Optimizer
from optimizers.torch_adapter import adapt, adapt_class, optimizer_classes
from problems import BUILTIN_PROBLEMS
from problems.base import Problem

from .core.component import Component
from .core.params import conditions

KINDS = ("problem", "optimizer")
ENTRY_POINT_GROUPS = {"problem": "saddlescape.problems", "optimizer": "saddlescape.optimizers"}
# Modules whose torch.optim.Optimizer subclasses a sweep may name by their dotted path. Plugins
# add theirs (an entry point of the optimizers group whose value is a module of such classes).
ADAPTABLE_MODULES = ("torch.optim", "pytorch_optimizer", "schedulefree")
THIS_PROCESS = "registered in this process"


def problem_component(cls, origin: str = "built-in") -> Component:
    """A Problem subclass (problems/base.py; problems/from_loss.py makes them from a loss) as a
    component. Raises TypeError for anything else."""
    if not (inspect.isclass(cls) and issubclass(cls, Problem) and isinstance(cls.name, str) and cls.name):
        raise TypeError(f"{cls!r} is not a problem; allowed: a subclass of problems.base.Problem with a name "
                        "(problems.from_loss.define_problem makes one from a loss function)")
    return Component("problem", cls.name, cls.SCHEMA, cls, cls.validate, origin, _first_line(cls.__doc__))


def optimizer_component(module, origin: str = "built-in") -> Component:
    """An optimizer of saddlescape's own shape (a module, or any object, with NAME, SCHEMA and
    build(hp, problem)) as a component."""
    return Component("optimizer", module.NAME, module.SCHEMA, module.build, None, origin,
                     _first_line(module.__doc__))


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n")[0]


def _is_own_optimizer(target) -> bool:
    return all(hasattr(target, a) for a in ("NAME", "SCHEMA", "build"))


@dataclass(frozen=True)
class PluginModule:
    """An optimizer plugin whose entry point names a module of torch.optim.Optimizer classes:
    `<module>.<Class>` becomes nameable (through the adapter); the entry point's name itself is not."""
    name: str
    module: str
    origin: str


class Registry:
    """The components of one kind: built-ins, this process's registrations, plugins (loaded on
    first use, one entry point at a time) and, for optimizers, dotted class paths."""

    def __init__(self, kind: str):
        self.kind = kind
        self._builtins: dict[str, Component] | None = None
        self._local: dict[str, Component] = {}
        self._entries: dict[str, list] | None = None        # entry-point name -> its EntryPoints
        self._plugins: dict[str, Component | PluginModule] = {}
        self._plugin_errors: dict[str, str] = {}
        self._adapted: dict[str, Component] = {}
        self._lock = threading.RLock()

    # --- what is registered ------------------------------------------------------------------
    def builtins(self) -> dict[str, Component]:
        if self._builtins is None:
            if self.kind == "problem":
                self._builtins = {c.name: problem_component(c) for c in BUILTIN_PROBLEMS}
            else:
                self._builtins = {m.NAME: optimizer_component(m) for m in BUILTIN_OPTIMIZERS}
        return self._builtins

    def plugins(self) -> dict[str, Component]:
        """Every plugin component installed now (the entry points looked for again, as `get` does
        for a name it does not know, and all loaded; those that fail are in plugin_errors)."""
        with self._lock:
            for name in self._scan(rescan=True):
                self._load(name)
            return {n: c for n, c in self._plugins.items() if isinstance(c, Component)}

    def plugin_modules(self) -> dict[str, PluginModule]:
        """The optimizer plugins that declare a module of optimizer classes. Only entry points
        that name a module (no `:attribute`) are loaded to find them."""
        with self._lock:
            for name, entries in self._scan().items():
                if all(e.attr is None for e in entries):
                    self._load(name)
            return {n: c for n, c in self._plugins.items() if isinstance(c, PluginModule)}

    def registered(self) -> dict[str, Component]:
        """Every named component, built-ins first: built-ins, this process's registrations, the
        class paths adapted so far in this process, plugins. A plugin never shadows a built-in
        (that is an error of the plugin's); a registration in this process shadows a plugin."""
        out = dict(self.builtins())
        for source in (self._local, self._adapted, self.plugins()):
            for name, component in source.items():
                out.setdefault(name, component)
        return out

    def names(self) -> list[str]:
        return list(self.registered())

    def plugin_errors(self) -> dict[str, str]:
        self.plugins()
        return dict(self._plugin_errors)

    def refresh(self):
        """Look for plugins again (after installing or removing one in this process's environment)."""
        with self._lock:
            self._entries = None
            self._plugins.clear()
            self._plugin_errors.clear()
            self._adapted.clear()

    # --- registration --------------------------------------------------------------------------
    def register(self, component: Component) -> Component:
        if component.kind != self.kind:
            raise ValueError(f"register: {component.name!r} is a {component.kind}; allowed: a {self.kind}")
        if not (isinstance(component.name, str) and component.name):
            raise ValueError(f"register: {self.kind} name {component.name!r} is not allowed; allowed: a non-empty string")
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
        found = self.builtins().get(name) or self._local.get(name) or self._adapted.get(name)
        if found is not None:
            return found
        with self._lock:
            for rescan in (False, True):             # a plugin installed since the last scan
                if name in self._scan(rescan):
                    return self._plugin(name)
                if self.kind == "optimizer" and "." in name and self._allows(name):
                    break
            if self.kind == "optimizer" and "." in name:
                self._adapted[name] = adapt(name, self.adaptable_modules())
                return self._adapted[name]
        raise ValueError(f"{self.kind}.name={name!r} is not a known {self.kind}; allowed: {self._allowed()}")

    def adaptable_modules(self) -> tuple[str, ...]:
        return ADAPTABLE_MODULES + tuple(m.module for m in self.plugin_modules().values())

    def _allows(self, name: str) -> bool:
        return name.rpartition(".")[0] in self.adaptable_modules()

    def _allowed(self) -> str:
        names = ", ".join(n for n in self.names() if n not in self._adapted)
        if self.kind == "optimizer":
            names += (", or a torch.optim.Optimizer class by its path in "
                      + ", ".join(self.adaptable_modules()) + " (e.g. torch.optim.NAdam)")
        return names

    # --- plugins -----------------------------------------------------------------------------------
    def _scan(self, rescan: bool = False) -> dict[str, list]:
        """The group's entry points by name (importlib.metadata), rescanned on request: import
        caches are invalidated first so that a distribution added since is seen."""
        if self._entries is None or rescan:
            if rescan:
                importlib.invalidate_caches()
            entries: dict[str, list] = {}
            for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUPS[self.kind]):
                known = entries.setdefault(entry.name, [])
                if all(_distribution(e) != _distribution(entry) for e in known):   # a dist seen twice on the path
                    known.append(entry)
            self._entries = entries
            for name in [n for n in self._plugin_errors if n not in entries]:
                del self._plugin_errors[name]               # uninstalled since
        return self._entries

    def _plugin(self, name: str) -> Component:
        loaded = self._load(name)
        if isinstance(loaded, Component):
            return loaded
        if isinstance(loaded, PluginModule):
            raise ValueError(f"{self.kind}.name={name!r} is a plugin module of optimizer classes ({loaded.origin}); "
                             f"allowed: one of its classes, {loaded.module}.<Class>")
        raise ValueError(f"{self.kind}.name={name!r} is a plugin that failed to load "
                         f"({self._plugin_errors[name]}); allowed: fix or uninstall the plugin, or "
                         f"{self._allowed()}")

    def _load(self, name: str) -> Component | PluginModule | None:
        """One entry point, loaded once per scan; its error (one line) recorded, never raised."""
        if name in self._plugins or name in self._plugin_errors:
            return self._plugins.get(name)
        entries = self._entries.get(name, [])
        try:
            if len(entries) > 1:
                raise ValueError("declared by " + " and by ".join(f"{_distribution(e)} ({e.value})" for e in entries)
                                 + "; allowed: one distribution per name")
            entry, = entries
            if name in self.builtins():
                raise ValueError(f"the name of a built-in {self.kind}; allowed: another name")
            self._plugins[name] = _plugin_component(self.kind, name, entry.load(), _origin(entry))
        except Exception as error:                     # noqa: BLE001 - reported, not fatal
            where = entries[0].value if len(entries) == 1 else f"{len(entries)} entry points"
            message = (str(error).strip().splitlines() or [""])[0]
            self._plugin_errors[name] = f"{where}: {type(error).__name__}: {message}"
        return self._plugins.get(name)


def _distribution(entry) -> str:
    dist = getattr(entry, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "(unknown distribution)"


def _origin(entry) -> str:
    return f"plugin {_distribution(entry)}"


def _plugin_component(kind: str, name: str, target, origin: str) -> Component | PluginModule:
    """What a plugin's entry point names. Problems: a Problem subclass (its name that of the entry
    point). Optimizers: an object with NAME/SCHEMA/build (saddlescape's own shape), a
    torch.optim.Optimizer subclass (stepped by the adapter), or a module of such classes (its
    path then becomes nameable: `<module>.<Class>`)."""
    if kind == "problem":
        component = problem_component(target, origin)
        if component.name != name:
            raise ValueError(f"the class's name is {component.name!r}, the entry point's {name!r}; allowed: the same")
        return component
    if _is_own_optimizer(target):
        if target.NAME != name:
            raise ValueError(f"the optimizer's NAME is {target.NAME!r}, the entry point's {name!r}; allowed: the same")
        return optimizer_component(target, origin)
    if inspect.ismodule(target):
        if not optimizer_classes(target):
            raise TypeError(f"module {target.__name__} has neither NAME/SCHEMA/build nor torch.optim.Optimizer "
                            "classes; allowed: either")
        return PluginModule(name, target.__name__, origin)
    if not inspect.isclass(target):
        raise TypeError(f"{target!r} is not an optimizer; allowed: a module with NAME, SCHEMA and build, "
                        "a torch.optim.Optimizer subclass, or a module of such classes")
    return adapt_class(name, target, origin)


REGISTRIES = {kind: Registry(kind) for kind in KINDS}


def registry(kind: str) -> Registry:
    return REGISTRIES[kind]


def get_problem(name) -> Component:
    return REGISTRIES["problem"].get(name)


def get_optimizer(name) -> Component:
    return REGISTRIES["optimizer"].get(name)


def validate_problem(spec: dict) -> dict:
    """{'name': ..., **params} -> the same with every default filled in and every value checked."""
    params = dict(spec)
    component = get_problem(params.pop("name", None))
    return {"name": component.name, **component.validate(params)}


def make_problem(spec: dict, seed: int, dtype=torch.float32, device="cpu") -> Problem:
    """The problem a spec names, built from plain data. Its own randomness (rotations, data) comes
    from a generator seeded by `seed`, separate from the per-step noise: the same cell is the same
    problem. `problem.seed` keeps it (an optimizer that draws random numbers seeds its runs from it)."""
    params = validate_problem(spec)
    component = get_problem(params.pop("name"))
    problem = component.factory(params, torch.Generator().manual_seed(seed), dtype=dtype, device=device)
    problem.seed = seed
    return problem


def validate_optimizer(spec: dict) -> dict:
    """{'name': ..., **hyperparameters} -> the same with every default filled in and checked."""
    params = dict(spec)
    component = get_optimizer(params.pop("name", None))
    return {"name": component.name, **component.validate(params)}


def make_optimizer(spec: dict, problem=None) -> Optimizer:
    hp = validate_optimizer(spec)
    return get_optimizer(hp.pop("name")).factory(hp, problem)


def parameter_conditions(cells) -> dict[str, list]:
    """{column: [the column it depends on, *values]} for the parameters of these cells' problems and
    optimizers that have an effect only under a condition (Param.applies), as rows.parquet names
    them: meta.json keeps it for the analysis, which imports no problem or optimizer."""
    out = {}
    for kind, get in (("problem", get_problem), ("optimizer", get_optimizer)):
        for name in sorted({cell[kind]["name"] for cell in cells}):
            out.update(conditions(f"{kind}.", get(name).schema))
    return dict(sorted(out.items()))


def register_problem(cls) -> Component:
    """Register a Problem subclass (or a problem made by problems.from_loss.define_problem) in
    this process; sweeps run from this process may then name it, on the local backend and
    through Ray (the class travels to the workers with the cells, pickled by cloudpickle: a
    notebook's own definitions by value, a module's by reference, so that module must be
    importable on the workers)."""
    try:
        component = problem_component(cls, THIS_PROCESS)
    except TypeError as error:
        raise TypeError(f"register_problem: {error}") from None
    return REGISTRIES["problem"].register(component)


def register_optimizer(module_or_class, name: str | None = None) -> Component:
    """Register an optimizer in this process: a module (or any object) with NAME, SCHEMA and
    build(hp, problem), or a torch.optim.Optimizer subclass (stepped by the adapter, under
    `name`, default the class's name). Shipped to Ray workers as register_problem's are."""
    if _is_own_optimizer(module_or_class):
        return REGISTRIES["optimizer"].register(optimizer_component(module_or_class, THIS_PROCESS))
    if inspect.isclass(module_or_class):
        return REGISTRIES["optimizer"].register(adapt_class(name or module_or_class.__name__, module_or_class,
                                                            THIS_PROCESS))
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


@dataclass(frozen=True)
class Inventory:
    """The names a sweep may use now: per kind the built-ins, this process's registrations and the
    plugin components (each Component carries its origin, and for a torch.optim class the
    adapter's `class` and `mode` in `extra`); the modules whose optimizer classes may be named by
    path; every plugin that failed to load."""
    builtins: dict[str, list[str]]                  # kind -> names
    local: dict[str, list[str]]                     # kind -> names registered in this process
    plugins: dict[str, dict[str, Component]]        # kind -> {name: component}
    class_modules: list[tuple[str, str | None]]     # (module, its distribution's version; None: not installed)
    plugin_modules: list[PluginModule]              # the plugins' modules of optimizer classes
    errors: list[tuple[str, str, str]]              # (kind, name, error)


def inventory() -> Inventory:
    """What `saddlescape validate` lists (workflows/cli.py formats it). Loads every plugin."""
    builtins, local, plugins = {}, {}, {}
    for kind in KINDS:
        reg = REGISTRIES[kind]
        builtins[kind], local[kind], plugins[kind] = list(reg.builtins()), list(reg.local()), reg.plugins()
    return Inventory(builtins, local, plugins, [(m, _module_version(m)) for m in ADAPTABLE_MODULES],
                     list(REGISTRIES["optimizer"].plugin_modules().values()),
                     [(kind, name, error) for kind in KINDS for name, error in REGISTRIES[kind].plugin_errors().items()])


def _module_version(module: str) -> str | None:
    distribution = {"torch.optim": "torch", "pytorch_optimizer": "pytorch-optimizer"}.get(module, module)
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
