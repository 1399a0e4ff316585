"""The JAX reference: what a strong user would write instead of saddlescape for ONE cell.

One jitted function runs every seed of a `quadratic_saddle` cell (diagonal H, one or more
escape directions −curvature, the rest positive; additive Gaussian noise, std noise_scale off
the escape directions and noise_scale/anisotropy along them, problems/quadratic_saddle.py) with
sgd, rmsprop or adam written as torch.optim computes them, and returns each seed's first escape
step (‖x‖ ≥ escape_radius), right-censored at the budget where it never escaped, as the engine
(workflows/engine.py) records it.

The loop, all inside `jax.jit`: a `lax.while_loop` over blocks of steps that stops once every
seed has escaped (or the budget is spent), each block a `lax.scan` over its steps that tests
‖x‖² ≥ r² after every step. The noise comes from `jax.random` (threefry; a key per block by
`fold_in`), either drawn for the whole block at the block's start (`noise="block"`: one
[steps, R, d] generator call, at least 2 steps) or at every step inside the scan (`noise="step"`:
a second `fold_in` per step). Which is faster depends on the size and the optimizer:
benchmarks/run.py times both (alternately, with the engine) and keeps the faster, as a strong
user would.

    .venv/bin/python benchmarks/jax_reference.py --serve    (the worker benchmarks/run.py starts)

Needs the `bench` extra: pip install -e '.[bench]'. Importing this module does not import jax;
`import_jax()` does, after `one_core()` has pinned the process to one core, so call that first
when the rate is to be compared with the engine's (which runs on one thread, as a Ray trial).
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import time

# Read once, when jax starts: Eigen's intra-op thread pool off. (TensorFlow's
# intra_op_parallelism_threads is no XLA flag: XLA ignores it bare and aborts on it with "--".)
# One core is what the process affinity of one_core() guarantees, whatever threads XLA starts.
ONE_THREAD_FLAGS = "--xla_cpu_multi_thread_eigen=false"
BLOCK_ELEMENTS = 1 << 16          # noise drawn per block (noise="block"): 256 KiB of float32, in L2
STEP_NOISE_BLOCK = 100            # steps per scan when the noise is drawn inside it
SUPPORTED = {"noise_alignment": "aligned", "rotate_hessian": False, "noise_dist": "gaussian",
             "noise_model": "additive", "quartic": 0.0, "escape_measure": "norm"}
UNUSED = {"df", "stable_alpha", "noise_length"}     # parameters of options other than SUPPORTED's
PROBLEM_DEFAULTS = {"dim": 10, "n_negative": 1, "curvature": 1.0, "positive_curvature": 1.0, "condition": 1.0,
                    "noise_scale": 1.0, "anisotropy": 1.0, "escape_radius": 1.0}
# saddlescape's defaults (optimizers/*.py SCHEMA), which are torch.optim's but for the lr.
OPTIMIZER_DEFAULTS = {"sgd": {"lr": 1e-2}, "rmsprop": {"lr": 1e-3, "beta2": 0.99, "eps": 1e-8},
                      "adam": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "bias_correction": True}}


def available() -> bool:
    return importlib.util.find_spec("jax") is not None


def one_core() -> int | None:
    """Pin this process to one core and XLA to one intra-op thread. Call before importing jax.
    Returns the core (None where affinity cannot be set)."""
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {ONE_THREAD_FLAGS}".strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if not hasattr(os, "sched_setaffinity"):
        return None
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def import_jax():
    """jax, with threefry keys in their single-device layout: on one CPU there is nothing to
    partition, and measured here it compiles 3-5x faster (4 s against 13-24 s for a cell, loaded
    machine) and runs 2-3x faster (adam, 1024 x 10: 3.1e6 against 1.6e6 seed-steps/s)."""
    import jax

    jax.config.update("jax_threefry_partitionable", False)
    return jax


# ---------------------------------------------------------------- the problem and the optimizers

def problem_arrays(problem: dict):
    """(eigs [d], noise_std [d], escape_radius) of a quadratic_saddle with H and Σ diagonal; the
    escape directions first, as problems/quadratic_saddle.py orders them. ValueError for a
    configuration the reference does not implement (rotations, quartic, Student-t, projection)."""
    import numpy as np

    p = {**PROBLEM_DEFAULTS, **SUPPORTED, **{k: v for k, v in problem.items() if k != "name"}}
    if problem.get("name", "quadratic_saddle") != "quadratic_saddle":
        raise ValueError(f"problem.name={problem['name']!r}: the JAX reference implements quadratic_saddle only")
    for key, allowed in SUPPORTED.items():
        if p[key] != allowed:
            raise ValueError(f"problem.{key}={p[key]!r}: the JAX reference implements {allowed!r} only")
    unknown = set(p) - set(PROBLEM_DEFAULTS) - set(SUPPORTED) - UNUSED
    if unknown:
        raise ValueError(f"problem keys {sorted(unknown)}: not known to the JAX reference "
                         f"(it knows {sorted({*PROBLEM_DEFAULTS, *SUPPORTED, *UNUSED})})")
    d, k = p["dim"], p["n_negative"]
    eigs = np.concatenate([np.full(k, -p["curvature"]),
                           p["positive_curvature"] * np.logspace(0, -math.log10(p["condition"]), d - k)])
    std = np.concatenate([np.full(k, p["noise_scale"] / p["anisotropy"]), np.full(d - k, p["noise_scale"])])
    return eigs.astype(np.float32), std.astype(np.float32), float(p["escape_radius"])


def optimizer_fns(optimizer: dict):
    """(init(x) -> state, update(g, state, x, t) -> (x, state)) as torch.optim computes them:
    SGD; RMSprop (v ← αv + (1−α)g², x ← x − η g/(√v + ε), no bias correction); Adam (m ← lerp(m, g,
    1−β₁), v as RMSprop, x ← x − η/(1−β₁ᵗ) · m/(√v/√(1−β₂ᵗ) + ε)). t counts from 1."""
    import jax.numpy as jnp

    from workflows.core.schedules import SCHEDULE_SCHEMA

    name = optimizer.get("name")
    if name not in OPTIMIZER_DEFAULTS:
        raise ValueError(f"optimizer.name={name!r}: the JAX reference implements {sorted(OPTIMIZER_DEFAULTS)}")
    hp = {**OPTIMIZER_DEFAULTS[name], **{k: v for k, v in optimizer.items() if k != "name"}}
    # A normalised cell carries every optimizer's step-size schedule at its defaults (a constant
    # step, no per-step beta2 rule): those are what this reference computes; any other is refused.
    for key, param in SCHEDULE_SCHEMA.items():
        if key in hp:
            if hp[key] != param.default:
                raise ValueError(f"optimizer.{key}={hp[key]!r}: the JAX reference implements "
                                 f"{key}={param.default!r} only")
            del hp[key]
    unknown = set(hp) - set(OPTIMIZER_DEFAULTS[name])
    if unknown:
        raise ValueError(f"optimizer keys {sorted(unknown)}: not known to the JAX reference's {name}")
    lr = hp["lr"]
    if name == "sgd":
        return (lambda x: ()), (lambda g, state, x, t: (x - lr * g, state))
    if name == "rmsprop":
        beta2, eps = hp["beta2"], hp["eps"]

        def rmsprop(g, v, x, t):
            v = beta2 * v + (1 - beta2) * g * g
            return x - lr * g / (jnp.sqrt(v) + eps), v
        return jnp.zeros_like, rmsprop
    beta1, beta2, eps, corrected = hp["beta1"], hp["beta2"], hp["eps"], hp["bias_correction"]

    def adam(g, state, x, t):
        m, v = state
        m = m + (1 - beta1) * (g - m)
        v = beta2 * v + (1 - beta2) * g * g
        step_size, v_scale = lr, 1.0
        if corrected:
            t = t.astype(jnp.float32)
            step_size = lr / (1 - beta1**t)
            v_scale = jnp.sqrt(1 - beta2**t)
        return x - step_size * m / (jnp.sqrt(v) / v_scale + eps), (m, v)
    return (lambda x: (jnp.zeros_like(x), jnp.zeros_like(x))), adam


# ---------------------------------------------------------------- the jitted cell

def block_steps(noise: str, runs: int, dim: int, budget: int) -> int:
    """Steps per scan: the block's noise within BLOCK_ELEMENTS but at least 2 steps (noise="block"),
    or a fixed scan length (noise="step"); then evened out so that the blocks cover the budget
    with < 1 step per block to spare. At least 2: a block's noise is then an array of its own,
    never fused into the update; fused (drawn per step), XLA put the whole normal draw inside
    SGD's update loop and ran 16384 x 100 at a third of the rate (8.8e4 against 3.0e5 seed-steps
    per second, measured alternately; RMSProp and Adam the same either way)."""
    wanted = max(2, BLOCK_ELEMENTS // (runs * dim)) if noise == "block" else STEP_NOISE_BLOCK
    blocks = math.ceil(budget / min(wanted, budget))
    return math.ceil(budget / blocks)


def build(cell: dict, noise: str = "block"):
    """A jitted fn(key) -> (escape_step int32 [R], escaped bool [R]) for the cell (keys as in
    workflows.cell: problem, optimizer, seeds, budget). Run to the budget for every seed or until
    all have escaped; a seed's escape step is the first step t (1..budget) after whose update
    ‖x‖ ≥ escape_radius, and `budget` where it never got there."""
    import jax.numpy as jnp

    jax = import_jax()
    if noise not in ("block", "step"):
        raise ValueError(f"noise={noise!r}: one of 'block', 'step'")
    eigs_np, std_np, radius = problem_arrays(cell["problem"])
    init, update = optimizer_fns(cell["optimizer"])
    runs, budget, dim = int(cell["seeds"]), int(cell["budget"]), len(eigs_np)
    steps = block_steps(noise, runs, dim, budget)
    blocks = math.ceil(budget / steps)
    eigs, std, radius2 = jnp.asarray(eigs_np), jnp.asarray(std_np), jnp.float32(radius**2)

    def step(carry, t, z):
        x, state, escaped, escape_step = carry
        x, state = update(eigs * x + std * z, state, x, t)
        # ‖x‖² ≥ r²: no square root; steps past the budget (the last block's spare) are not recorded.
        new = (jnp.sum(x * x, axis=-1) >= radius2) & ~escaped & (t <= budget)
        return x, state, escaped | new, jnp.where(new, t, escape_step)

    def run_block(carry, key):
        b, inner = carry
        block_key = jax.random.fold_in(key, b)
        first = b * steps + 1
        if noise == "block":
            zs = jax.random.normal(block_key, (steps, runs, dim), jnp.float32)
            inner, _ = jax.lax.scan(lambda c, tz: (step(c, tz[0], tz[1]), None), inner,
                                    (first + jnp.arange(steps, dtype=jnp.int32), zs))
        else:
            def body(c, i):
                z = jax.random.normal(jax.random.fold_in(block_key, i), (runs, dim), jnp.float32)
                return step(c, first + i, z), None
            inner, _ = jax.lax.scan(body, inner, jnp.arange(steps, dtype=jnp.int32))
        return b + 1, inner

    @jax.jit
    def run(key):
        x = jnp.zeros((runs, dim), jnp.float32)
        inner = (x, init(x), jnp.zeros(runs, bool), jnp.full(runs, budget, jnp.int32))
        carry = (jnp.int32(0), inner)
        carry = jax.lax.while_loop(lambda c: (c[0] < blocks) & ~jnp.all(c[1][2]),
                                   lambda c: run_block(c, key), carry)
        _, (_, _, escaped, escape_step) = carry
        return escape_step, escaped

    return run


def escape_times(cell: dict, seed: int = 0, noise: str = "block"):
    """numpy (escape_step [R], escaped [R]) of the cell, its seeds' noise from jax.random.key(seed)."""
    import jax
    import numpy as np

    escape_step, escaped = build(cell, noise)(jax.random.key(seed))
    return np.asarray(escape_step), np.asarray(escaped)


# ---------------------------------------------------------------- timing

def compile_cell(cell: dict, noise: str):
    """(compiled fn, seconds to trace and compile it): the time the first call would add."""
    import jax

    start = time.perf_counter()
    compiled = build(cell, noise).lower(jax.random.key(0)).compile()
    return compiled, time.perf_counter() - start


def timed_run(compiled, cell: dict, seed: int) -> dict:
    """One call with a fresh key: seed-steps per second (seeds × budget over the wall time, to
    block_until_ready) and the share of seeds that escaped (0 where every seed must run every step)."""
    import jax

    key = jax.random.key(seed)
    start = time.perf_counter()
    escape_step, escaped = compiled(key)
    escape_step.block_until_ready()
    seconds = time.perf_counter() - start
    return {"seed_steps_per_s": int(cell["seeds"]) * int(cell["budget"]) / seconds, "seconds": seconds,
            "escaped_share": float(escaped.mean())}


def serve(stdin=sys.stdin, stdout=sys.stdout):
    """A measuring worker on one core, one JSON request per line and one JSON answer per line:
    {"compile": cell, "noise": n} -> {"compile_seconds", "block_steps"}, then any number of
    {"run": cell, "noise": n, "seed": s} -> timed_run's answer; {"error": ...} for a bad request.
    benchmarks/run.py keeps one alive to alternate its measurements with the engine's."""
    core = one_core()
    jax = import_jax()
    print(json.dumps({"ready": True, "jax": jax.__version__, "core": core, "xla_flags": os.environ["XLA_FLAGS"]}),
          file=stdout, flush=True)
    compiled = {}                          # (cell, noise) -> executable, for the current cell only
    for line in stdin:
        try:
            request = json.loads(line)
            cell = request.get("compile") or request["run"]
            name = (json.dumps(cell, sort_keys=True), request["noise"])
            if "compile" in request:
                if not any(key[0] == name[0] for key in compiled):
                    compiled.clear()
                compiled[name], seconds = compile_cell(cell, request["noise"])
                answer = {"compile_seconds": seconds, "block_steps": block_steps(
                    request["noise"], int(cell["seeds"]), int(cell["problem"]["dim"]), int(cell["budget"]))}
            else:
                answer = timed_run(compiled[name], cell, int(request.get("seed", 1)))
        except (ValueError, KeyError, TypeError) as error:
            answer = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(answer), file=stdout, flush=True)


class Peer:
    """The client of `serve`: a worker subprocess on one core, jax imported there only.

        with Peer() as peer:
            peer.compile(cell, "block")     # {"compile_seconds", "block_steps"}
            peer.run(cell, "block", seed=1)  # {"seed_steps_per_s", "seconds", "escaped_share"}

    `info` is the worker's greeting: jax version, the core it is pinned to (None: not pinned),
    its XLA_FLAGS. RuntimeError when the worker answers an error or exits."""

    def __init__(self):
        self.process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = self._answer()

    def _answer(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the JAX worker exited (status {self.process.wait()}); its stderr is above")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"the JAX worker refused the request: {answer['error']}")
        return answer

    def ask(self, request: dict) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._answer()

    def compile(self, cell: dict, noise: str) -> dict:
        return self.ask({"compile": cell, "noise": noise})

    def run(self, cell: dict, noise: str, seed: int) -> dict:
        return self.ask({"run": cell, "noise": noise, "seed": seed})

    def close(self):
        self.process.stdin.close()          # the worker's loop ends at end of input
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


if __name__ == "__main__":
    if sys.argv[1:] != ["--serve"]:
        sys.exit("usage: python benchmarks/jax_reference.py --serve   (requests as JSON lines on stdin)")
    serve()
