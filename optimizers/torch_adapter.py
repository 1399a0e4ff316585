"""Any torch.optim.Optimizer subclass as a saddlescape optimizer, named by its class path.

    optimizer: {name: torch.optim.NAdam, lr: 0.002, betas: [0.9, 0.999]}
    optimizer: {name: pytorch_optimizer.Lion, lr: 1.0e-4, weight_decay: 0.0}
    optimizer: {name: schedulefree.AdamWScheduleFree, lr: 0.01, warmup_steps: 100}

Safety. A sweep file never imports arbitrary code: the module part of the path must be one of
the allowed modules (torch.optim, pytorch_optimizer, schedulefree, and modules a plugin
declares), the class is then one attribute of that module (importlib + one getattr: no chains
such as torch.optim.os.system), and it must be a subclass of torch.optim.Optimizer other than
the base class.

What the engine can step. The engine hands an optimizer one stochastic gradient per step
(p.grad, without a graph) and nothing else. Whatever needs more is refused before anything runs
(`validate` and `run`: one line, exit 2), each by a tested property of the class at the cell's
hyperparameters and dtype (`check_steppable`, called for every cell by
workflows.cell.normalize_cell), never by a list of names: a step that needs a closure (LBFGS's
line search, AliG), one that reads second derivatives through the gradient's graph (AdaHessian's
and SophiaH's Hutchinson estimates: without a graph they would run with a Hessian of zeros,
`refuse_second_order`), one that fails on a gradient alone in the cell's dtype, and one that
draws random numbers (Kron, Gravity: a seed's run would not be reproducible). Classes that wrap
another optimizer (SAM, Lookahead) are refused by their constructor's signature.

Hyperparameters are the class's constructor arguments (all but the first, `params`), with the
signature's defaults; a list such as `betas: [0.9, 0.99]` becomes a tuple. One adapter key is
added: `param_shape`, the shape of one seed's parameter, `vector` ([d], default) or `row`
([1, d]: for classes that treat 1-D parameters as biases, such as LARS's trust ratio in
pytorch_optimizer or torch.optim.Muon's orthogonalisation, which only act on matrices).
Hyperparameters are live: an engine that changes hp["lr"] between steps (a step-size schedule)
has it written into the param groups before the next step.

Exact per-seed semantics. Each seed must be one independent run of the class on its own
parameter. How the R seeds are stepped (the layout) is decided per class, hyperparameters and
batch shape by a tested property, never a hand-kept list: the probe (`choose_layout`) steps rows
of very different scales on the same gradients, drops half of them half-way (the engine's
compaction), and keeps the first layout, in this order of speed, whose iterates equal stepping
each row alone with its own optimizer (in the cell's dtype: rtol 1e-9 in float64, 1e-5 in
float32):

    batched      one [R, d] parameter                 element-wise classes: Adam, NAdam, Lion, ...
    params       one parameter per seed, one group     per-parameter statistics: LAMB's trust ratio
    groups       one param group per seed              per-group statistics
    optimizers   one optimizer per seed                global statistics: Prodigy's and D-Adaptation's d

`batched` is mode "batched"; the other three are mode "per_seed" (a Python step per seed: about
two orders of magnitude slower at R = 1024, benchmarks/adapter_speed.py). The probe runs past
every integer hyperparameter (periods and warm-ups such as Shampoo's preconditioning steps, up to
1024 steps); the batched candidate is stepped at the cell's full R and d, the per-seed ones on
four rows of the cell's d.

Schedule-free classes (schedulefree.*, pytorch_optimizer's ScheduleFree*) are put in train mode
(`.train()`): the parameter then holds y, the point where the gradient is evaluated, and that is
the iterate the engine measures (escape, divergence, final loss); the averaged x of eval mode is
never formed.

No closed form of the analysis applies to these classes (THEORY's predictions are for SGD,
RMSProp/Adam with β₁ = 0 and the ideal preconditioner): the report gives their censored escape
times, scaling fits and comparisons only.
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

import torch

from workflows.params import Param, choice, resolve

from .base import Optimizer

log = logging.getLogger("saddlescape.adapter")

# Modules of the `optimizers` extra: a missing one is a missing install, not a typo.
EXTRA_MODULES = ("pytorch_optimizer", "schedulefree")
INSTALL_HINT = "pip install -e '.[optimizers]'"
PARAM_SHAPE = "param_shape"
LAYOUTS = ("batched", "params", "groups", "optimizers")
# The probe: per-seed candidates step this many rows; every run of it lasts at least
# PROBE_MIN_STEPS and at most PROBE_MAX_STEPS; iterates must agree to this relative tolerance.
PROBE_ROWS, PROBE_MIN_STEPS, PROBE_MAX_STEPS, PROBE_RTOL = 4, 16, 1024, 1e-9
# The dtype of a cell that does not say (workflows/settings.py) and of the probes at the defaults.
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
            from workflows.registry import MissingExtra

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
    close = difflib.get_close_matches(attr, classes, n=len(classes), cutoff=0.6)
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
    (`check_steppable`, as a [d] or a [1, d] parameter). A class with required arguments counts
    as usable (its arguments decide)."""
    if _refused_by_signature(cls):
        return False
    try:
        schema = constructor_schema(cls.__name__, cls)
    except ValueError:
        return False
    if any(p.allowed.startswith("required") for p in schema.values()):
        return True
    hp = {k: p.default for k, p in schema.items()}
    for shape in ("vector", "row"):
        try:
            _construct(cls.__name__, cls, _frozen(constructor_args(hp, cls)), shape)
            check_steppable(cls.__name__, cls, _frozen(constructor_args(hp, cls)), shape, DEFAULT_DTYPE)
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
    from workflows.registry import Component

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
            check_steppable(name, cls, _frozen(args), hp[PARAM_SHAPE], DEFAULT_DTYPE)
            extra["layout"] = choose_layout(cls, args, hp[PARAM_SHAPE], 8, 10, DEFAULT_DTYPE)
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
    if PARAM_SHAPE in schema:
        raise ValueError(f"optimizer.name={name!r}: its constructor takes {PARAM_SHAPE!r}, which the "
                         "adapter reserves; allowed: a class without that argument")
    schema[PARAM_SHAPE] = choice("vector", "vector", "row",
                                 doc="one seed's parameter: [d] (vector) or [1, d] (row)")
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
    """The hyperparameters the class's constructor takes: not the adapter's own param_shape, nor
    what the engine keeps in the same dict for itself (a step-size schedule's keys)."""
    return {k: hp[k] for k in _argument_names(cls) if k in hp}


@functools.lru_cache(maxsize=None)
def _argument_names(cls) -> tuple[str, ...]:
    return tuple(k for k in constructor_schema(cls.__name__, cls) if k != PARAM_SHAPE)


def _frozen(args: dict) -> tuple:
    return tuple(args.items())


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def _where(name: str, args: tuple) -> str:
    return f"optimizer {name}({', '.join(f'{k}={v!r}' for k, v in args)})"


@functools.lru_cache(maxsize=1024)
def _construct(name: str, cls, args: tuple, shape: str):
    """Build the class on a 3-coordinate parameter (cached): its constructor's checks."""
    p = torch.zeros((3,) if shape == "vector" else (1, 3), dtype=getattr(torch, DEFAULT_DTYPE))
    try:
        cls([p], **dict(args))
    except Exception as error:                  # noqa: BLE001 - the class's own check, reported
        raise ValueError(f"{_where(name, args)}: refused by {cls.__name__}: {_one_line(error)}; allowed: "
                         f"what {qualified(cls)}'s constructor accepts") from None


# --- what the engine cannot step: every refusal of a class's step, in one place ---------------


def check_cell(name: str, cls, hp: dict, cell: dict):
    """The cell's check of an adapter optimizer (Component.extra["check_cell"], called by
    workflows.cell.normalize_cell, so that `validate` and `run` refuse before anything runs): the
    class stepped as the engine will step it, in the cell's dtype. Raises ValueError (one line)."""
    check_steppable(name, cls, _frozen(constructor_args(hp, cls)), hp[PARAM_SHAPE], cell["dtype"])


@functools.lru_cache(maxsize=1024)
def check_steppable(name: str, cls, args: tuple, shape: str, dtype: str = DEFAULT_DTYPE):
    """Refuse, in one line, a class whose step needs more than the engine gives every optimizer:
    one stochastic gradient per step (p.grad, without a graph), in the cell's dtype. Each is a
    tested property of the class at these arguments, found on a 3-coordinate parameter over as
    many steps as the layout probe takes (`_probe_steps`), never a list of names:

    - the step raises without a closure (a line search, a two-pass method): NeedsClosure;
    - the step raises on a gradient alone, in this dtype: ValueError;
    - the step reads second derivatives (`refuse_second_order`): NeedsSecondOrder;
    - two identical runs differ (the step draws random numbers: a seed's run would not be
      reproducible): ValueError.
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
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            plain = _quadratic_run(make, shape, dt, steps, graph=False)
        except Exception as error:                  # noqa: BLE001 - the class's own refusal, reported
            if "closure" in f"{type(error).__name__} {error}".lower():
                raise NeedsClosure(f"{where}: its step needs a closure ({_one_line(error)}); allowed: an "
                                   "optimizer that steps on one stochastic gradient") from None
            raise ValueError(f"{where}: cannot step on a gradient alone in {dtype} ({_one_line(error)}); "
                             f"allowed: an optimizer whose step(closure=None) reads p.grad in the cell's dtype"
                             f"{_other_dtype_hint(make, shape, dtype, steps)}") from None
        refuse_second_order(where, make, shape, dt, steps, plain)
        again = _quadratic_run(make, shape, dt, steps, graph=False)    # the generator moved on
        if not torch.allclose(plain, again, rtol=_tolerance(dt)[0], atol=_tolerance(dt)[1], equal_nan=True):
            raise ValueError(f"{where}: two identical runs differ (its step draws random numbers), so a "
                             "seed's run would not be reproducible; allowed: a deterministic optimizer")


def refuse_second_order(where: str, make, shape: str, dtype, steps: int, plain: torch.Tensor):
    """The one place where a class that needs second derivatives is refused. Such a step (a
    Hessian estimate such as Hutchinson's, which differentiates the gradient again) needs the
    gradient's graph, loss.backward(create_graph=True); the engine's gradients carry none, and
    without it the class silently runs as another method (a Hessian of zeros). The property
    tested: the same run on f(x) = Σ ½c_i x_i² (`_quadratic_run`), once with gradients that carry
    their graph and once with the same values without it (`plain`, both from one generator
    state), ends at different iterates. Supporting these classes (issue 27) replaces this function."""
    torch.manual_seed(0)
    try:
        with torch.enable_grad():
            graph = _quadratic_run(make, shape, dtype, steps, graph=True)
    except Exception:                           # noqa: BLE001 - it cannot use a graph: nothing to miss
        return
    rtol, atol = _tolerance(dtype)
    if not torch.allclose(graph, plain, rtol=rtol, atol=atol, equal_nan=True):
        raise NeedsSecondOrder(f"{where}: its step reads second derivatives through the gradient's graph "
                               "(a Hessian estimate: loss.backward(create_graph=True)), which the engine's "
                               "gradients do not carry, so it would run as another method; allowed: an "
                               "optimizer that steps on one stochastic gradient")


# f(x) = Σ ½ c_i x_i² on three coordinates, curvatures of different sizes, started at gradients
# four orders of magnitude apart: a Hessian estimate shows in the iterates whether the step
# divides by it (AdaHessian) or only where the gradient is small against it (SophiaH clips
# momentum / Hessian, so with large gradients both runs would be its sign-momentum).
_CURVATURE, _START = (1.0, 4.0, 0.25), (1e-4, -1e-2, 1.0)


def _quadratic_run(make, shape: str, dtype, steps: int, graph: bool) -> torch.Tensor:
    """The class stepped `steps` times on f's gradient from _START; the final iterate [3]."""
    c = torch.tensor(_CURVATURE, dtype=dtype)
    p = torch.tensor(_START, dtype=dtype).reshape((3,) if shape == "vector" else (1, 3))
    if graph:
        p.requires_grad_(True)
    opt = make([p])
    _train_mode(opt)
    for _ in range(steps):
        if graph:
            loss = (0.5 * c * p.reshape(3) ** 2).sum()
            (p.grad,) = torch.autograd.grad(loss, p, create_graph=True)
        else:
            p.grad = (c * p.detach().reshape(3)).reshape(p.shape)
        opt.step()
    return p.detach().reshape(3).clone()


def _other_dtype_hint(make, shape: str, dtype: str, steps: int) -> str:
    other = "float64" if dtype == "float32" else "float32"
    try:
        with torch.random.fork_rng(devices=[]):
            _quadratic_run(make, shape, getattr(torch, other), steps, graph=False)
    except Exception:                           # noqa: BLE001
        return ""
    return f" (it steps in {other}: dtype: {other})"


def _probe_steps(args: dict) -> int:
    """Every probe's run lasts past every integer hyperparameter (periods and warm-ups such as
    Shampoo's preconditioning steps), within PROBE_MIN_STEPS .. PROBE_MAX_STEPS."""
    periods = [v for v in args.values() if type(v) is int and v <= PROBE_MAX_STEPS]
    return min(PROBE_MAX_STEPS, PROBE_MIN_STEPS + max(periods, default=0))


def _tolerance(dtype) -> tuple[float, float]:
    """(rtol, atol) within which two runs count as equal: a few hundred ulps of the dtype."""
    return (PROBE_RTOL, 1e-12) if dtype == torch.float64 else (1e-5, 1e-8)


def _train_mode(opt):
    """Schedule-free optimizers step only in train mode, where the parameter holds y."""
    train = getattr(type(opt), "train", None)
    if callable(train):
        opt.train()


# --- stepping the batch ----------------------------------------------------------------------


class TorchOptimizerState:
    """The torch optimizer(s) stepping a batch of R seeds, in one of LAYOUTS.

    `batched`: the engine's x [R, d] is the parameter itself (updated in place). After
    `select(keep)` (the engine dropping finished runs: it then passes a new, smaller x) the
    per-parameter and per-group state tensors whose leading dimension is R are indexed by keep,
    and the next step re-binds the state to the new x.

    Per-seed layouts: the optimizers own a buffer [R, d] whose rows (views [d], or [1, d] for
    param_shape row) are the seeds' parameters and never change identity; each step copies x in
    and the result out, and `select` drops the finished seeds' parameters, groups or optimizers.
    """

    def __init__(self, make, layout: str, x: torch.Tensor, shape: str):
        self.layout, self.rows = layout, len(x)
        if layout == "batched":
            self.param = x
            self.optimizers = [make([x])]
        else:
            view = (lambda t, i: t[i]) if shape == "vector" else (lambda t, i: t[i:i + 1])
            self.buffer, self.grads = x.detach().clone(), torch.zeros_like(x)
            self.params = [view(self.buffer, i) for i in range(len(x))]
            self.grad_views = [view(self.grads, i) for i in range(len(x))]
            self.index = torch.arange(len(x))         # buffer row of each batch row
            self.active = list(range(len(x)))
            if layout == "params":
                self.optimizers = [make(list(self.params))]
            elif layout == "groups":
                self.optimizers = [make([{"params": [p]} for p in self.params])]
                self.groups = list(self.optimizers[0].param_groups)
            else:
                self.per_row = [make([p]) for p in self.params]
                self.optimizers = list(self.per_row)
        for opt in self.optimizers:
            _train_mode(opt)

    def step(self, grad: torch.Tensor, x: torch.Tensor):
        """One step of every active seed on grad [R, d]; x [R, d] updated in place."""
        if len(x) != self.rows:
            raise RuntimeError(f"the batch has {len(x)} runs, the optimizer state {self.rows}; "
                               "allowed: select_runs(state, keep) whenever runs leave the batch")
        if self.layout == "batched":
            if x is not self.param:
                self._rebind(x)
            x.grad = grad
            self.optimizers[0].step()
            x.grad = None
            return
        full = len(self.active) == len(self.params)
        if full:
            self.buffer.copy_(x)
            self.grads.copy_(grad)
        else:
            self.buffer.index_copy_(0, self.index, x)
            self.grads.index_copy_(0, self.index, grad)
        for i in self.active:
            self.params[i].grad = self.grad_views[i]
        for opt in self.optimizers:
            opt.step()
        x.copy_(self.buffer if full else self.buffer.index_select(0, self.index))

    def select(self, keep) -> "TorchOptimizerState":
        """Keep the runs in `keep` (boolean mask or indices over the batch rows)."""
        keep = torch.as_tensor(keep)
        keep = keep.nonzero().flatten() if keep.dtype == torch.bool else keep.long()
        if self.layout == "batched":
            opt = self.optimizers[0]
            for table in (opt.state[self.param], opt.param_groups[0]):
                for key, value in list(table.items()):
                    if torch.is_tensor(value) and value.dim() and value.shape[0] == self.rows:
                        table[key] = value[keep]
        else:
            kept = [self.active[i] for i in keep.tolist()]
            for i in set(self.active) - set(kept):
                for opt in self.optimizers:
                    opt.state.pop(self.params[i], None)
            self.active, self.index = kept, self.index[keep]
            if self.layout == "params":
                self.optimizers[0].param_groups[0]["params"] = [self.params[i] for i in kept]
            elif self.layout == "groups":
                self.optimizers[0].param_groups = [self.groups[i] for i in kept]
            else:
                self.optimizers = [self.per_row[i] for i in kept]
        self.rows = len(keep)
        return self

    def _rebind(self, x):
        opt = self.optimizers[0]
        opt.state[x] = opt.state.pop(self.param)
        opt.param_groups[0]["params"] = [x]
        self.param = x

    def set_hyperparameters(self, changed: dict, name: str):
        """Write live hyperparameters into every param group; one the class keeps only as an
        attribute (read once, when built) cannot change during a run."""
        groups = [g for opt in self.optimizers for g in opt.param_groups]
        for key, value in changed.items():
            if groups and key not in groups[0]:
                raise ValueError(f"optimizer {name}: {key} changed to {value!r} during the run, but the "
                                 f"class reads it only when built; allowed: a change of "
                                 f"{', '.join(k for k in groups[0] if k != 'params')}")
            for group in groups:
                group[key] = value


def build(name: str, cls, hp: dict, problem=None) -> Optimizer:
    """The optimizer for one cell: init(x) chooses the layout for x's shape (`choose_layout`,
    cached) and builds the torch optimizer(s); apply(grad, state, x) writes any changed
    hyperparameter into the param groups and steps x in place; update returns the step instead.
    hp is live (read at every step)."""
    written = constructor_args(hp, cls)          # what the param groups hold

    def make(params):
        return cls(params, **written)

    def init(x):
        written.clear()
        written.update(constructor_args(hp, cls))
        args, shape = dict(written), hp[PARAM_SHAPE]
        layout = choose_layout(cls, args, shape, x.shape[0], x.shape[1], str(x.dtype).removeprefix("torch."))
        log.info("%s: %s (%s layout) for R=%d, d=%d", name, mode_of(layout), layout, *x.shape)
        return TorchOptimizerState(make, layout, x, shape)

    def apply(grad, state, x):
        changed = {k: tuple(hp[k]) if isinstance(hp[k], list) else hp[k] for k in written if hp[k] != written[k]}
        if changed:
            state.set_hyperparameters(changed, name)
            written.update(changed)
        state.step(grad, x)
        return state

    def update(grad, state, x):
        # apply is the exact path (the engine prefers it); this returns x_new − x for callers
        # that want the step, with x left as it was.
        before = x.clone()
        state = apply(grad, state, x)
        step = x - before
        x.copy_(before)
        return step, state

    return Optimizer(init, update, apply)


def layout_of(component, params: dict, runs: int, dim: int, dtype: str = DEFAULT_DTYPE) -> str:
    """The layout an adapter component steps R = runs seeds of dimension dim in, for these
    hyperparameters (validated first), in `dtype` (float32 or float64)."""
    hp = component.validate(dict(params))
    cls = component.extra["cls"]
    return choose_layout(cls, constructor_args(hp, cls), hp[PARAM_SHAPE], runs, dim, dtype)


# --- the probe ---------------------------------------------------------------------------------

_layouts: dict = {}
_layouts_lock = threading.Lock()


def choose_layout(cls, args: dict, shape: str, runs: int, dim: int, dtype: str = DEFAULT_DTYPE) -> str:
    """The fastest layout whose iterates equal one optimizer per seed (cached per class,
    constructor arguments, param_shape, R, d and the cell's dtype). See the module docstring."""
    key = (cls, _frozen(args), shape, runs, dim, dtype)
    with _layouts_lock:
        if key not in _layouts:
            _layouts[key] = _probe(cls, args, shape, runs, dim, dtype)
        return _layouts[key]


def _probe(cls, args: dict, shape: str, runs: int, dim: int, dtype: str = DEFAULT_DTYPE) -> str:
    where = f"optimizer {qualified(cls)}({', '.join(f'{k}={v!r}' for k, v in args.items())})"
    dt = getattr(torch, dtype)
    steps = _probe_steps(args)
    drop_at = steps // 2
    # Rows 10^-2 .. 10^2 apart in gradient scale and, in another order, in starting point: a
    # norm, trust ratio or global estimate shared across rows cannot hide.
    golden = (torch.arange(runs, dtype=torch.float64) * 0.6180339887) % 1
    grad_scale = (10.0 ** (4 * golden - 2))[:, None]
    x_scale = (10.0 ** (2 - 4 * ((golden + 0.5) % 1)))[:, None]
    keep = torch.arange(runs) % 2 == 0 if runs > 1 else torch.ones(1, dtype=torch.bool)
    sample = sorted({0, 1, runs - 2, runs - 1} & set(range(runs)))[:PROBE_ROWS]
    make = functools.partial(cls, **args)

    def run(layout, rows):
        """Final iterates of `rows` (the dropped ones as they were when dropped), stepped in
        `layout` ("reference": one optimizer per row, outside TorchOptimizerState)."""
        generator = torch.Generator().manual_seed(0)
        x0 = (torch.randn(runs, dim, generator=generator, dtype=torch.float64) * x_scale).to(dt)
        out = torch.empty(len(rows), dim, dtype=dt)
        x = x0[rows].clone()
        if layout == "reference":
            params = [x0[r].clone() if shape == "vector" else x0[r:r + 1].clone() for r in rows]
            optimizers = [make([p]) for p in params]
            for opt in optimizers:
                _train_mode(opt)
        else:
            state = TorchOptimizerState(make, layout, x, shape)
        alive = list(range(len(rows)))
        for t in range(steps):
            grad = (torch.randn(runs, dim, generator=generator, dtype=torch.float64) * grad_scale)[rows].to(dt)
            if layout == "reference":
                for i in alive:
                    params[i].grad = grad[i].reshape(params[i].shape).clone()
                    optimizers[i].step()
            else:
                state.step(grad[alive].clone(), x)
            if t + 1 == drop_at:
                for j, i in enumerate(alive):
                    out[i] = (params[i].reshape(dim) if layout == "reference" else x[j])
                mask = torch.tensor([bool(keep[rows[i]]) for i in alive])
                if layout != "reference":
                    x = x[mask]
                    state = state.select(mask)
                alive = [i for i in alive if keep[rows[i]]]
        for j, i in enumerate(alive):
            out[i] = params[i].reshape(dim) if layout == "reference" else x[j]
        return out

    def agrees(a, b):
        rtol, atol = _tolerance(dt)
        return torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True)

    with torch.random.fork_rng(devices=[]), torch.no_grad():
        try:
            reference = run("reference", sample)
            again = run("reference", sample)
        except Exception as error:                  # noqa: BLE001
            raise ValueError(f"{where}: cannot be stepped ({_one_line(error)}); allowed: an optimizer "
                             "that steps a parameter of shape "
                             f"{[dim] if shape == 'vector' else [1, dim]} on its gradient") from None
        if not agrees(reference, again):
            raise ValueError(f"{where}: two identical runs differ (its step draws random numbers), so "
                             "a seed's run would not be reproducible; allowed: a deterministic optimizer")
        for layout in LAYOUTS:
            try:
                if layout == "batched":
                    candidate = run(layout, list(range(runs)))[sample]
                else:
                    candidate = run(layout, sample)
            except Exception:                       # noqa: BLE001 - this layout does not fit
                continue
            if agrees(candidate, reference):
                return layout
    raise ValueError(f"{where}: no layout reproduces one optimizer per seed; allowed: an optimizer "
                     "whose parameters are independent of each other")
