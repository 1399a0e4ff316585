"""One test (or a few) per kind of fault issue 12 found in the reports, each on a small input that
the old analysis got wrong.

 1 a varied parameter silently pooled or hidden      5 verdicts without evidence
 2 degenerate or broken figures                       6 artefacts reported as findings
 3 the same thing looking different across figures    7 no answer to "is A faster than B?"
 4 per-run values passed off as per-cell              8 smaller things (order, counts, inf, foreign tables)
"""
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb

from analysis import analyze
from analysis.cells import cell_table
from analysis.compare import (
    UNINFORMATIVE,
    compare_cells,
    sgd_slope_check,
    summarize_cell_verdicts,
    with_predictions,
)
from analysis.design import sort_values, sweep_design
from analysis.figure_choice import plan_axis
from analysis.figures import Saver, speedup_heatmap
from analysis.pairwise import choose_pairs, compare_pairs, setting_columns
from analysis.palette import BUILT_IN, THEORY_STYLE, lighter, palette, variant_color
from analysis.report import cell_verdicts, sort_cells
from analysis.sanity import artefact_cells, sanity_flags
from analysis.schema import split_columns
from analysis.synthetic import synthetic_rows
from workflows.core.schedules import paper_beta2
from workflows import simulate_cell

PNG = {"formats": ("png",), "dpi": 60}       # where the figures' files are not the point: faster


def table(rows):
    """(cells with predictions, design) of a rows table, as the pipeline makes them."""
    described, _, _ = split_columns(rows)
    cells = with_predictions(cell_table(rows))
    return cells, sweep_design(cells, described)


def relabel(rows, suffix, **changes):
    return rows.assign(cell_id=rows["cell_id"].astype(str) + suffix, **changes)


# --- 1. a varied parameter is never pooled or hidden ------------------------------------------------

@pytest.fixture(scope="module")
def measured_two_ways():
    """adam and rmsprop at three lr, each under escape_measure norm and projection; rmsprop's
    projection cells are 4x slower (so pooling the two would average 1x and 4x)."""
    base = synthetic_rows(optimizers=("adam", "rmsprop"), sigmas=(0.1,), seeds=40, censored=0.0, noise=0.05)
    norm = relabel(base, "n", **{"problem.escape_measure": "norm"})
    projection = relabel(base, "p", **{"problem.escape_measure": "projection"})
    slow = projection["optimizer.name"] == "rmsprop"
    projection.loc[slow, "escape_step"] *= 4
    projection.loc[slow, "final_step"] *= 4
    rows = pd.concat([norm, projection], ignore_index=True)
    rows["budget"] = int(rows["escape_step"].max())
    return rows


def test_every_varied_parameter_is_a_column_a_facet_and_a_matching_key(measured_two_ways):
    cells, design = table(measured_two_ways)
    assert "problem.escape_measure" in design.varied and "optimizer.lr" in design.varied
    plan, why = plan_axis(cells, design.varied, "optimizer.lr", "escape_time", set(design.numeric))
    assert plan is not None and plan.facets == ["problem.escape_measure"] and not plan.averaged, why
    pairs, _, _ = choose_pairs(cells["optimizer"].unique())
    comparisons = compare_pairs(measured_two_ways, cells, pairs, setting_columns(cells, design.varied, design.variant))
    # One comparison per (lr, escape_measure), never one per lr averaging the two measures.
    assert len(comparisons) == 6 and set(comparisons["problem.escape_measure"]) == {"norm", "projection"}
    by_measure = comparisons.groupby("problem.escape_measure")["speedup"].median()
    assert comparisons["variant"].eq("rmsprop").all()          # against adam: rmsprop is 4x slower under projection
    assert by_measure["projection"] == pytest.approx(by_measure["norm"] / 4, rel=0.1)


def test_the_reports_cell_table_shows_the_varied_parameter(measured_two_ways, tmp_path):
    report = analyze(measured_two_ways, tmp_path / "out", **PNG).read_text()
    section = report.split("## Escape time per cell")[1].split("##")[0]
    header = next(line for line in section.splitlines() if line.startswith("| "))
    assert "| escape_measure |" in header and "| lr |" in header
    assert "projection" in section and "norm" in section


# --- 2. no degenerate figure ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def paper_rule_sweep():
    """quick's shape: adam at three lr with beta2 = 1 - lr^(2/3), sgd alongside, seven anisotropies."""
    rows = synthetic_rows(optimizers=("sgd", "adam"), lrs=(1e-3, 3e-3, 1e-2),
                          sigmas=tuple(1 / a for a in (1, 3, 10, 30, 100, 300, 1000)), seeds=8, censored=0.0)
    adam = rows["optimizer.name"] == "adam"
    rows.loc[adam, "optimizer.beta2"] = paper_beta2(rows.loc[adam, "optimizer.lr"])
    return rows


def test_a_parameter_that_follows_another_gets_no_figure_of_its_own(paper_rule_sweep):
    cells, design = table(paper_rule_sweep)
    plan, why = plan_axis(cells, design.varied, "optimizer.beta2", "escape_time", set(design.numeric))
    assert plan is None and "follows lr" in why and "paper's rule" in why


def test_no_panel_is_dropped(paper_rule_sweep):
    cells, design = table(paper_rule_sweep)
    plan, _ = plan_axis(cells, design.varied, "optimizer.lr", "escape_time", set(design.numeric))
    assert plan.facets == ["problem.anisotropy"] and plan.data["problem.anisotropy"].nunique() == 7
    assert "optimizer.beta2" in plan.follows            # named in the title, not a facet


def test_a_numerical_zero_is_never_an_axis():
    """tensor_precond's sigma_escape was 1e-16 at one saddle: it follows saddle_support, so the axis is
    saddle_support (linear: 2 and 3), never sigma_escape on a log axis from 1e-16."""
    rows = synthetic_rows(optimizers=("sgd", "adam"), sigmas=(1e-16, 0.3), lrs=(1e-2,), seeds=8, censored=0.0)
    rows["problem.saddle_support"] = np.where(rows["sigma_escape"] < 1e-3, 2, 3)
    cells, design = table(rows)
    assert "sigma_escape" not in design.varied and "problem.saddle_support" in design.varied


def test_a_figure_with_one_x_value_per_line_is_not_drawn(tmp_path):
    rows = synthetic_rows(optimizers=("sgd",), lrs=(1e-2,), sigmas=(0.1,), seeds=8, censored=0.0)
    report = analyze(rows, tmp_path, **PNG).read_text()
    assert not list((tmp_path / "figures").glob("escape_vs_*"))
    assert "kaplan_meier_escape.png" in report


# --- 3. the same thing looks the same everywhere ----------------------------------------------------

def test_a_variant_has_one_colour_whatever_else_the_report_holds():
    one, other = palette(["sgd", "adam", "rmsprop"]), palette(["adam", "precond_sgd", "torch.optim.NAdam"])
    assert one["adam"] == other["adam"] == variant_color("adam") == BUILT_IN["adam"]
    assert variant_color("torch.optim.NAdam") == variant_color("torch.optim.NAdam")     # stable hash
    assert variant_color("pytorch_optimizer.Lion") != variant_color("torch.optim.NAdam")
    distance = np.linalg.norm(np.subtract(to_rgb(one["sgd"]), to_rgb(other["precond_sgd"])))
    assert distance > 0.5                          # sgd and precond_sgd were near-identical oranges
    labels = palette(["adam (beta1=0)", "adam (beta1=0.9)"])
    assert len(set(labels.values())) == 2
    assert lighter(one["adam"]) != one["adam"] and THEORY_STYLE["linestyle"] != "-"


def test_heatmap_panels_share_one_scale_centred_at_one(paper_rule_sweep):
    cells, design = table(paper_rule_sweep)
    pairs, _, _ = choose_pairs(cells["optimizer"].unique())
    settings = setting_columns(cells, design.varied, design.variant)
    comparisons = compare_pairs(paper_rule_sweep, cells, pairs, settings)
    comparisons = pd.concat([comparisons, comparisons.assign(variant="adam (copy)", speedup=0.5)])
    captured = {}
    speedup_heatmap(comparisons, settings, set(design.numeric), palette(comparisons["variant"]), None,
                    lambda fig, path, caption: captured.setdefault("fig", fig))
    images = [image for ax in captured["fig"].axes for image in ax.get_images()]
    assert len(images) == 2 and images[0].norm is images[1].norm
    assert images[0].norm.vcenter == 0.0            # log10(speed-up) = 0: a slow-down is red, a speed-up blue
    assert images[0].cmap.name == "RdBu"


@pytest.fixture(scope="module")
def paper_rule_report(paper_rule_sweep, tmp_path_factory):
    """The whole report of the paper-rule sweep, figures as PNG and PDF."""
    return analyze(paper_rule_sweep, tmp_path_factory.mktemp("paper_rule") / "out")


def test_kaplan_meier_labels_name_what_was_swept(paper_rule_sweep, paper_rule_report):
    assert "kaplan_meier_escape.png" in paper_rule_report.read_text()
    assert (paper_rule_report.parent / "figures" / "kaplan_meier_escape.pdf").is_file()
    from analysis.figures import _label_columns
    cells, design = table(paper_rule_sweep)
    labels = _label_columns(cells[cells["optimizer"] == "adam"], design.varied)
    assert labels == ["problem.anisotropy", "optimizer.lr"]      # not sigma_escape, not beta2


def test_figures_come_as_png_and_pdf_at_the_dpi_asked(tmp_path):
    from matplotlib.figure import Figure
    for dpi in (50, 100):
        fig = Figure(figsize=(4, 3))
        fig.subplots().plot([1, 2], [1, 2])
        Saver(dpi, ("png", "pdf"))(fig, tmp_path / f"f{dpi}.png", "")
        assert (tmp_path / f"f{dpi}.pdf").read_bytes()[:4] == b"%PDF"
    width = {dpi: int.from_bytes((tmp_path / f"f{dpi}.png").read_bytes()[16:20], "big") for dpi in (50, 100)}
    assert width[100] == pytest.approx(2 * width[50], rel=0.03)        # tight bounding box: a few pixels of padding


# --- 4. per-run values are never shown as the cell's ------------------------------------------------

def test_tail_and_sosp_columns_are_summarised_over_runs():
    rows = synthetic_rows(seeds=50, tail_steps=100, sosp_epsilon=0.1)
    rows["my_metric"] = np.random.default_rng(0).random(len(rows))       # undeclared, varies within a cell
    rows["my_setting"] = 7.0                                              # undeclared, constant per cell
    cells = cell_table(rows)
    for column in ("tail_gap_mean", "tail_gap_q90", "final_min_eig", "my_metric"):
        assert column not in cells
        first = rows[rows["cell_id"] == cells.index[0]]
        assert cells[f"median_{column}"].iloc[0] == pytest.approx(first[column].median())
        assert cells[f"median_{column}"].iloc[0] != first[column].iloc[0]    # not seed 0's value
        assert cells[f"q10_{column}"].iloc[0] < cells[f"q90_{column}"].iloc[0]
    assert "my_setting" in cells


# --- 5. verdicts only with evidence -----------------------------------------------------------------

def sgd(**cell):
    base = {"problem": {"name": "quadratic_saddle", "dim": 2, "anisotropy": 10}, "optimizer": {"name": "sgd"},
            "seeds": 32, "budget": 3000}
    return simulate_cell({**base, **cell})


def test_the_sgd_slope_is_not_tested_on_cells_without_a_closed_form():
    """Three cells started beyond r (every run escapes at step 1): the old check fitted them and said
    'fails'; they have no closed form, so there is nothing to test."""
    rows = pd.concat([sgd(optimizer={"name": "sgd", "lr": lr}, start_offset=2.0) for lr in (1e-3, 1e-2, 3e-2)])
    cells, _ = table(rows)
    assert cells["predicted_mean"].isna().all()
    assert sgd_slope_check(cells) is None


def test_close_is_not_called_holds_and_censored_cells_are_no_evidence():
    cells = pd.DataFrame({"cell_id": list("abcd"), "problem": "quadratic_saddle", "optimizer": "sgd",
                          "optimizer.lr": 1e-3, "escape_kind": ["median"] * 3 + ["restricted mean <= budget"],
                          "escape_mean": [1050.0] * 3 + [np.nan], "escape_mean_lo": [1040.0] * 3 + [np.nan],
                          "escape_mean_hi": [1060.0] * 3 + [np.nan], "escape_median": [1000.0] * 3 + [np.inf],
                          "escape_median_lo": 990.0, "escape_median_hi": 1010.0,
                          "escape_restricted_mean": [900.0] * 3 + [5000.0], "escape_sd": 100.0,
                          "escaped_runs": [64] * 3 + [0], "runs": 64, "escaped_fraction": [1.0] * 3 + [0.0],
                          "predicted_mean": [1000.0] * 3 + [9000.0], "predicted_median": [960.0] * 3 + [9000.0],
                          "predicted_restricted_mean": [950.0] * 3 + [5000.0], "predicted_sd": 100.0,
                          "predicted_escape_fraction": [1.0] * 3 + [0.01], "theory_model": "sgd: linear recursion",
                          "theory_note": ""}).set_index("cell_id", drop=False)
    comparison = compare_cells(cells)
    assert list(comparison["verdict"]) == ["close"] * 3 + [UNINFORMATIVE]
    summary = summarize_cell_verdicts(comparison)
    sentence = cell_verdicts(summary, comparison, cells, ["optimizer.lr"], pd.Series(dtype=int))[0]
    assert "**holds**" not in sentence and "outside the measured 95% interval** in 3 of 3 cells" in sentence
    assert "1 cell is uninformative (censored)" in sentence
    assert summary["ratio_max"].iloc[0] == pytest.approx(1050 / 1000)   # the censored cell (5000/5000) is not counted


# --- 6. artefacts are flagged, not reported as findings ---------------------------------------------

@pytest.fixture(scope="module")
def artefacts():
    quad = {"name": "quadratic_saddle", "dim": 20}
    cells = {
        "rmsprop first step": {"problem": quad, "optimizer": {"name": "rmsprop", "lr": 0.01, "beta2": 0.999}},
        "sgd one step of noise": {"problem": {**quad, "dim": 10}, "optimizer": {"name": "sgd", "lr": 0.5}},
        "start beyond r": {"problem": quad, "optimizer": {"name": "sgd", "lr": 0.01}, "start_offset": 2.0},
        "should diverge": {"problem": quad, "optimizer": {"name": "sgd", "lr": 3.0}},
        "sosp at start": {"problem": {**quad, "dim": 2}, "optimizer": {"name": "sgd", "lr": 0.01},
                          "sosp_epsilon": 2.0, "sosp_rho": 1.0},
        "fine": {"problem": {**quad, "dim": 2, "anisotropy": 10}, "optimizer": {"name": "sgd", "lr": 0.01}},
    }
    rows = {name: simulate_cell({"seeds": 32, "budget": 2000, **cell}) for name, cell in cells.items()}
    ids = {name: r["cell_id"].iloc[0] for name, r in rows.items()}
    return pd.concat(rows.values(), ignore_index=True), ids


def test_each_artefact_is_flagged_with_its_reason(artefacts):
    rows, ids = artefacts
    cells, _ = table(rows)
    flags = sanity_flags(rows, cells).set_index("cell_id")
    assert flags.loc[[ids["rmsprop first step"]], "flag"].eq("first step reaches r").any()
    assert "lr/sqrt(1-beta2)" in flags.loc[ids["rmsprop first step"], "why"]
    assert "one step of noise" in flags.loc[ids["sgd one step of noise"], "why"]
    assert flags.loc[ids["start beyond r"], "flag"] == "start beyond r"
    assert flags.loc[ids["should diverge"], "flag"] == "diverging step"
    assert "SOSP at step 0" in list(flags.loc[[ids["sosp at start"]], "flag"])
    assert ids["fine"] not in flags.index
    # The SOSP test passing at the start says nothing about the escape time: only the SOSP duration is set aside.
    every = sanity_flags(rows, cells)
    assert ids["sosp at start"] in artefact_cells(every, "sosp") and ids["sosp at start"] not in artefact_cells(every)


def test_flags_come_before_the_findings_and_artefacts_do_not_count(artefacts, tmp_path):
    rows, ids = artefacts
    report = analyze(rows, tmp_path, **PNG).read_text()
    assert report.index("## Sanity flags") < report.index("## Findings")
    comparison = pd.read_csv(tmp_path / "comparison.csv").set_index("cell_id")
    assert comparison.loc[ids["sgd one step of noise"], "verdict"] == "artefact"
    assert "start_offset >= escape_radius" in pd.read_csv(tmp_path / "cells.csv").set_index("cell_id").loc[
        ids["start beyond r"], "theory_note"]


# --- 7. is A faster than B? -------------------------------------------------------------------------

def test_the_reference_is_the_sweeps_and_otherwise_said():
    variants = ["sgd", "adam (beta1=0)", "adam (beta1=0.9)", "rmsprop", "precond_sgd"]
    pairs, how, _ = choose_pairs(variants, "rmsprop")
    assert all(ref == "rmsprop" for _, ref in pairs) and len(pairs) == 4 and "analysis.reference" in how
    pairs, _, _ = choose_pairs(variants, "adam")           # a name matches all its variants
    assert {ref for _, ref in pairs} == {"adam (beta1=0)", "adam (beta1=0.9)"} and len(pairs) == 7
    pairs, how, _ = choose_pairs(variants)
    assert {ref for _, ref in pairs} == {"sgd"} and "too many" in how
    pairs, how, _ = choose_pairs(["adam", "rmsprop", "sgd"])
    assert len(pairs) == 3 and "every pair" in how
    _, _, notes = choose_pairs(variants, "lion")
    assert "matches no variant" in notes[0]


def test_a_sweeps_reference_reaches_the_report(measured_two_ways, tmp_path):
    report = analyze(measured_two_ways, tmp_path, reference="rmsprop", **PNG).read_text()
    assert "against the reference asked for (rmsprop, `--reference`" in report
    comparisons = pd.read_csv(tmp_path / "comparisons.csv")
    assert set(comparisons["reference"]) == {"rmsprop"} and "logrank_q" in comparisons
    assert list((tmp_path / "figures").glob("speedup_*.png"))


# --- 8. smaller things ------------------------------------------------------------------------------

def test_values_sort_as_numbers():
    assert sort_values([1, 10, 100, 1000, 3, 30, 300]) == [1, 3, 10, 30, 100, 300, 1000]
    frame = pd.DataFrame({"anisotropy": [1000, 3, 30, 1], "name": list("abcd")})
    assert list(sort_cells(frame, ["anisotropy"])["anisotropy"]) == [1, 3, 30, 1000]


def test_what_was_run_counts_runs_once_and_lists_values_in_order(paper_rule_report):
    report = paper_rule_report.read_text()
    assert "(8 runs per cell)" in report and "8-8" not in report
    assert "(1, 3, 10, 30, 100, 300, 1000)" in report


def test_no_infinite_sd_ratio():
    """Deep in the sign regime the lag map's quantiles escape within a step of each other (sd < 1): no sd
    ratio, and the report says why."""
    rows = pd.concat([simulate_cell({"problem": {"name": "quadratic_saddle", "dim": 2, "anisotropy": 1000,
                                                 "noise_scale": 0.1}, "optimizer": {"name": "rmsprop", "lr": lr},
                                     "seeds": 32, "budget": 5000}) for lr in (1e-2, 2e-2)])
    cells, _ = table(rows)
    assert cells["theory_model"].str.startswith("lag map").all() and (cells["predicted_sd"] < 1).all()
    comparison = compare_cells(cells)
    assert comparison["sd_ratio"].isna().all()
    sentence = cell_verdicts(summarize_cell_verdicts(comparison), comparison, cells, ["optimizer.lr"],
                             pd.Series(dtype=int))[0]
    assert "no sd ratio (the model's spread is below one step" in sentence and "inf" not in sentence


def test_a_table_made_elsewhere_is_analysed(tmp_path, monkeypatch):
    """No cell_id, no curvature, no escape_radius, no budget: cells from the parameters, no theory (said
    so), and survival, fits and comparisons still there; a DataFrame goes to ./analysis."""
    rows = synthetic_rows(optimizers=("sgd", "adam"), seeds=20)
    rows = rows[["optimizer.name", "optimizer.lr", "problem.anisotropy", "seed", "escaped", "escape_step"]]
    monkeypatch.chdir(tmp_path)
    report = analyze(rows, **PNG)
    assert report == tmp_path / "analysis" / "report.md"
    text = report.read_text()
    assert "no `cell_id` column" in text and "The closed forms were skipped" in text
    cells = pd.read_csv(tmp_path / "analysis" / "cells.csv")
    assert len(cells) == 18 and cells["escape_time"].notna().all()
    assert len(pd.read_csv(tmp_path / "analysis" / "fits.csv")) == 2
    assert len(pd.read_csv(tmp_path / "analysis" / "comparisons.csv")) == 9


def test_every_link_of_a_report_stays_inside_the_repository(paper_rule_report):
    report = paper_rule_report
    links = re.findall(r"\]\(([^)]+)\)", report.read_text())
    assert any(link.endswith("docs/theory.md") for link in links)
    for link in links:
        assert "shared" not in link and (report.parent / link).exists(), link


def test_a_flagged_cell_of_a_sweep_that_varies_the_problem_is_listed_once_per_setting():
    """A sweep varying the problem itself (matched_sosp: a toy saddle and matrix factorization) has
    'problem' among its varied columns as well as as a label: the flag table must not repeat it."""
    from analysis.report import sanity_section

    cells = pd.DataFrame({"problem": ["quadratic_saddle", "matrix_factorization"], "optimizer": ["sgd", "sgd"],
                          "optimizer.lr": [0.1, 0.3]}, index=pd.Index(["a", "b"], name="cell_id"))
    flags = pd.DataFrame({"cell_id": ["b"], "flag": ["escape at step 1"], "severity": ["artefact"],
                          "affects": ["escape"], "why": ["every run starts beyond r"]})
    text = sanity_section(flags, cells, ["problem", "optimizer.lr"])
    header = next(line for line in text.splitlines() if line.startswith("| problem"))
    assert header.count("problem") == 1 and "lr" in header and "matrix_factorization" in text


def test_a_label_names_what_was_swept_not_what_it_implies():
    """Sweeping lr_schedule also varies each schedule's own settings (the others are reset to
    their defaults); the label names the schedule only. Two settings varied independently both stay."""
    from analysis.cells import method_labels

    cells = pd.DataFrame({"optimizer.name": ["adam"] * 3, "optimizer.lr": [0.01] * 3,
                          "optimizer.lr_schedule": ["constant", "cosine", "linear_warmup"],
                          "optimizer.final_lr": [0.0, 1e-4, 0.0], "optimizer.warmup_steps": [1, 1, 500]})
    assert list(method_labels(cells)) == ["adam (lr_schedule=constant)", "adam (lr_schedule=cosine)",
                                          "adam (lr_schedule=linear_warmup)"]
    crossed = pd.DataFrame({"optimizer.name": ["adam"] * 4, "optimizer.beta1": [0.0, 0.0, 0.9, 0.9],
                            "optimizer.weight_decay": [0.0, 0.1, 0.0, 0.1]})
    assert list(method_labels(crossed)) == [f"adam (beta1={b}, weight_decay={w})"
                                            for b, w in (("0", "0"), ("0", "0.1"), ("0.9", "0"), ("0.9", "0.1"))]
