"""The results table's schema, declared once: what every column of rows.parquet means.

The engine writes these columns (tests/test_docs.py checks it writes no other), the analysis
reads which of them are per run and which describe the cell from here, the synthetic generator
fills them, and README.md's column table is this table (`python -m workflows.core.rows` prints it;
the same test checks the README against it).

    scope "cell": the same value on every run of a cell (its parameters, what the problem says
                  about its saddle); "run": one value per run (seed), an outcome.

Torch-free: the analysis imports it.
"""
from __future__ import annotations

from dataclasses import dataclass

from .settings import RUN_SCHEMA


@dataclass(frozen=True)
class Column:
    name: str            # a column, or a family written with <...> (problem.<parameter>)
    scope: str           # "cell" or "run"
    dtype: str           # int64, float64, bool, string (families: the parameter's own)
    unit: str            # steps, loss, distance, ... ("" for none)
    meaning: str
    present: str = ""    # "" always; else the run setting that turns it on


def _cell(name, dtype, unit, meaning, present=""):
    return Column(name, "cell", dtype, unit, meaning, present)


def _run(name, dtype, unit, meaning, present=""):
    return Column(name, "run", dtype, unit, meaning, present)


COLUMNS: tuple[Column, ...] = (
    _cell("cell_id", "string", "", "hash of the fully-specified cell (the key results are stored and resumed under)"),
    _cell("problem.name", "string", "", "the problem"),
    _cell("problem.<parameter>", "", "", "every parameter of the problem, defaults included (missing where "
          "another problem of the sweep does not take it)"),
    _cell("optimizer.name", "string", "", "the optimizer: a built-in or plugin name, or a class path "
          "(torch.optim.NAdam)"),
    _cell("optimizer.<hyperparameter>", "", "", "every hyperparameter, defaults included (missing where an "
          "optimizer does not take it); a list-valued one (betas) as <hyperparameter>[0], [1], ..."),
    _cell("<run setting>", "", "", "every run setting of the cell (the table under sweeps.yaml); the cell's "
          "`seed` is stored as `base_seed`, since each row's `seed` is its run index"),
    _cell("curvature", "float64", "eigenvalue", "γ: minus the most negative Hessian eigenvalue at the saddle"),
    _cell("sigma_escape", "float64", "gradient", "σ₁: the gradient-noise standard deviation along the "
          "escape direction"),
    _cell("escape_radius", "float64", "distance", "r: the escape criterion's threshold"),
    _cell("noise_anisotropy", "float64", "", "√(tr Σ/d) / sigma_escape at the saddle: how much less noise the "
          "escape direction gets than average"),
    _cell("saddle_loss", "float64", "loss", "f at the saddle"),
    _cell("minimum_loss", "float64", "loss", "f at the problem's minima where known (else NaN)"),
    _cell("cnc_constant", "float64", "gradient²", "E[(vᵀg)²] at the saddle along the most negative "
          "Hessian eigenvector v (Daneshmand et al.'s γ_cnc), from `cnc_samples` stochastic gradients"),
    _run("seed", "int64", "", "the run's index within its cell (0 … seeds−1)"),
    _run("escaped", "bool", "", "whether the run met the escape criterion within the budget"),
    _run("escape_step", "int64", "steps", "the first step that met it; for a run that did not, the last step "
         "observed (the budget, or the step it diverged): a right-censored time, never NaN"),
    _run("diverged", "bool", "", "the iterate became non-finite or left the divergence radius (recorded, "
         "never a crash)"),
    _run("final_step", "int64", "steps", "the step at which the run stopped (escape, divergence or budget)"),
    _run("loss_at_escape", "float64", "loss", "the loss at `escape_step` (NaN if it did not escape)"),
    _run("final_loss", "float64", "loss", "the loss at `final_step`"),
    _run("final_grad_norm", "float64", "gradient", "the full gradient's norm at `final_step`"),
    _run("final_distance", "float64", "distance", "the escape distance at `final_step`"),
    *(_run(f"tail_loss_{s}", "float64", "loss", f"the {what} of the loss over the last `tail_steps` steps",
           "tail_steps") for s, what in (("mean", "mean"), ("q50", "median"), ("q90", "90% quantile"))),
    *(_run(f"tail_gap_{s}", "float64", "loss", f"the {what} of f − f_min over the last `tail_steps` steps "
           "(NaN where f_min is unknown)", "tail_steps") for s, what in
      (("mean", "mean"), ("q50", "median"), ("q90", "90% quantile"))),
    _run("sosp_reached", "bool", "", "whether the run met the (ε, √(ρε))-SOSP test within the budget",
         "sosp_epsilon"),
    _run("sosp_step", "int64", "steps", "the first step it did (censored like `escape_step`)", "sosp_epsilon"),
    _run("final_min_eig", "float64", "eigenvalue", "λ_min(∇²f) at `final_step`", "sosp_epsilon"),
    _run("gap_reached", "bool", "", "whether the run reached f − f_min ≤ `gap_epsilon` within the budget",
         "gap_epsilon"),
    _run("gap_step", "int64", "steps", "the first step it did (censored like `escape_step`)", "gap_epsilon"),
    _run("tracking_error_mean", "float64", "", "the preconditioner's relative tracking error ‖v_t − E[g²|x_t]‖ / "
         "‖E[g²|x_t]‖ averaged over the escape phase (steps 1 … escape_step; every step observed where the "
         "run did not escape); v_t as the update uses it (Adam's bias-corrected)", "tracking_error"),
    _run("tracking_error_at_escape", "float64", "", "the same at the escape step (NaN where it did not escape)",
         "tracking_error"),
)

BY_NAME = {c.name: c for c in COLUMNS}
PER_RUN = frozenset(c.name for c in COLUMNS if c.scope == "run")


def is_per_run(column: str) -> bool:
    """Whether a column of rows.parquet holds one value per run (an outcome) rather than a
    description of the cell."""
    return column in PER_RUN


# How a cell becomes the columns that describe it on each of its rows: problem.*, optimizer.*
# (parameters), then the run settings, the cell's `seed` stored as `base_seed` (each row's `seed`
# is its run index).
PARAMETER_PREFIXES = ("problem.", "optimizer.")
BASE_SEED = "base_seed"


def stored_setting(name: str) -> str:
    """The rows.parquet column of a run setting."""
    return BASE_SEED if name == "seed" else name


RUN_SETTING_COLUMNS = tuple(stored_setting(k) for k in RUN_SCHEMA)


def is_parameter(column: str) -> bool:
    """Whether a rows.parquet column is one of the flattened cell's parameters (what a sweep sets
    and tells cells apart): problem.*, optimizer.*, a run setting."""
    return column.startswith(PARAMETER_PREFIXES) or column in RUN_SETTING_COLUMNS


def flatten_cell(cell: dict) -> dict:
    """The columns a normalised cell gives each of its rows: problem.*, optimizer.*, then the run
    settings (`seed` as `base_seed`). A list-valued parameter (torch's `betas`) becomes one column
    per entry, `optimizer.betas[0]`, ...: numbers the analysis can sort, plot and fit."""
    flat = {}
    for kind in ("problem", "optimizer"):
        for key, value in cell[kind].items():
            if isinstance(value, (list, tuple)):
                flat.update({f"{kind}.{key}[{i}]": v for i, v in enumerate(value)})
            else:
                flat[f"{kind}.{key}"] = value
    flat.update({stored_setting(k): v for k, v in cell.items() if k not in ("problem", "optimizer")})
    return flat


def markdown_table() -> str:
    """README.md's rows.parquet column table."""
    lines = ["| column | per | unit | meaning |", "|---|---|---|---|"]
    for c in COLUMNS:
        when = f" (with `{c.present}`)" if c.present else ""
        meaning = c.meaning.replace("|", "\\|")            # a pipe would end the table's cell
        lines.append(f"| `{c.name}` | {c.scope} | {c.unit} | {meaning}{when} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
