"""The JAX reference of benchmarks/run.py is an honest peer: on an escaping cell its escape-time
distribution is the engine's (two-sample KS test; different random streams, so only in
distribution) and, for SGD, the closed form's mean; on the benchmark's flat cell every seed is
censored at the budget. Skipped without the `bench` extra (jax)."""
import os
import sys

import numpy as np
import pytest

if "jax" not in sys.modules:
    # One intra-op thread, as the benchmark runs it: on a loaded 2-core machine XLA's thread
    # pool only adds synchronisation to arrays this small.
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_multi_thread_eigen=false".strip()
pytest.importorskip("jax", reason="the JAX reference needs the bench extra: pip install -e '.[bench]'")

from scipy import stats  # noqa: E402

from analysis.theory import sgd_escape_time  # noqa: E402
from benchmarks import jax_reference  # noqa: E402
from workflows import simulate_cell  # noqa: E402

SIGMA_ESCAPE = 1e-2        # noise_scale 1, anisotropy 100
LRS = {"sgd": 1e-2, "rmsprop": 1e-3, "adam": 1e-3}
P_MIN = 1e-3               # KS p-value below which the two samples are called different


def escaping_cell(optimizer: str) -> dict:
    # d = 10: nine noisy stable coordinates beside the escape direction, as a benchmark cell has.
    return {"problem": {"name": "quadratic_saddle", "dim": 10, "anisotropy": 1 / SIGMA_ESCAPE},
            "optimizer": {"name": optimizer, "lr": LRS[optimizer]}, "seeds": 1024, "budget": 3000}


@pytest.fixture(scope="module")
def engine_steps():
    cache = {}

    def get(optimizer):
        if optimizer not in cache:
            rows = simulate_cell(escaping_cell(optimizer))
            assert rows.escaped.all()
            cache[optimizer] = rows.escape_step.to_numpy()
        return cache[optimizer]
    return get


@pytest.mark.parametrize("noise", ["block", "step"])
def test_sgd_escape_times_match_the_engine_and_the_closed_form(noise, engine_steps):
    steps, escaped = jax_reference.escape_times(escaping_cell("sgd"), seed=1, noise=noise)
    assert escaped.all()
    assert stats.ks_2samp(steps, engine_steps("sgd")).pvalue > P_MIN
    # E[τ] = (ln(r/s) + C)/ln(1 + ηγ) ≈ 794 steps, sd ≈ 111: the sample mean within 4 standard
    # errors (±14 steps). The closed form follows the escape coordinate alone; the other nine
    # coordinates' stationary spread makes ‖x‖ reach r about 2 steps earlier, well inside that.
    predicted = sgd_escape_time(LRS["sgd"], 1.0, SIGMA_ESCAPE, 1.0)
    assert abs(steps.mean() - predicted) < 4 * steps.std() / np.sqrt(len(steps))


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_adaptive_escape_times_match_the_engine(optimizer, engine_steps):
    """RMSProp and Adam escape here within a few steps of their median (sd 1.6 and 3.5 steps), so
    a formula that moves the escape by a few steps is told apart: Adam with β₁ = 0.8 instead of
    0.9 (15 steps earlier) or without bias correction, RMSProp with β₂ = 0.999: KS p < 1e-18."""
    steps, escaped = jax_reference.escape_times(escaping_cell(optimizer), seed=1, noise="step")
    engine = engine_steps(optimizer)
    assert escaped.all()
    assert stats.ks_2samp(steps, engine).pvalue > P_MIN
    assert abs(np.median(steps) - np.median(engine)) <= 1


def test_the_flat_benchmark_cell_censors_every_seed_at_the_budget():
    cell = {"problem": {"name": "quadratic_saddle", "dim": 2, "curvature": 1e-6, "escape_radius": 1e3},
            "optimizer": {"name": "adam"}, "seeds": 8, "budget": 50}
    steps, escaped = jax_reference.escape_times(cell)
    assert not escaped.any() and (steps == 50).all()


@pytest.mark.parametrize("problem, key", [({"noise_alignment": "rotated"}, "noise_alignment"),
                                          ({"quartic": 0.1}, "quartic"), ({"name": "staib_toy"}, "name")])
def test_a_configuration_the_reference_lacks_is_refused_by_name(problem, key):
    with pytest.raises(ValueError, match=key):
        jax_reference.problem_arrays({"name": "quadratic_saddle", **problem})


def test_the_reference_takes_a_normalised_cell_and_refuses_a_schedule_it_does_not_implement():
    """benchmarks/run.py sends normalised cells, which carry every optimizer's step-size schedule
    at its defaults (a constant step): the reference computes exactly that, and refuses others."""
    from workflows.cell import normalize_cell

    for optimizer in LRS:
        cell = normalize_cell(escaping_cell(optimizer))
        assert cell["optimizer"]["lr_schedule"] == "constant"
        jax_reference.optimizer_fns(cell["optimizer"])
    scheduled = normalize_cell({**escaping_cell("sgd"), "optimizer": {"name": "sgd", "lr": 0.01,
                                                                      "lr_schedule": "inverse_sqrt"}})
    with pytest.raises(ValueError, match="lr_schedule='inverse_sqrt'"):
        jax_reference.optimizer_fns(scheduled["optimizer"])
