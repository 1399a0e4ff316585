"""Any torch.optim.Optimizer subclass as a saddlescape optimizer, named by its class path.

    optimizer: {name: torch.optim.NAdam, lr: 0.002, betas: [0.9, 0.999]}
    optimizer: {name: pytorch_optimizer.Lion, lr: 1.0e-4, weight_decay: 0.0}
    optimizer: {name: schedulefree.AdamWScheduleFree, lr: 0.01, warmup_steps: 100}

Safety. A sweep file never imports arbitrary code: the module part of the path must be one of
the allowed modules (torch.optim, pytorch_optimizer, schedulefree, and modules a plugin
declares), the class is then one attribute of that module (importlib + one getattr: no chains
such as torch.optim.os.system), and it must be a subclass of torch.optim.Optimizer other than
the base class.

What a step needs, found by stepping the class at the cell's hyperparameters and dtype
(`needs_of`, called for every cell by workflows.cell.normalize_cell), never from a list of names:

- a step that draws random numbers (Kron, Gravity, Hutchinson probes) runs each seed under a torch
  generator of its own, seeded by the problem's seed and the run (one optimizer per seed): a seed's
  run is reproducible, and the same whatever else is in the batch;
- a step that differentiates the gradient again (AdaHessian, SophiaH: Hessian-vector products,
  `loss.backward(create_graph=True)`) gets the problem's loss differentiated by autograd with its
  graph, g + (∇f − ∇f.detach()): the value is the engine's stochastic gradient, the derivative the
  problem's Hessian; a problem whose loss autograd cannot differentiate twice is refused for it;
- a class for matrices only (torch.optim.Muon) gets the problem's matrices, and the other tensors
  go to torch.optim.AdamW (`fallback`), as Muon is configured in practice.

Refused before anything runs (`validate` and `run`: one line, exit 2): a step that needs a closure
(LBFGS's line search, AliG) or a Hessian argument, one that fails on a gradient alone in the cell's
dtype, one whose runs differ even with a generator of their own (randomness from elsewhere). Classes
that wrap another optimizer (SAM, Lookahead) are refused by their constructor's signature.

Hyperparameters are the class's constructor arguments (all but the first, `params`), with the
signature's defaults; a list such as `betas: [0.9, 0.99]` becomes a tuple. Adapter keys are
added (ADAPTER_KEYS): `param_shape`, what one seed's parameters are: `tensors` (default: the
problem's named tensors, workflows/core/shapes.py: matrix factorisation's U [n, r], a deep linear
network's W₁ … W_L, an MLP's weights and biases; one [d] vector where the problem declares none),
`vector` (one [d]) or `row` (one [1, d]); `fallback` (auto | none | adamw: which tensors that are
not matrices go to AdamW) and `fallback_lr` (AdamW's step size; null: the class's lr).
Hyperparameters are live: an engine that changes hp["lr"] between steps (a step-size schedule)
has it written into the param groups before the next step.

Exact per-seed semantics. Each seed must be one independent run of the class on its own
parameters. How the R seeds are stepped (the layout) is decided per class, hyperparameters, shapes
and batch by a tested property (optimizers/torch_layouts.py: the probe and the four layouts,
batched, params, groups, optimizers); `batched` is mode "batched", the other three "per_seed" (a
Python step per seed: about two orders of magnitude slower at R = 1024,
benchmarks/adapter_speed.py).

Schedule-free classes (schedulefree.*, pytorch_optimizer's ScheduleFree*) are put in train mode
(`.train()`): the parameter then holds y, the point where the gradient is evaluated, and that is
the iterate the engine measures (escape, divergence, final loss); the averaged x of eval mode is
never formed.

The analysis predicts torch.optim.RMSprop, Adam/AdamW (weight decay 0, no amsgrad) and Adagrad (no
lr decay) with its lag model (analysis/lag_cells.py), as it does the built-in rmsprop, adam and
adagrad; for the other classes the report gives their censored escape times, scaling fits and
comparisons only.
"""
from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import logging
import math
import re
import threading
from typing import NamedTuple

import torch

from workflows.core.component import Component, MissingExtra
from workflows.core.params import Param, choice, positive, resolve
from workflows.core.shapes import structure

from .base import Optimizer, update_from
from .torch_layouts import Block, Streams, TorchOptimizerState, blocks, one_line, probe, tolerance, train_mode

log = logging.getLogger("saddlescape.adapter")

# Modules of the `optimizers` extra: a missing one is a missing install, not a typo.
EXTRA_MODULES = ("pytorch_optimizer", "schedulefree")
INSTALL_HINT = "pip install -e '.[optimizers]'"
PARAM_SHAPE, FALLBACK, FALLBACK_LR = "param_shape", "fallback", "fallback_lr"
ADAPTER_KEYS = (PARAM_SHAPE, FALLBACK, FALLBACK_LR)       # the adapter's own, never the class's
# Every probe's run lasts at least PROBE_MIN_STEPS and at most PROBE_MAX_STEPS.
PROBE_MIN_STEPS, PROBE_MAX_STEPS = 16, 1024
# The tensors the class's own checks are run on under param_shape `tensors` (a matrix and a
# vector, as a matrix problem with a bias hands them), and under `vector` / `row`.
CHECK_SHAPES = {"tensors": ((3, 2), (3,)), "vector": ((3,),), "row": ((1, 3),)}
# The dtype of a cell that does not say (workflows/core/settings.py) and of the probes at the defaults.
DEFAULT_DTYPE = "float32"


def mode_of(layout: str) -> str:
    return "batched" if layout == "batched" else "per_seed"


# --- resolving a name --------------------------------------------------------------------


def adapt(name: str, allowed_modules: tuple[str, ...]):
    """The component for a dotted class path such as `torch.optim.NAdam`.

    Raises ValueError (one line) when the module is not allowed or not installed, the name is
    not in it, or it is not an optimizer class the engine can step."""
    return adapt_class(name, resolve_class(name, allowed_modules), "adapter")


def resolve_class(name: str, allowed_modules: tuple[str, ...]):
    """importlib + one getattr on an allowed module, nothing else imported."""
    module_name, _, attr = name.rpartition(".")
    where = f"optimizer.name={name!r}"
    if module_name not in allowed_modules:
        raise ValueError(f"{where}: module {module_name or '(none)'!r} is not allowed; allowed: a "
                         f"torch.optim.Optimizer class of {', '.join(allowed_modules)} "
                         "(plugins declare more), e.g. torch.optim.NAdam")
    if not attr.isidentifier() or attr.startswith("_"):
        raise ValueError(f"{where}: {attr!r} is not a public class name; allowed: an optimizer class "
                         f"of {module_name}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if module_name.split(".")[0] in EXTRA_MODULES:
            raise MissingExtra(f"{where}: module {module_name} is not installed ({error}); allowed: "
                               f"{INSTALL_HINT}", "optimizers") from None
        raise ValueError(f"{where}: module {module_name} is not installed ({error}); allowed: "
                         f"install {module_name}") from None
    # Only classes that can be named: not those refused by their signature (wrappers, a required
    # closure). A did-you-mean is stepped as a cell would be (`usable`): never a class refused
    # when named.
    classes = [n for n in optimizer_classes(module) if not _refused_by_signature(getattr(module, n))]
    if not hasattr(module, attr):
        near = _near(module, attr, classes)
        hint = f"did you mean {', '.join(near)}? " if near else ""
        raise ValueError(f"{where}: {module_name} has no {attr!r}; {hint}allowed: one of "
                         f"{', '.join(classes)}")
    cls = getattr(module, attr)
    if not (inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer)) or cls is torch.optim.Optimizer:
        near = _near(module, attr, classes)
        hint = f"did you mean {', '.join(near)}? " if near else ""
        raise ValueError(f"{where}: {module_name}.{attr} is not an optimizer class; {hint}allowed: a "
                         f"subclass of torch.optim.Optimizer, one of {', '.join(classes)}")
    return cls


def _near(module, attr: str, classes: list[str]) -> list[str]:
    """Up to three classes close to `attr` (difflib, or the same letters in another case) that
    can be stepped at their defaults: a suggestion never leads to another refusal."""
    close = difflib.get_close_matches(attr, classes, n=6, cutoff=0.6)         # each is stepped: a few
    close += [c for c in classes if c.lower() == attr.lower() and c not in close]
    return [c for c in close if usable(getattr(module, c))][:3]


def _refused_by_signature(cls) -> str:
    """Why the class is refused from its signatures alone ("" when it is not): it wraps another
    optimizer, or its step requires a closure."""
    wrapped = _wrapped_optimizer_argument(cls)
    if wrapped:
        return (f"{qualified(cls)} wraps another optimizer (its argument {wrapped}); allowed: an optimizer "
                "class that steps its parameters itself (a sweep cannot pass an optimizer object)")
    closure = inspect.signature(cls.step).parameters.get("closure")
    if closure is not None and closure.default is inspect.Parameter.empty:
        return (f"{qualified(cls)}.step needs a closure (it re-evaluates the loss, as a line search or a "
                "two-pass method does); allowed: an optimizer that steps on one stochastic gradient, "
                "step(closure=None)")
    return ""


@functools.lru_cache(maxsize=None)
def usable(cls) -> bool:
    """Whether a cell could name the class: not refused by its signature, and, where every
    constructor argument has a default, stepped at those defaults in float32 without a refusal
    (`needs_of`, on a matrix and a vector, a [d] or a [1, d] parameter). A class with required
    arguments counts as usable (its arguments decide)."""
    if _refused_by_signature(cls):
        return False
    try:
        schema = constructor_schema(cls.__name__, cls)
    except ValueError:
        return False
    if any(p.allowed.startswith("required") for p in schema.values()):
        return True
    hp = {k: p.default for k, p in schema.items()}
    for shape in CHECK_SHAPES:
        try:
            _construct(cls.__name__, cls, _frozen(constructor_args(hp, cls)), shape)
            needs_of(cls.__name__, cls, _frozen(constructor_args(hp, cls)), shape, DEFAULT_DTYPE)
            return True
        except ValueError:
            continue
    return False


def optimizer_classes(module) -> list[str]:
    """The public torch.optim.Optimizer subclasses a module exports, by name."""
    return sorted(n for n in dir(module) if not n.startswith("_") and inspect.isclass(getattr(module, n))
                  and issubclass(getattr(module, n), torch.optim.Optimizer)
                  and getattr(module, n) is not torch.optim.Optimizer)


def adapt_class(name: str, cls, origin: str):
    """The component for a class object (plugins and in-process registrations use it).

    Component(kind="optimizer", name, schema (a Param per constructor argument but `params`,
    plus `param_shape`), factory(hp, problem) -> Optimizer, validate_params, origin, doc,
    extra={"class": its qualified name, "cls": the class, "layout", "mode"}), layout and mode
    being those of the class at its defaults on a small batch (R = 8, d = 10), or None when it
    has required arguments; a cell's own come from `layout_of`."""
    where = f"optimizer.name={name!r}"
    if not (inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer)) or cls is torch.optim.Optimizer:
        raise ValueError(f"{where}: {cls!r} is not an optimizer class; allowed: a subclass of "
                         "torch.optim.Optimizer")
    refused = _refused_by_signature(cls)
    if refused:
        raise ValueError(f"{where}: {refused}")
    schema = constructor_schema(name, cls)
    extra = {"class": qualified(cls), "cls": cls, "layout": None, "mode": None,
             "check_cell": functools.partial(check_cell, name, cls)}
    component = Component("optimizer", name, schema, functools.partial(build, name, cls),
                          functools.partial(validate, name, cls, schema), origin, first_line(cls), extra)
    if all(not p.allowed.startswith("required") for p in schema.values()):
        try:
            hp = validate(name, cls, schema, {})
            args = constructor_args(hp, cls)
            needs = needs_of(name, cls, _frozen(args), hp[PARAM_SHAPE], DEFAULT_DTYPE)
            extra["layout"] = choose_layout(cls, args, tuple(blocks([(10,)], hp[PARAM_SHAPE], 10)), 8,
                                            DEFAULT_DTYPE, needs.random, needs.second_order)
            extra["mode"] = mode_of(extra["layout"])
        except NeedsClosure:
            raise
        except ValueError:
            pass          # refused at its defaults: the error comes again when a sweep uses it
    return component


class NeedsClosure(ValueError):
    """The class's step raised without a closure: no hyperparameter can change that."""


class NeedsSecondOrder(ValueError):
    """The class's step reads second derivatives (through the gradient's graph, or a Hessian
    argument), which the engine does not supply."""


def _wrapped_optimizer_argument(cls) -> str:
    """The constructor argument through which the class wraps another optimizer (Lookahead's
    `optimizer`, SAM's `base_optimizer`), or ""."""
    arguments = list(inspect.signature(cls.__init__).parameters.values())[1:]
    for i, arg in enumerate(arguments):
        annotation = "" if arg.annotation is arg.empty else inspect.formatannotation(arg.annotation)
        if "Optimizer" in annotation and (i == 0 or arg.default is arg.empty):
            return f"{arg.name}: {annotation}"
    return ""


def qualified(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def first_line(cls) -> str:
    doc = inspect.getdoc(cls) or ""
    return next((line.strip() for line in doc.splitlines() if line.strip()), "")


# --- the schema: constructor arguments as Params -----------------------------------------


def constructor_schema(name: str, cls) -> dict[str, Param]:
    """One Param per constructor argument after `params`, defaults from the signature. The kind
    comes from the default and the annotation (`weight_decay: float = 0` is a float); arguments
    without a default are required; those whose default is no plain value (a class, a tensor)
    are left out (a sweep cannot write them)."""
    arguments = list(inspect.signature(cls.__init__).parameters.values())[2:]   # self, params
    schema = {}
    for arg in arguments:
        if arg.kind in (arg.VAR_POSITIONAL, arg.VAR_KEYWORD):
            continue
        annotation = "" if arg.annotation is arg.empty else inspect.formatannotation(arg.annotation)
        param = _param(arg.default, annotation)
        if param is not None:
            schema[arg.name] = param
    taken = [k for k in ADAPTER_KEYS if k in schema]
    if taken:
        raise ValueError(f"optimizer.name={name!r}: its constructor takes {taken[0]!r}, which the "
                         "adapter reserves; allowed: a class without that argument")
    schema[PARAM_SHAPE] = choice("tensors", "tensors", "vector", "row",
                                 doc="one seed's parameters: the problem's tensors (tensors: U [n, r], W1 ... "
                                     "W_L, weights and biases), one [d] (vector) or one [1, d] (row)")
    schema[FALLBACK] = choice("auto", "auto", "none", "adamw",
                              doc="tensors that are not matrices: to torch.optim.AdamW when the class refuses "
                                  "them (auto: Muon's usual setup), always (adamw), or never (none)")
    schema[FALLBACK_LR] = Param(None, float, "> 0, or null (the class's lr)", lambda v: v is None or positive(v),
                                "AdamW's step size for the fallback tensors")
    return schema


def _param(default, annotation: str) -> Param | None:
    nullable = "None" in annotation or "Optional" in annotation or default is None
    if default is inspect.Parameter.empty:
        return Param(None, object, "required: a number, boolean, string or list", doc=annotation)
    if default is None:
        # `fused: bool | None = None`: the annotation says which values besides null.
        named = set(re.findall(r"[A-Za-z_]+", annotation)) - {"None", "Optional", "Union", "typing"}
        kind = {frozenset({"bool"}): bool, frozenset({"int"}): int, frozenset({"float"}): float,
                frozenset({"float", "int"}): float}.get(frozenset(named))
        if kind is bool:
            return Param(None, bool, "true, false or null (default null)", doc=annotation)
        if kind is not None:
            return Param(None, kind, "or null (default null)", doc=annotation)
        return Param(None, object, "null, a number, boolean, string or list", doc=annotation)
    # `allowed` completes params.resolve's "allowed: a number ..." / "an integer ...".
    null = "or null " if nullable else ""
    if isinstance(default, bool):
        return Param(default, bool, f"true or false {null}(default {default})".replace("false or", "false, or"),
                     doc=annotation)
    if isinstance(default, (int, float)):
        kind = float if isinstance(default, float) or "float" in annotation else int
        return Param(kind(default), kind, f"{null}(default {kind(default)!r})", doc=annotation)
    if isinstance(default, str):
        return Param(default, str, "a string", doc=annotation)
    if isinstance(default, tuple) and all(v is None or isinstance(v, (bool, int, float)) for v in default):
        default = tuple(float(v) if "float" in annotation and type(v) is int else v for v in default)
        return Param(default, tuple, f"a list like {list(default)}", doc=annotation)
    return None


# --- validation ------------------------------------------------------------------------------


def validate(name: str, cls, schema: dict[str, Param], params: dict) -> dict:
    """{argument: value} in schema order, every default filled in, lists as tuples; then the class
    is built on a small parameter, so that its constructor's own checks (ranges, arity of betas)
    refuse a value before anything runs. Stepping it is the cell's check (`check_cell`: the step
    depends on the cell's dtype).

    Raises ValueError (one line): an unknown key (naming it, its value and the allowed
    arguments), a missing required argument, a value of the wrong type, a value the class
    refuses."""
    owner = f"optimizer {name}"
    unknown = [k for k in params if k not in schema]
    if unknown:
        raise ValueError(f"{owner}: unknown argument {unknown[0]}={params[unknown[0]]!r}; allowed: "
                         f"{', '.join(schema)}")
    out = {}
    for key, p in schema.items():
        if key not in params:
            if p.allowed.startswith("required"):
                raise ValueError(f"{owner}: missing required argument {key!r}; allowed: {p.allowed}")
            out[key] = p.default
        elif type(params[key]) is type(p.default) and params[key] == p.default:
            out[key] = p.default                    # as the signature has it (growth_rate=inf)
        else:
            out[key] = _coerce(owner, key, params[key], p)
    _construct(name, cls, _frozen(constructor_args(out, cls)), out[PARAM_SHAPE])
    return out


def _coerce(owner: str, key: str, value, p: Param):
    if value is None and (p.kind is object or "null" in p.allowed):
        return None
    if p.kind in (bool, int, float, str):
        if p.kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{owner}: {key}={value!r} is not an integer; allowed: {p.allowed}")
        return resolve(owner, {key: Param(p.default, p.kind, p.allowed, choices=p.choices)}, {key: value})[key]
    if p.kind is tuple:
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError(f"{owner}: {key}={value!r} is not a list; allowed: {p.allowed}")
        kinds = [type(v) if v is not None else object for v in p.default]
        return tuple(_element(owner, key, v, kinds[min(i, len(kinds) - 1)], p) for i, v in enumerate(value))
    # No default to read a type from: any plain value, lists as tuples.
    if isinstance(value, list):
        value = tuple(value)
    plain = (bool, int, float, str, type(None))
    if isinstance(value, plain) or isinstance(value, tuple) and all(isinstance(v, plain) for v in value):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{owner}: {key}={value!r} is not finite; allowed: {p.allowed}")
        return value
    raise ValueError(f"{owner}: {key}={value!r} is not a plain value; allowed: {p.allowed}")


def _element(owner, key, value, kind, p):
    if value is None and kind is object:
        return None
    ok = isinstance(value, bool) if kind is bool else (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))
    if not ok:
        raise ValueError(f"{owner}: {key} has {value!r}; allowed: {p.allowed}")
    return float(value) if kind is float else value


def constructor_args(hp: dict, cls) -> dict:
    """The hyperparameters the class's constructor takes: not the adapter's own keys
    (ADAPTER_KEYS), nor what the engine keeps in the same dict for itself (a step-size schedule's
    keys)."""
    return {k: hp[k] for k in _argument_names(cls) if k in hp}


@functools.lru_cache(maxsize=None)
def _argument_names(cls) -> tuple[str, ...]:
    return tuple(k for k in constructor_schema(cls.__name__, cls) if k not in ADAPTER_KEYS)


def _frozen(args: dict) -> tuple:
    return tuple(args.items())


def _where(name: str, args: tuple) -> str:
    return f"optimizer {name}({', '.join(f'{k}={v!r}' for k, v in args)})"


@functools.lru_cache(maxsize=1024)
def _construct(name: str, cls, args: tuple, shape: str):
    """Build the class on small parameters (cached): its constructor's checks. Under `tensors`, on
    a matrix alone (a class for matrices, such as Muon, refuses vectors: those go to the fallback)."""
    p = torch.zeros(CHECK_SHAPES[shape][0], dtype=getattr(torch, DEFAULT_DTYPE))
    try:
        cls([p], **dict(args))
    except Exception as error:                  # noqa: BLE001 - the class's own check, reported
        raise ValueError(f"{_where(name, args)}: refused by {cls.__name__}: {one_line(error)}; allowed: "
                         f"what {qualified(cls)}'s constructor accepts") from None


# --- what a class's step needs: found by stepping it, never from a list of names -------------


class Needs(NamedTuple):
    """What a class's step needs besides one gradient, at given arguments: its own generator per
    run (it draws random numbers), the gradient's graph (it differentiates the gradient again:
    Hessian-vector products), and whether it refuses tensors that are not matrices (Muon)."""
    random: bool
    second_order: bool
    matrices_only: bool


def check_cell(name: str, cls, hp: dict, cell: dict) -> Needs:
    """The cell's check of an adapter optimizer (Component.extra["check_cell"], called by
    workflows.cell.normalize_cell, so that `validate` and `run` refuse before anything runs): the
    class stepped as the engine will step it, in the cell's dtype (`needs_of`). Returns what its
    step needs (the cell then checks that its problem can give it: a loss autograd can
    differentiate twice where the class reads second derivatives). Raises ValueError (one line)."""
    return needs_of(name, cls, _frozen(constructor_args(hp, cls)), hp[PARAM_SHAPE], cell["dtype"])


@functools.lru_cache(maxsize=1024)
def needs_of(name: str, cls, args: tuple, shape: str, dtype: str = DEFAULT_DTYPE) -> Needs:
    """What the class's step needs (`Needs`), found on small parameters (CHECK_SHAPES) over as many
    steps as the layout probe takes. Refuses, in one line, what the engine cannot give:

    - a step argument besides the closure that has no default (a Hessian passed in): NeedsSecondOrder;
    - a step that raises without a closure (a line search, a two-pass method): NeedsClosure;
    - a step that raises on a gradient alone, in this dtype: ValueError (naming the dtype it steps in).
    Cached per class, arguments, param_shape and dtype."""
    where = _where(name, args)
    dt = getattr(torch, dtype)
    required = [p.name for p in list(inspect.signature(cls.step).parameters.values())[1:]
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "closure"]
    if required:
        raise NeedsSecondOrder(f"{where}: its step needs {', '.join(required)} besides the gradient, which the "
                               "engine does not supply; allowed: an optimizer that steps on one stochastic "
                               "gradient, step(closure=None)")
    make = functools.partial(cls, **dict(args))
    steps = _probe_steps(dict(args))
    shapes = CHECK_SHAPES[shape]
    matrices_only = shape == "tensors" and not _accepts(make, shapes[1:], dt)
    parts = blocks(shapes[:1] if matrices_only else shapes, "tensors", 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            plain = _quadratic_run(make, parts, dt, steps, graph=False)
        except Exception as error:                  # noqa: BLE001 - the class's own refusal, reported
            if "closure" in f"{type(error).__name__} {error}".lower():
                raise NeedsClosure(f"{where}: its step needs a closure ({one_line(error)}); allowed: an "
                                   "optimizer that steps on one stochastic gradient") from None
            raise ValueError(f"{where}: cannot step on a gradient alone in {dtype} ({one_line(error)}); "
                             f"allowed: an optimizer whose step(closure=None) reads p.grad in the cell's dtype"
                             f"{_other_dtype_hint(make, parts, dtype, steps)}") from None
        second_order = _reads_second_derivatives(make, parts, dt, steps)
        # Random draws, in the mode the class will run in (a Hutchinson probe draws only with a graph).
        with torch.enable_grad():
            first = _quadratic_run(make, parts, dt, steps, graph=second_order) if second_order else plain
            again = _quadratic_run(make, parts, dt, steps, graph=second_order)   # the generator moved on
        rtol, atol = tolerance(dt)
        random = not torch.allclose(first, again, rtol=rtol, atol=atol, equal_nan=True)
    return Needs(random, second_order, matrices_only)


def _accepts(make, shapes, dtype) -> bool:
    try:
        make([torch.zeros(s, dtype=dtype) for s in shapes])
        return True
    except Exception:                               # noqa: BLE001 - a refusal of these shapes
        return False


def _reads_second_derivatives(make, parts, dtype, steps: int) -> bool:
    """Whether the class differentiates the gradient again (a Hessian estimate such as
    Hutchinson's, which needs loss.backward(create_graph=True)): its gradients are handed with their
    graph, each through an identity that notes when autograd passes back through it (`_Tap`).
    Without the graph such a class silently runs as another method (a Hessian of zeros): the
    adapter then hands it the graph (torch_layouts). A property of what the class does, not of its
    iterates: a class whose arithmetic only rounds differently with a graph (SOAP's eigenbases) is
    not taken for one."""
    _Tap.fired = False
    torch.manual_seed(0)
    try:
        with torch.enable_grad():
            _quadratic_run(make, parts, dtype, steps, graph=True)
    except Exception:                               # noqa: BLE001 - it cannot use a graph: nothing to miss
        return False
    return _Tap.fired


class _Tap(torch.autograd.Function):
    """The identity, noting when a gradient flows back through it."""
    fired = False

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        _Tap.fired = True
        return grad


# f(x) = Σ ½ c_i x_i² + κ Σ x_i x_{i+1} over the check's coordinates, curvatures of different
# sizes, started at gradients four orders of magnitude apart: a Hessian estimate shows in the
# iterates whether the step divides by it (AdaHessian) or only where the gradient is small against
# it (SophiaH clips momentum / Hessian, so with large gradients both runs would be its
# sign-momentum). The coupling κ makes the Hessian non-diagonal: a Rademacher probe z ⊙ Hz of a
# diagonal Hessian is exact whatever z is, which would hide that the step draws random numbers.
_CURVATURE, _START, _COUPLING = (1.0, 4.0, 0.25), (1e-4, -1e-2, 1.0), 0.1


def _quadratic_run(make, parts: list[Block], dtype, steps: int, graph: bool) -> torch.Tensor:
    """The class stepped `steps` times on f's gradient; the final iterate, flat."""
    n = sum(b.size for b in parts)
    c = torch.tensor([_CURVATURE[i % 3] for i in range(n)], dtype=dtype)
    start = torch.tensor([_START[i % 3] for i in range(n)], dtype=dtype)
    params = [start[b.start:b.start + b.size].clone().view(*b.shape).requires_grad_(graph) for b in parts]
    opt = make(params)
    train_mode(opt)

    def loss(flat):
        return (0.5 * c * flat**2).sum() + _COUPLING * (flat[1:] * flat[:-1]).sum()

    for _ in range(steps):
        flat = torch.cat([q.reshape(-1) for q in params])
        if graph:
            grads = [_Tap.apply(g) for g in torch.autograd.grad(loss(flat), params, create_graph=True)]
        else:
            exact = c * flat.detach()
            exact[1:] += _COUPLING * flat.detach()[:-1]
            exact[:-1] += _COUPLING * flat.detach()[1:]
            grads = [exact[b.start:b.start + b.size].view(*b.shape) for b in parts]
        for q, g in zip(params, grads):
            q.grad = g
        opt.step()
    return torch.cat([q.detach().reshape(-1) for q in params]).clone()


def _other_dtype_hint(make, parts, dtype: str, steps: int) -> str:
    other = "float64" if dtype == "float32" else "float32"
    try:
        with torch.random.fork_rng(devices=[]):
            _quadratic_run(make, parts, getattr(torch, other), steps, graph=False)
    except Exception:                           # noqa: BLE001
        return ""
    return f" (it steps in {other}: dtype: {other})"


def _probe_steps(args: dict) -> int:
    """Every probe's run lasts past every integer hyperparameter (periods and warm-ups such as
    Shampoo's preconditioning steps), within PROBE_MIN_STEPS .. PROBE_MAX_STEPS."""
    periods = [v for v in args.values() if type(v) is int and v <= PROBE_MAX_STEPS]
    return min(PROBE_MAX_STEPS, PROBE_MIN_STEPS + max(periods, default=0))


# --- stepping the batch ------------------------------------------------------------------------


class SplitState:
    """The class on the matrices, torch.optim.AdamW on the other tensors (`fallback`): two states
    over disjoint blocks of the same x, stepped one after the other."""

    def __init__(self, states: list[TorchOptimizerState]):
        self.states = states

    def step(self, grad, x):
        for state in self.states:
            state.step(grad, x)

    def select(self, keep) -> "SplitState":
        self.states = [state.select(keep) for state in self.states]
        return self

    def set_hyperparameters(self, changed: dict, name: str):
        self.states[0].set_hyperparameters(changed, name)
        if "lr" in changed and self.fallback_follows_lr:
            self.states[1].set_hyperparameters({"lr": changed["lr"]}, "torch.optim.AdamW")


def build(name: str, cls, hp: dict, problem=None) -> Optimizer:
    """The optimizer for one cell. init(x) hands each run's x to the class in the problem's shapes
    (param_shape), the non-matrices to AdamW where the class refuses them (fallback), with a
    generator per run where it draws random numbers and the gradient's graph where it reads second
    derivatives (`needs_of`), in the layout the probe chooses (`choose_layout`, cached);
    apply(grad, state, x) writes any changed hyperparameter into the param groups and steps x in
    place; update returns the step instead. hp is live (read at every step)."""
    written = constructor_args(hp, cls)          # what the param groups hold

    def make(params):
        return cls(params, **written)

    def init(x):
        written.clear()
        written.update(constructor_args(hp, cls))
        dtype = str(x.dtype).removeprefix("torch.")
        needs = needs_of(name, cls, _frozen(written), hp[PARAM_SHAPE], dtype)
        shapes = [s.shape for s in structure(problem)] if problem is not None else [(x.shape[1],)]
        parts = blocks(shapes, hp[PARAM_SHAPE], x.shape[1])
        matrices = [b for b in parts if len(b.shape) == 2]
        split = hp[PARAM_SHAPE] == "tensors" and len(matrices) < len(parts) and (
            hp[FALLBACK] == "adamw" or (hp[FALLBACK] == "auto" and needs.matrices_only))
        own = matrices if split else parts
        if not own:
            raise ValueError(f"optimizer {name}: problem {getattr(problem, 'name', '')} has no matrix for it "
                             f"(its tensors: {[list(b.shape) for b in parts]}); allowed: a problem with "
                             "matrix-shaped parameters")
        seed = getattr(problem, "seed", 0)
        loss = problem.loss if needs.second_order and problem is not None else None
        layout = choose_layout(cls, dict(written), tuple(own), x.shape[0], dtype, needs.random, loss is not None)
        log.info("%s: %s (%s layout) for R=%d, tensors %s", name, mode_of(layout), layout, x.shape[0],
                 [list(b.shape) for b in own])
        state = TorchOptimizerState(make, layout, x, own, Streams(seed, len(x)) if needs.random else None, loss)
        if not split:
            return state
        rest = [b for b in parts if len(b.shape) != 2]
        # AdamW at the class's own step size and weight decay (fallback_lr overrides the first).
        fallback_lr = hp[FALLBACK_LR] if hp[FALLBACK_LR] is not None else hp["lr"]
        decay = {"weight_decay": written["weight_decay"]} if "weight_decay" in written else {}
        adamw = TorchOptimizerState(functools.partial(torch.optim.AdamW, lr=fallback_lr, **decay), "batched", x, rest)
        out = SplitState([state, adamw])
        out.fallback_follows_lr = hp[FALLBACK_LR] is None
        return out

    def apply(grad, state, x):
        changed = {k: tuple(hp[k]) if isinstance(hp[k], list) else hp[k] for k in written if hp[k] != written[k]}
        if changed:
            state.set_hyperparameters(changed, name)
            written.update(changed)
        state.step(grad, x)
        return state

    return Optimizer(init, update_from(apply), apply)


def layout_of(component, params: dict, runs: int, dim: int, dtype: str = DEFAULT_DTYPE, shapes=None) -> str:
    """The layout an adapter component steps R = runs seeds in, for these hyperparameters
    (validated first), in `dtype` (float32 or float64), on tensors of `shapes` (default: one [dim])."""
    hp = component.validate(dict(params))
    cls = component.extra["cls"]
    args = constructor_args(hp, cls)
    needs = needs_of(component.name, cls, _frozen(args), hp[PARAM_SHAPE], dtype)
    parts = blocks(shapes or [(dim,)], hp[PARAM_SHAPE], dim)
    return choose_layout(cls, args, tuple(parts), runs, dtype, needs.random, needs.second_order)


# --- the probe ---------------------------------------------------------------------------------

_layouts: dict = {}
_layouts_lock = threading.Lock()


def choose_layout(cls, args: dict, parts: tuple, runs: int, dtype: str = DEFAULT_DTYPE, random: bool = False,
                  graph: bool = False) -> str:
    """The fastest layout whose iterates equal one optimizer per seed (optimizers/torch_layouts.py:
    `probe`), cached per class, constructor arguments, tensors, R, the cell's dtype and what the
    class needs (a generator per run, the gradient's graph)."""
    key = (cls, _frozen(args), parts, runs, dtype, random, graph)
    with _layouts_lock:
        if key not in _layouts:
            where = f"optimizer {qualified(cls)}({', '.join(f'{k}={v!r}' for k, v in args.items())})"
            _layouts[key] = probe(functools.partial(cls, **args), list(parts), runs, getattr(torch, dtype),
                                  _probe_steps(args), random, graph, where)
        return _layouts[key]
