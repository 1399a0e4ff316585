"""Issue 24, items 1-4: what the report and the analysis say. One test (or a few) per kind of
fault, each on a small input that the analysis got wrong before:

 1 a verdict from a fit with no information        3 figures that say more than the data
 2 rows that look right but are not                4 tables a reader cannot use
"""
import io
import itertools
import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from seaborn.external import husl

from analysis import analyze, load_results
from analysis.cells import cell_table, method_labels
from analysis.compare import _theory_slopes, compare_exponents, sgd_slope_check, with_predictions
from analysis.figures import kaplan_meier_curves, loss_traces, speedup_heatmap
from analysis.palette import palette
from analysis.report import markdown_table
from analysis.scaling import fit_scaling
from analysis.synthetic import synthetic_rows
from workflows import simulate, simulate_cell
from workflows.cli import main as cli

PNG = {"formats": ("png",), "dpi": 60}
ANISOTROPIES = (1, 3, 10, 30, 100, 300, 1000)


def capture(draw, *args):
    """The Figure a figure function draws and its caption, without saving it."""
    captured = {}
    draw(*args, None, lambda fig, path, caption: captured.update(fig=fig, caption=caption))
    return captured["fig"], captured["caption"]


def section(report: str, heading: str) -> str:
    return report.split(f"## {heading}")[1].split("\n## ")[0]


# --- 1. a verdict from a fit with no information ------------------------------------------------------

@pytest.fixture(scope="module")
def one_cell_escapes():
    """The issue's case: SGD at lr 1e-5 (no run escapes in 3000 steps) and 1e-2: a fit of the lr
    exponent over two cells, one censored only."""
    return pd.concat([simulate_cell({"problem": {"name": "quadratic_saddle", "dim": 10},
                                     "optimizer": {"name": "sgd", "lr": lr}, "seeds": 50, "budget": 3000})
                      for lr in (1e-5, 1e-2)], ignore_index=True)


def test_a_fit_resting_on_a_censored_only_cell_gets_no_verdict(one_cell_escapes, tmp_path):
    assert one_cell_escapes.groupby("optimizer.lr")["escaped"].mean().tolist() == [0.0, 1.0]
    report = analyze(one_cell_escapes, tmp_path, **PNG).read_text()
    exponents = pd.read_csv(tmp_path / "exponents.csv")
    assert exponents["verdict"].tolist() == ["no verdict"]              # was "holds" ([-1.262e+06, 1.262e+06])
    assert "1 cell with an escape for 2 location parameters" in exponents["no_verdict"].iloc[0]
    sentence = next(line for line in section(report, "Findings").splitlines() if "exponent of lr" in line)
    assert "**no verdict**" in sentence and "censored only" in sentence and "**holds**" not in sentence
    assert "no verdict" in section(report, "How escape is measured")     # the rule is stated


def test_an_interval_too_wide_to_tell_exponents_apart_gets_no_verdict(tmp_path):
    """Three step sizes 10% apart and three runs each: the lr exponent's interval spans several units."""
    rows = synthetic_rows(lrs=(1e-3, 1.1e-3, 1.2e-3), sigmas=(0.1,), seeds=3, noise=0.5, censored=0.0)
    cells = with_predictions(cell_table(rows))
    exponents, _ = fit_scaling(rows, cells)
    assert exponents["hi"].iloc[0] - exponents["lo"].iloc[0] > 1
    check = compare_exponents(exponents, cells)
    assert check["verdict"].tolist() == ["no verdict"]                  # was "holds": anything is inside
    assert "uninformative" in check["no_verdict"].iloc[0]


def test_lifelines_warnings_are_reported_next_to_the_fit(tmp_path):
    """Every run of a cell escaping at the same step (the sign regime is deterministic): the AFT fit
    cannot converge, and lifelines says why; the report says both, next to the fit."""
    rows = pd.concat([pd.DataFrame({"cell_id": f"c{i}", "problem.name": "quadratic_saddle", "optimizer.name": "sgd",
                                    "optimizer.lr": lr, "seed": np.arange(20), "escaped": True,
                                    "escape_step": int(1 / lr), "budget": 3000})
                      for i, lr in enumerate((1e-3, 1e-2, 1e-1))], ignore_index=True)
    report = analyze(rows, tmp_path, **PNG).read_text()
    fits = pd.read_csv(tmp_path / "fits.csv")
    assert fits["status"].iloc[0] == "failed: ConvergenceError: Fitting did not converge"
    assert "ConvergenceWarning" in fits["warnings"].iloc[0]
    sentence = next(line for line in section(report, "Findings").splitlines() if "no exponents" in line)
    assert "the fit failed" in sentence and "lifelines warned: ConvergenceWarning" in sentence


def test_the_sgd_slope_over_three_close_cells_gets_no_verdict():
    """Prediction 1's least-squares slope over three cells half a unit of the logarithm apart: its
    interval is [-16, 17], and 1/2 "holds" inside it."""
    lr = np.array([0.01, 0.013, 0.017])
    y = 0.5 * np.log(1 / lr) + np.array([0.3, -0.3, 0.3])
    cells = pd.DataFrame({"cell_id": list("abc"), "optimizer.name": "sgd", "optimizer.lr": lr, "curvature": 1.0,
                          "escape_radius": 1.0, "sigma_escape": 1.0, "escape_mean": y / lr + 0.5, "predicted_mean": 1.0,
                          "theory_model": "sgd: linear recursion"})
    check = sgd_slope_check(cells)
    assert check["lo"] < 0.5 < check["hi"] and check["verdict"].startswith("no verdict")


def test_close_for_an_exponent_is_relative_to_the_theory():
    """0.22 against 0.156 was "close" (within 0.1 absolute); 41% off is a failure. 3.6% off stays close."""
    rows = synthetic_rows(seeds=40, censored=0.0)
    cells = with_predictions(cell_table(rows))
    exponents, _ = fit_scaling(rows, cells)
    theory = compare_exponents(exponents, cells).set_index("covariate")["theory"]
    exponents = exponents.set_index("covariate")
    for covariate, factor in (("lr", 1.036), ("sigma_escape", 1.41)):
        centre = theory[covariate] * factor
        exponents.loc[covariate, ["exponent", "lo", "hi"]] = [centre, centre - 0.002, centre + 0.002]
    check = compare_exponents(exponents.reset_index(), cells).set_index("covariate")["verdict"]
    assert check["lr"] == "close" and check["sigma_escape"] == "fails"


def test_a_slope_the_closed_form_does_not_have_is_zero():
    """The sign regime's tau = r/lr does not depend on sigma: its least-squares slope is 0, not 1e-15."""
    cells = pd.DataFrame(list(itertools.product((1e-3, 3e-3, 1e-2), [1 / a for a in ANISOTROPIES])),
                         columns=["optimizer.lr", "sigma_escape"])
    cells["predicted_median"] = 1 / cells["optimizer.lr"]
    slopes, used = _theory_slopes(cells, ["optimizer.lr", "sigma_escape"])
    assert slopes["sigma_escape"] == 0.0 and slopes["lr"] == pytest.approx(-1) and used == "21 of 21"


# --- 2. rows that look right but are not -----------------------------------------------------------------

@pytest.fixture(scope="module")
def none_escaped():
    """Two cells; in the first no run of 50 escapes (censored at the budget, 2000)."""
    rows = synthetic_rows(lrs=(1e-3,), sigmas=(0.1, 1.0), seeds=50, censored=0.0)
    first = rows["cell_id"] == rows["cell_id"].iloc[0]
    rows.loc[first, ["escaped", "escape_step", "final_step"]] = [False, 2000, 2000]
    rows["budget"] = 2000
    return rows


def test_booleans_read_back_as_text_are_refused_naming_the_column(none_escaped, tmp_path):
    """`escaped` read from a CSV as "True"/"False": bool("False") is True, and the cell where 0 of 50
    escaped was reported as escaped_fraction 1, median 2000."""
    back = pd.read_csv(io.StringIO(none_escaped.to_csv(index=False)), dtype={"escaped": str})
    with pytest.raises(ValueError, match=r"^rows: column escaped holds booleans written as text \('False', 'True'"):
        analyze(back, tmp_path / "out", **PNG)
    assert not (tmp_path / "out").exists()                              # nothing written


@pytest.mark.parametrize("column, values, why", [
    ("optimizer.lr", lambda r: r["optimizer.lr"].astype(str), "holds numbers written as text"),
    ("escape_step", lambda r: r["escape_step"] + 0.5, "holds values that are not whole numbers"),
    ("run_to_budget", lambda r: "False", "holds booleans written as text"),
    ("final_loss", lambda r: r["final_loss"].astype(object).where(r["seed"] > 0, "n/a"), "mixes text and numbers"),
    ("cell_id", lambda r: r["cell_id"].str.len() * 1000 + r["seed"] // 25, "holds numbers"),
    ("diverged", lambda r: 2 * r["diverged"].astype(int) + 2, "holds numbers other than 0 and 1"),
])
def test_every_column_is_read_as_its_declared_type(none_escaped, column, values, why):
    with pytest.raises(ValueError, match=f"^rows: column {column} {why}") as error:
        load_results(none_escaped.assign(**{column: values(none_escaped)}))
    assert "\n" not in str(error.value)


def test_values_that_can_be_read_exactly_are_kept(none_escaped):
    """0/1 for a boolean, whole floats for a step, a CSV read back with its types: all fine."""
    back = pd.read_csv(io.StringIO(none_escaped.to_csv(index=False)))
    rows = load_results(back.assign(escaped=back["escaped"].astype(int), escape_step=back["escape_step"] * 1.0)).rows
    assert rows.groupby("cell_id")["escaped"].mean().sort_values().tolist() == [0.0, 1.0]


def test_the_command_refuses_such_a_table_in_one_line(none_escaped, tmp_path, capsys):
    none_escaped.assign(escaped=none_escaped["escaped"].map({True: "True", False: "False"})).to_parquet(
        tmp_path / "rows.parquet")
    assert cli(["analyze", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "column escaped" in err and "\n" not in err
    assert not (tmp_path / "analysis").exists()


# --- 3. figures that say more than the data ----------------------------------------------------------------

def comparison(anisotropy, lr, speedup, finding, q):
    return {"problem": "quadratic_saddle", "variant": "adam", "reference": "sgd", "problem.anisotropy": anisotropy,
            "optimizer.lr": lr, "speedup": speedup, "speedup_lo": speedup * 0.9, "speedup_hi": speedup * 1.1,
            "bound": "=", "logrank_q": q, "finding": finding, "flag": ""}


def test_the_heatmap_colours_only_what_the_tests_call_significant():
    table = pd.DataFrame([comparison(a, lr, *row) for (a, lr), row in zip(
        itertools.product((1, 10), (1e-3, 1e-2)),
        [(0.98, "no difference detected", 0.99), (0.5, "slower", 1e-5), (4.0, "faster", 1e-9),
         (1.3, "distributions differ; medians within error", 0.01)])])
    settings = ["problem.anisotropy", "optimizer.lr"]
    fig, caption = capture(speedup_heatmap, table, settings, set(settings), palette(["adam"]))
    ax = fig.axes[0]
    grid = ax.get_images()[0].get_array()
    assert grid.mask[0, 0] and grid.mask[1, 1]                  # no colour for "no difference", nor "within error"
    assert not grid.mask[1, 0] and not grid.mask[0, 1]
    texts = {t.get_text(): t for t in ax.texts}
    assert texts["0.98"].get_fontweight() != "bold" and to_rgb(texts["0.98"].get_color()) != to_rgb("#b2182b")
    assert texts["0.5"].get_fontweight() == "bold"                   # a significant slow-down stays marked
    assert "only where the comparison is significant" in caption


def test_loss_traces_show_how_many_runs_each_point_holds():
    """Runs leave the trace once they escape: the median over those left is not the cell's."""
    result = simulate({"problem": {"name": "quadratic_saddle", "dim": 2, "anisotropy": 1},
                       "optimizer": {"name": "sgd", "lr": 0.05}, "seeds": 32, "budget": 3000, "trace_points": 20})
    rows, traces = result.rows, result.trace.assign(cell_id=result.rows["cell_id"].iloc[0])
    cells = cell_table(rows)
    fig, caption = capture(loss_traces, traces, cells, [], palette(cells["optimizer"]))
    strip = next(ax for ax in fig.axes if "recorded" in ax.get_ylabel())
    share = strip.get_lines()[0].get_ydata()
    assert share[0] == 100 and share[-1] < 50                   # the population thins out, and it is shown
    main = next(ax for ax in fig.axes if ax.get_ylabel() == "loss")
    solid = [line for line in main.get_lines() if line.get_linestyle() == "-" and len(line.get_xdata()) > 1][0]
    recorded = traces.groupby("step")["seed"].nunique()
    assert set(solid.get_xdata()) <= set(recorded[recorded == 32].index)    # solid: over every run only
    assert "share of the cell's runs" in caption


def luv(color):
    lightness, chroma, hue = husl.rgb_to_lch(*to_rgb(color))
    return np.array([lightness, chroma * np.cos(np.radians(hue)), chroma * np.sin(np.radians(hue))])


@pytest.mark.parametrize("labels", [["adam (beta1=0)", "adam (beta1=0.9)"],
                                    ["adam (beta1=0)", "adam (beta1=0.5)", "adam (beta1=0.9)", "amsgrad", "sgd"],
                                    ["sgd", "sgd (momentum=0.9)"], ["rmsprop (eps=0.001)", "rmsprop (eps=1e-08)"]])
def test_two_variants_of_one_optimizer_are_visibly_apart(labels):
    """adam (beta1=0) and adam (beta1=0.9) were two blues 17 CIELUV units apart."""
    colors = palette(labels)
    for a, b in itertools.combinations(labels, 2):
        assert np.linalg.norm(luv(colors[a]) - luv(colors[b])) >= 40, (a, b, colors[a], colors[b])
    assert palette(["adam", "sgd"])["adam"] == palette(["adam", "rmsprop"])["adam"]     # a lone variant keeps its own


def test_kaplan_meier_panels_colour_one_parameter_and_style_another_in_order():
    rows = synthetic_rows(optimizers=("adam",), lrs=(1e-3, 3e-3, 1e-2), sigmas=tuple(1 / a for a in ANISOTROPIES),
                          seeds=6, censored=0.2)
    cells = cell_table(rows)
    varied = ["problem.anisotropy", "optimizer.lr"]
    fig, _ = capture(kaplan_meier_curves, rows, cells, varied, palette(["adam"]))
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["anisotropy:", *map(str, ANISOTROPIES), "lr:", "0.001", "0.003", "0.01"]
    curves = [line for line in ax.get_lines() if line.get_linestyle() != "None"]        # not the censoring ticks
    assert len(curves) == 21
    assert len({line.get_color() for line in curves}) == 7           # one colour per anisotropy
    assert len({str(line._unscaled_dash_pattern) for line in curves}) == 3           # one line style per lr


# --- 4. tables a reader cannot use -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quick_like(tmp_path_factory):
    """quick's shape in synthetic rows: 4 optimizers x 3 lr x 7 anisotropies (84 cells); adam 3x faster;
    loss_at_escape equal to final_loss on every run; every run setting and a schedule at its default;
    beta1 and bias_correction on adam's cells only; meta.json as a run writes it."""
    optimizers = ("adam", "precond_sgd", "rmsprop", "sgd")
    rows = synthetic_rows(optimizers=optimizers, sigmas=tuple(1 / a for a in ANISOTROPIES), seeds=64, censored=0.0)
    adam = rows["optimizer.name"] == "adam"
    rows.loc[adam, ["escape_step", "final_step"]] = (rows.loc[adam, ["escape_step", "final_step"]] // 3 + 1).to_numpy()
    rows["loss_at_escape"] = rows["final_loss"]
    rows = rows.assign(**{"optimizer.lr_schedule": "constant", "optimizer.final_lr": 0.0, "optimizer.warmup_steps": 1,
                          "optimizer.beta1": np.where(adam, 0.0, np.nan),
                          "optimizer.bias_correction": pd.array(np.where(adam, True, pd.NA), dtype="boolean")})
    from workflows.registry import parameter_conditions

    root = tmp_path_factory.mktemp("quick_like")
    rows.to_parquet(root / "rows.parquet")
    conditions = parameter_conditions([{"problem": {"name": "quadratic_saddle"}, "optimizer": {"name": name}}
                                       for name in optimizers])
    (root / "meta.json").write_text(json.dumps({"sweep": "quick_like", "conditions": conditions}))
    return root, analyze(root, **PNG).read_text()


def test_the_cell_table_shows_every_variant_at_every_setting(quick_like):
    """It showed 40 of 84 rows in alphabetical order: adam and precond_sgd, never rmsprop or sgd."""
    table = section(quick_like[1], "Escape time per cell")
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert lines[0] == "| anisotropy | lr | adam | precond_sgd | rmsprop | sgd |"
    assert len(lines) == 1 + 21 and "rows shown" not in table
    settings = [tuple(line.split(" | ")[:2]) for line in lines[1:]]
    assert settings == [(f"| {a}", lr) for a in ANISOTROPIES for lr in ("0.001", "0.003", "0.01")]   # sorted
    assert "cells.csv" in table


def test_a_per_run_column_equal_to_another_on_every_run_is_shown_once(quick_like):
    header = next(line for line in section(quick_like[1], "Per-run values").splitlines() if line.startswith("| "))
    assert "loss_at_escape = final_loss (median" in header and "| final_loss (median" not in header


def test_fixed_lists_only_settings_that_apply_to_the_cells(quick_like):
    what = section(quick_like[1], "What was run")
    fixed = next(line for line in what.splitlines() if line.startswith("- Fixed:"))
    for inapplicable in ("final_lr", "warmup_steps", "sosp_rho", "sosp_every", "df", "trace_points", "beta1",
                         "bias_correction"):
        assert f"`{inapplicable}`" not in fixed, inapplicable
    for kept in ("dim", "noise_dist", "lr_schedule", "budget", "dtype"):
        assert f"`{kept}`" in fixed, kept
    left_out = next(line for line in what.splitlines() if line.startswith("- Not listed as fixed"))
    assert "`df` (noise_dist is gaussian)" in left_out and "`final_lr`, `warmup_steps` (lr_schedule is constant)" \
        in left_out and "`sosp_rho`, `sosp_every`, `sosp_method` (sosp_epsilon is 0)" in left_out
    per_variant = next(line for line in what.splitlines() if line.startswith("- Set per optimizer variant"))
    adam = per_variant.split("adam: ")[1].split(";")[0]
    assert "beta1=0" in adam and "bias_correction=true" in adam


def test_p_values_are_printed_with_the_precision_they_have(quick_like):
    assert markdown_table(pd.DataFrame({"logrank_q": [1.167e-300, 0.000172, 0.43]})).splitlines()[2:] == [
        "| < 1e-16 |", "| 0.00017 |", "| 0.43 |"]
    pairs = section(quick_like[1], "Pairwise comparisons")
    assert "< 1e-16" in pairs and "e-300" not in pairs


def test_the_pairwise_table_shows_every_pair_at_every_setting(quick_like):
    """It stopped at 40 of 63 rows sorted by pair: rmsprop vs sgd was never shown."""
    lines = [line for line in section(quick_like[1], "Pairwise comparisons").splitlines() if line.startswith("| ")]
    assert lines[0] == "| anisotropy | lr | adam vs sgd | precond_sgd vs sgd | rmsprop vs sgd |" and len(lines) == 22


def test_a_setting_one_problem_lacks_still_tells_the_pairwise_rows_apart():
    """smoke: anisotropy 1 and 100 on quadratic_saddle, none on staib_toy."""
    from analysis.report import comparisons_preview

    rows = [comparison(a, 1e-3, 2.0, "faster", 1e-5) for a in (1, 100, np.nan)]
    table, _ = comparisons_preview(pd.DataFrame(rows).assign(problem=["q", "q", "staib_toy"], predicted_speedup=np.nan),
                                   ["problem.name", "problem.anisotropy"])
    assert list(table.columns) == ["problem", "anisotropy", "adam vs sgd"] and len(table) == 3


def test_comparison_csv_has_the_cells_parameters(quick_like):
    comparison = pd.read_csv(quick_like[0] / "analysis" / "comparison.csv")
    assert {"problem.anisotropy", "optimizer.lr"} <= set(comparison.columns)
    assert list(comparison.columns[:3]) == ["cell_id", "problem", "optimizer"]


def test_analyze_takes_a_reference(quick_like, tmp_path, capsys):
    root = quick_like[0]
    assert cli(["analyze", str(root / "rows.parquet"), "--reference", "rmsprop", "--format", "png"]) == 0
    comparisons = pd.read_csv(root / "analysis" / "comparisons.csv")
    assert set(comparisons["reference"]) == {"rmsprop"}
    capsys.readouterr()
    assert cli(["analyze", str(root), "--reference", "lion"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: reference 'lion' matches no optimizer variant") and "sgd" in err
    with pytest.raises(ValueError, match="reference 'lion'"):
        analyze(pd.read_parquet(root / "rows.parquet"), tmp_path / "out", reference="lion")
    assert not (tmp_path / "out").exists()


def test_a_null_hyperparameter_is_named_in_the_label():
    cells = pd.DataFrame({"optimizer.name": ["cnc_sgd", "cnc_sgd", "sgd"], "optimizer.g_thres": [None, 0.01, np.nan],
                          "optimizer.lr": [0.1, 0.1, 0.1]})
    # was "cnc_sgd ()" for the null one
    assert list(method_labels(cells)) == ["cnc_sgd (g_thres=null)", "cnc_sgd (g_thres=0.01)", "sgd"]


def test_a_run_records_which_parameters_apply_when():
    """meta.json's `conditions` (what the analysis reads for a problem's own parameters) come from the
    parameters' declarations (Param.applies)."""
    from workflows.registry import parameter_conditions

    conditions = parameter_conditions([{"problem": {"name": "quadratic_saddle"}, "optimizer": {"name": "adam"}}])
    assert conditions["problem.df"] == ["problem.noise_dist", "student_t"]
    assert conditions["problem.noise_length"] == ["problem.noise_model", "proportional"]
    assert conditions["optimizer.final_lr"] == ["optimizer.lr_schedule", "cosine"]
    assert "optimizer.beta1" not in conditions and "problem.dim" not in conditions


@pytest.mark.parametrize("cell_id", ["9193e35603236865", "0000000000001234", "12e4", "1e999"])
def test_cell_ids_made_of_digits_are_text_not_numbers(none_escaped, cell_id):
    """A cell id is 16 hex digits: some are all digits, some digits around one 'e' (which float()
    reads as a number, or as inf); a declared text column takes them as the text they are (a sweep's
    analysis failed on '9193e35603236865')."""
    first = none_escaped["cell_id"] == none_escaped["cell_id"].iloc[0]
    rows = load_results(none_escaped.assign(cell_id=none_escaped["cell_id"].where(~first, cell_id))).rows
    assert cell_id in set(rows["cell_id"])


def test_an_undeclared_text_column_that_overflows_float_is_not_called_a_number():
    from analysis.load import _reads_as_number
    assert not _reads_as_number("9193e35603236865") and _reads_as_number("inf") and _reads_as_number("1e-3")
