"""The published reports and the theory document link only inside the repository, and every figure
they (and the README) show exists."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPORTS = sorted((ROOT / "docs" / "study").glob("*/report.md"))
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def local_links(path: Path):
    return [link for link in LINK.findall(path.read_text()) if not re.match(r"[a-z]+://", link)]


def test_there_are_published_reports():
    assert len(REPORTS) >= 10


@pytest.mark.parametrize("report", REPORTS, ids=lambda p: p.parent.name)
def test_a_published_report_links_only_inside_the_repository(report):
    text = report.read_text()
    assert "../shared" not in text and "THEORY.md" not in text
    links = local_links(report)
    assert "../../theory.md" in links                      # docs/theory.md, from docs/study/<sweep>/
    for link in links:
        target = (report.parent / link).resolve()
        assert target.is_relative_to(ROOT) and target.exists(), link


def test_the_theory_document_names_where_each_formula_lives_and_was_checked():
    text = (ROOT / "docs" / "theory.md").read_text()
    for name in ("linear_escape", "OffsetLaw", "lag_escape", "noise_phase", "bessel_time", "floor", "crossover",
                 "local_exponents", "test_whole_steps_close_the_gap_at_large_steps",
                 "test_start_offset_matches_monte_carlo", "test_floor_table_of_the_reference_is_reproduced",
                 "test_map_matches_a_monte_carlo_of_the_scalar_recursion",
                 "test_crossover_is_where_the_models_two_limits_meet", "Step-size schedules", "Tracking error",
                 "α-stable", "fixed noise preconditioner", "second-moment preconditioner"):
        assert name in text, name
    for link in local_links(ROOT / "docs" / "theory.md"):
        assert (ROOT / "docs" / link).exists(), link


def test_the_readmes_study_figures_exist():
    for link in local_links(ROOT / "README.md"):
        if link.startswith("docs/study/") or link == "docs/theory.md":
            assert (ROOT / link).exists(), link


def test_no_document_calls_the_fixed_noise_preconditioner_ideal():
    """Σ^(−α/2) built from the noise at the saddle and the paper's G(x)^(−1/2) are different objects
    (docs/theory.md section 4): neither the docs, the study, the sweeps nor the analysis call the first
    'ideal' (issue 22)."""
    paths = [ROOT / "README.md", ROOT / "sweeps.yaml", *(ROOT / "docs").glob("*.md"),
             *(ROOT / "docs" / "study").glob("**/*.md"), *(ROOT / "analysis").glob("*.py")]
    offenders = [str(p.relative_to(ROOT)) for p in paths
                 if "ideal" in p.read_text().lower().replace("ideal_precond when measured", "")]
    assert not offenders, offenders
