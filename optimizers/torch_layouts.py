"""How the torch.optim adapter (optimizers/torch_adapter.py) steps the R runs of one cell, each an
independent run of the class on its own parameters, and the probe that decides it.

Each run's x [d] is handed to the class as the problem's named tensors (workflows/core/shapes.py: U
[n, r], W₁ … W_L, weights and biases), as blocks of x's columns; `param_shape: vector` hands one
[d] tensor, `row` one [1, d]. A layout says how the R runs' tensors become torch parameters:

    batched      one parameter [R, *shape] per tensor            element-wise classes: Adam, Lion
    params       one parameter per run and tensor, one group     per-tensor statistics: LAMB's trust ratio
    groups       one param group per run                         per-group statistics
    optimizers   one optimizer per run                           global statistics: Prodigy's d

The probe (`probe`) steps runs of very different scales, drops half of them half-way (the
engine's compaction), and keeps the first layout, in that order of speed, whose iterates equal
one optimizer per run on that run's own tensors (rtol 1e-9 in float64, 1e-5 in float32).

Two things more than a gradient, each supplied where a class needs it (torch_adapter decides):

- `streams`: a class that draws random numbers in its step (Hutchinson probes, Kron's update
  schedule) steps each run under a generator of its own, seeded by (the cell's seed, the run),
  swapped into torch's global generator around that run's step: a run is then reproducible and
  the same whatever else is in the batch. Only one optimizer per run can keep runs' draws apart,
  so the probe then finds `optimizers`.
- `graph`: a class that differentiates the gradient again (AdaHessian, SophiaH: Hessian-vector
  products, `loss.backward(create_graph=True)`) gets each step's gradient with its graph: the
  problem's loss differentiated by autograd at the run's tensors, plus the step's noise as a
  constant, g + (∇f − ∇f.detach()): its value is the engine's stochastic gradient g exactly, its
  derivative the problem's Hessian.
"""
from __future__ import annotations

import contextlib
from typing import Callable, NamedTuple

import torch

LAYOUTS = ("batched", "params", "groups", "optimizers")
PROBE_ROWS = 4
# Runs' generators: a fixed offset keeps them apart from the engine's noise (seed 2s+1) and the
# problem's (2s) generators.
STREAM_OFFSET = 7_919


class Block(NamedTuple):
    """One tensor of a run's parameters: its columns x[start : start + size] and its shape."""
    start: int
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        n = 1
        for k in self.shape:
            n *= k
        return n

    def batch(self, t: torch.Tensor) -> torch.Tensor:
        """[R, *shape]: the block of every row of t [R, d] (a view)."""
        return t[:, self.start:self.start + self.size].view(t.shape[0], *self.shape)

    def row(self, t: torch.Tensor, i: int) -> torch.Tensor:
        """[*shape]: the block of row i of t (a view)."""
        return t[i, self.start:self.start + self.size].view(*self.shape)


def blocks(shapes, param_shape: str, dim: int) -> list[Block]:
    """The blocks a run's x [dim] is handed to the class as: the problem's tensors (`tensors`),
    one [d] (`vector`) or one [1, d] (`row`)."""
    if param_shape == "vector":
        return [Block(0, (dim,))]
    if param_shape == "row":
        return [Block(0, (1, dim))]
    out, start = [], 0
    for shape in shapes:
        out.append(Block(start, tuple(shape)))
        start += out[-1].size
    return out


class Streams:
    """A generator state per run, swapped into torch's global CPU generator around its step."""

    def __init__(self, seed: int, runs: int):
        with torch.random.fork_rng(devices=[]):
            self.states = []
            for i in range(runs):
                torch.manual_seed((seed * 1_000_003 + i + STREAM_OFFSET) % (2**63))
                self.states.append(torch.get_rng_state())

    @contextlib.contextmanager
    def of(self, i: int):
        outside = torch.get_rng_state()
        torch.set_rng_state(self.states[i])
        try:
            yield
        finally:
            self.states[i] = torch.get_rng_state()
            torch.set_rng_state(outside)

    def keep(self, kept: list[int]):
        self.states = [self.states[i] for i in kept]


class TorchOptimizerState:
    """The class stepping R runs in one layout. x [R, d] is the engine's batch; runs leave it
    (`select`), and the engine then passes a smaller x.

    Without a graph, `batched` parameters are views of x itself (updated in place; re-bound when x
    is a new tensor after a compaction); per-run layouts step views of a buffer [R, d] whose rows
    never change identity (x is copied in, and out again, at each step). With a graph every
    parameter is a leaf of its own, copied in and out."""

    def __init__(self, make: Callable, layout: str, x: torch.Tensor, parts: list[Block],
                 streams: Streams | None = None, loss: Callable | None = None):
        self.make, self.layout, self.parts, self.rows = make, layout, parts, len(x)
        self.streams, self.loss = streams, loss
        if layout == "batched":
            self.x = x
            self.params = [self._leaf(b.batch(x)) for b in parts]
            self.optimizers = [make(list(self.params))]
        else:
            self.buffer = x.detach().clone()
            self.params = [[self._leaf(b.row(self.buffer, i)) for b in parts] for i in range(len(x))]
            self.index = torch.arange(len(x))            # buffer row of each batch row
            self.active = list(range(len(x)))
            if layout == "params":
                self.optimizers = [make([p for run in self.params for p in run])]
            elif layout == "groups":
                self.optimizers = [make([{"params": run} for run in self.params])]
                self.groups = list(self.optimizers[0].param_groups)
            else:
                self.per_run = [make(run) for run in self.params]
                self.optimizers = list(self.per_run)
        for opt in self.optimizers:
            train_mode(opt)

    def _leaf(self, view: torch.Tensor) -> torch.Tensor:
        return view if self.loss is None else view.detach().clone().requires_grad_(True)

    # --- a step ------------------------------------------------------------------------------
    def step(self, grad: torch.Tensor, x: torch.Tensor):
        """One step of every run on grad [R, d]; x [R, d] updated in place."""
        if len(x) != self.rows:
            raise RuntimeError(f"the batch has {len(x)} runs, the optimizer state {self.rows}; "
                               "allowed: select_runs(state, keep) whenever runs leave the batch")
        if self.layout == "batched":
            self._step_batched(grad, x)
        else:
            self._step_per_run(grad, x)

    def _step_batched(self, grad, x):
        if self.loss is None and x is not self.x:
            self._rebind(x)
        if self.loss is not None:
            with torch.no_grad():
                for p, b in zip(self.params, self.parts):
                    p.copy_(b.batch(x))
        self._set_grads(self.params, [b.batch(grad) for b in self.parts], len(x))
        self.optimizers[0].step()
        self._clear_grads(self.params)
        if self.loss is not None:
            with torch.no_grad():
                for p, b in zip(self.params, self.parts):
                    b.batch(x).copy_(p)

    def _step_per_run(self, grad, x):
        full = len(self.active) == len(self.params)
        with torch.no_grad():
            if full:
                self.buffer.copy_(x)
            else:
                self.buffer.index_copy_(0, self.index, x)
            if self.loss is not None:                  # leaves of their own: copy the buffer in
                for i in self.active:
                    for p, b in zip(self.params[i], self.parts):
                        p.copy_(b.row(self.buffer, i))
        params = [p for i in self.active for p in self.params[i]]
        grads = [b.row(grad, j) for j in range(len(self.active)) for b in self.parts]
        self._set_grads(params, grads, len(self.active))
        if self.layout == "optimizers":
            for j, i in enumerate(self.active):
                with self.streams.of(j) if self.streams is not None else contextlib.nullcontext():
                    self.per_run[i].step()
        else:
            for opt in self.optimizers:
                opt.step()
        self._clear_grads(params)
        with torch.no_grad():
            if self.loss is not None:
                for i in self.active:
                    for p, b in zip(self.params[i], self.parts):
                        b.row(self.buffer, i).copy_(p)
            x.copy_(self.buffer if full else self.buffer.index_select(0, self.index))

    def _set_grads(self, params: list, grads: list, runs: int):
        """p.grad for each parameter; with a graph, the problem's gradient carried along."""
        if self.loss is None:
            for p, g in zip(params, grads):
                p.grad = g
            return
        with torch.enable_grad():
            if self.layout == "batched":
                groups = [params]                       # one graph: one optimizer steps them all
            elif self.layout == "optimizers":
                # A graph per run: each run's optimizer differentiates its own (and frees it).
                per_run = len(params) // runs
                groups = [params[k * per_run:(k + 1) * per_run] for k in range(runs)]
            else:
                groups = [params]
            exact = []
            for group in groups:
                exact += torch.autograd.grad(self.loss(self._flat(group, runs if group is params else 1)).sum(),
                                             group, create_graph=True)
            for p, g, e in zip(params, grads, exact):
                p.grad = g.detach().reshape(p.shape) + (e - e.detach())

    def _flat(self, params: list, runs: int) -> torch.Tensor:
        """[runs, d]: the runs' tensors (batched: [R, *shape] each; else each run's in turn) as rows."""
        if self.layout == "batched":
            return torch.cat([p.reshape(runs, -1) for p in params], dim=1)
        per_run = len(params) // runs
        return torch.stack([torch.cat([p.reshape(-1) for p in params[k * per_run:(k + 1) * per_run]])
                            for k in range(runs)])

    @staticmethod
    def _clear_grads(params):
        for p in params:
            p.grad = None                              # a graph's memory goes with it

    # --- the batch shrinks ------------------------------------------------------------------------
    def select(self, keep) -> "TorchOptimizerState":
        """Keep the runs in `keep` (boolean mask or indices over the batch rows)."""
        keep = torch.as_tensor(keep)
        keep = keep.nonzero().flatten() if keep.dtype == torch.bool else keep.long()
        if self.layout == "batched":
            opt = self.optimizers[0]
            for table in [opt.state[p] for p in self.params] + list(opt.param_groups):
                for key, value in list(table.items()):
                    if torch.is_tensor(value) and value.dim() and value.shape[0] == self.rows:
                        table[key] = value[keep]
            if self.loss is not None:                  # leaves of their own: shrink them too
                self._rebind_params([p.detach()[keep].clone().requires_grad_(True) for p in self.params])
        else:
            kept = [self.active[i] for i in keep.tolist()]
            for i in set(self.active) - set(kept):
                for opt in self.optimizers:
                    for p in self.params[i]:
                        opt.state.pop(p, None)
            if self.streams is not None:
                self.streams.keep(keep.tolist())
            self.active, self.index = kept, self.index[keep]
            if self.layout == "params":
                self.optimizers[0].param_groups[0]["params"] = [p for i in kept for p in self.params[i]]
            elif self.layout == "groups":
                self.optimizers[0].param_groups = [self.groups[i] for i in kept]
            else:
                self.optimizers = [self.per_run[i] for i in kept]
        self.rows = len(keep)
        return self

    def _rebind(self, x):
        self._rebind_params([b.batch(x) for b in self.parts])
        self.x = x

    def _rebind_params(self, new: list[torch.Tensor]):
        opt = self.optimizers[0]
        for old, p in zip(self.params, new):
            if old in opt.state:
                opt.state[p] = opt.state.pop(old)
        opt.param_groups[0]["params"] = list(new)
        self.params = list(new)

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


def train_mode(opt):
    """Schedule-free optimizers step only in train mode, where the parameter holds y."""
    train = getattr(type(opt), "train", None)
    if callable(train):
        opt.train()


# --- the probe ---------------------------------------------------------------------------------

def tolerance(dtype) -> tuple[float, float]:
    """(rtol, atol) within which two runs count as equal: a few hundred ulps of the dtype."""
    return (1e-9, 1e-12) if dtype == torch.float64 else (1e-5, 1e-8)


# The probe's loss where a class needs the gradient's graph, per run: f = Σ ½ c_j x_j² + κ Σ x_j x_{j+1},
# curvatures of different sizes and a coupling (a Hessian estimate shows in the iterates, and a
# random probe of a non-diagonal Hessian shows its draws).
COUPLING = 0.1


def probe_loss(x: torch.Tensor) -> torch.Tensor:
    c = 0.25 * 4.0 ** (torch.arange(x.shape[1], dtype=x.dtype) % 3)
    return 0.5 * (c * x.square()).sum(-1) + COUPLING * (x[:, 1:] * x[:, :-1]).sum(-1)


def probe(make: Callable, parts: list[Block], runs: int, dtype, steps: int, streams: bool, graph: bool,
          where: str) -> str:
    """The fastest layout whose iterates equal one optimizer per run (the module docstring).
    Raises ValueError (one line) when the class cannot be stepped, is not reproducible, or no
    layout reproduces one optimizer per run."""
    probe_runs = ProbeRuns(make, parts, runs, dtype, steps, streams, graph)
    sample = probe_runs.sample
    shapes = [list(b.shape) for b in parts]
    with torch.random.fork_rng(devices=[]):
        try:
            reference = probe_runs.final("reference", sample)
            again = probe_runs.final("reference", sample)
        except Exception as error:                  # noqa: BLE001
            raise ValueError(f"{where}: cannot be stepped ({one_line(error)}); allowed: an optimizer "
                             f"that steps parameters of shapes {shapes} on their gradients") from None
        if not probe_runs.agree(reference, again):
            raise ValueError(f"{where}: two identical runs differ, also with a generator of its own per run, so "
                             "a seed's run would not be reproducible; allowed: a deterministic optimizer, or "
                             "one whose randomness comes from torch's generator")
        # Runs' draws stay apart only with an optimizer per run, each stepped under its own stream.
        for layout in ("optimizers",) if streams else LAYOUTS:
            try:
                candidate = (probe_runs.final(layout, list(range(runs)))[sample] if layout == "batched" else
                             probe_runs.final(layout, sample))
            except Exception:                       # noqa: BLE001 - this layout does not fit
                continue
            if probe_runs.agree(candidate, reference):
                return layout
    raise ValueError(f"{where}: no layout reproduces one optimizer per seed; allowed: an optimizer "
                     "whose parameters are independent of each other")


class ProbeRuns:
    """The probe's runs: `runs` rows whose gradient noise and starting points lie 10^-2 .. 10^2
    apart (in two different orders: a norm, trust ratio or global estimate shared across rows
    cannot hide), every other row dropped half-way (a layout must drop rows as the engine does);
    the final iterates of some rows in a layout, or in the plain reference (PlainRun)."""

    def __init__(self, make: Callable, parts: list[Block], runs: int, dtype, steps: int, streams: bool,
                 graph: bool):
        self.make, self.parts, self.runs, self.dtype = make, parts, runs, dtype
        self.steps, self.streams, self.graph = steps, streams, graph
        self.dim = sum(b.size for b in parts)
        golden = (torch.arange(runs, dtype=torch.float64) * 0.6180339887) % 1
        self.grad_scale = (10.0 ** (4 * golden - 2))[:, None]
        self.x_scale = (10.0 ** (2 - 4 * ((golden + 0.5) % 1)))[:, None]
        self.keep = torch.arange(runs) % 2 == 0 if runs > 1 else torch.ones(1, dtype=torch.bool)
        self.sample = sorted({0, 1, runs - 2, runs - 1} & set(range(runs)))[:PROBE_ROWS]

    def agree(self, a: torch.Tensor, b: torch.Tensor) -> bool:
        rtol, atol = tolerance(self.dtype)
        return torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True)

    def final(self, layout: str, rows: list[int]) -> torch.Tensor:
        """Final iterates [len(rows), dim] of `rows` (the dropped ones as they were when dropped), in
        `layout` ("reference": one optimizer per row, each on its own tensors)."""
        generator = torch.Generator().manual_seed(0)
        x0 = (torch.randn(self.runs, self.dim, generator=generator, dtype=torch.float64) * self.x_scale).to(self.dtype)
        noises = ((torch.randn(self.runs, self.dim, generator=generator, dtype=torch.float64) * self.grad_scale)[rows]
                  .to(self.dtype) for _ in range(self.steps))
        if layout == "reference":
            return self._reference(x0, rows, noises)
        return self._in_layout(layout, x0, rows, noises)

    def _reference(self, x0, rows, noises) -> torch.Tensor:
        out = torch.empty(len(rows), self.dim, dtype=self.dtype)
        run_streams = Streams(0, len(rows)) if self.streams else None
        reference = [PlainRun(self.make, x0[r], self.parts, self.graph) for r in rows]
        alive = list(range(len(rows)))
        for t, noise in enumerate(noises):
            for i in alive:
                with run_streams.of(i) if self.streams else contextlib.nullcontext():
                    reference[i].step(noise[i])
            if t + 1 == self.steps // 2:
                for i in alive:
                    out[i] = reference[i].x()
                alive = [i for i in alive if self.keep[rows[i]]]
        for i in alive:
            out[i] = reference[i].x()
        return out

    def _in_layout(self, layout, x0, rows, noises) -> torch.Tensor:
        out = torch.empty(len(rows), self.dim, dtype=self.dtype)
        x = x0[rows].clone()
        state = TorchOptimizerState(self.make, layout, x, self.parts, Streams(0, len(rows)) if self.streams else None,
                                    probe_loss if self.graph else None)
        alive = list(range(len(rows)))
        for t, noise in enumerate(noises):
            state.step(noise[alive] + (probe_gradient(x) if self.graph else 0), x)
            if t + 1 == self.steps // 2:
                for j, i in enumerate(alive):
                    out[i] = x[j]
                mask = torch.tensor([bool(self.keep[rows[i]]) for i in alive])
                x, state = x[mask], state.select(mask)
                alive = [i for i in alive if self.keep[rows[i]]]
        for j, i in enumerate(alive):
            out[i] = x[j]
        return out


class PlainRun:
    """The reference: one run, one optimizer, written plainly (no layout code): its own tensors,
    and with a graph, the gradient of probe_loss by autograd plus the noise as a constant."""

    def __init__(self, make, x0: torch.Tensor, parts: list[Block], graph: bool):
        self.parts, self.graph = parts, graph
        self.params = [x0[b.start:b.start + b.size].clone().view(*b.shape).requires_grad_(graph) for b in parts]
        self.optimizer = make(self.params)
        train_mode(self.optimizer)

    def x(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    def step(self, noise: torch.Tensor):
        if self.graph:
            with torch.enable_grad():
                flat = torch.cat([p.reshape(-1) for p in self.params])
                grads = torch.autograd.grad(probe_loss(flat[None]).sum(), self.params, create_graph=True)
            for p, g, b in zip(self.params, grads, self.parts):
                p.grad = g + noise[b.start:b.start + b.size].view(*b.shape)
        else:
            gradient = noise
            for p, b in zip(self.params, self.parts):
                p.grad = gradient[b.start:b.start + b.size].view(*b.shape).clone()
        self.optimizer.step()
        for p in self.params:
            p.grad = None


def probe_gradient(x: torch.Tensor) -> torch.Tensor:
    """∇probe_loss, per run (its value, without a graph)."""
    c = 0.25 * 4.0 ** (torch.arange(x.shape[1], dtype=x.dtype) % 3)
    g = c * x
    g[:, 1:] += COUPLING * x[:, :-1]
    g[:, :-1] += COUPLING * x[:, 1:]
    return g


def one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"
