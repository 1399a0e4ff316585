#!/usr/bin/env bash
# Runs the study's sweeps at full size and files each report under docs/study/<sweep>/:
# report.md, its figures (PNG and PDF), and COMMAND.md (the exact command, the commit, the times).
#
#   bash docs/study/run_study.sh                       # every study sweep, in this order
#   bash docs/study/run_study.sh beta2 alignment       # some of them
#   bash docs/study/run_study.sh --analyze-only        # re-analyse the stored results only (no sweep
#   bash docs/study/run_study.sh --analyze-only beta2  #   is run; each needs results/study/<sweep>/rows.parquet)
#
# Results (the raw rows) go to results/study/ and stay out of git. A sweep reruns nothing that is
# stored (cells are kept under a hash of their parameters), so after a change to the analysis
# alone, --analyze-only and a full run give the same reports.
set -euo pipefail
cd "$(dirname "$0")/../.."
analyze_only=false
if [ "${1:-}" = "--analyze-only" ]; then analyze_only=true; shift; fi
SWEEPS=${*:-"staib2019 stepsize anisotropy noise_precond beta2 alignment heavy_tails dimension mf_batch pca_gap tensor_precond phase_batch deep_linear_depth mlp_offset logistic_beta lr_schedules tracking experiment2 matched_gap matched_sosp noise_stable noise_proportional lag_check matrix_noise matrix_tuned tuned_escape tuned_gap tuned_gap_grid tuned_mf tuned_digits tuned_digits_sgd"}
make --silent .venv/.installed-core
commit=$(git rev-parse HEAD)
[ -z "$(git status --porcelain --untracked-files=no)" ] || commit="$commit (with uncommitted changes)"
for sweep in $SWEEPS; do
    if $analyze_only; then
        command=".venv/bin/saddlescape analyze results/study/$sweep"
    else
        command=".venv/bin/saddlescape run sweeps.yaml --sweep $sweep --storage results/study"
    fi
    echo "== $command"
    start=$(date +%s)
    $command
    seconds=$(( $(date +%s) - start ))
    out="docs/study/$sweep"
    rm -rf "$out" && mkdir -p "$out"
    # The report links docs/theory.md relative to where it was written; from docs/study/<sweep>/ it is ../../theory.md.
    sed -E 's#\]\(([./]*)docs/theory\.md#](../../theory.md#g' "results/study/$sweep/analysis/report.md" > "$out/report.md"
    cp -r "results/study/$sweep/analysis/figures" "$out/"
    ran=$(.venv/bin/python -c "
import json, pathlib, sys
p = pathlib.Path(sys.argv[1])
m = json.loads(p.read_text()) if p.is_file() else None
print(f\"{m.get('started', '?')} to {m.get('finished', '?')} at commit {m.get('git_commit', '?')} (meta.json)\" if m else
      'a run whose meta.json is missing (the rows are the stored cells, consolidated)')" "results/study/$sweep/meta.json")
    cat > "$out/COMMAND.md" <<MD
# How this report was made

    $command

- report written at commit: \`$commit\` (cells are computed once and kept: see docs/study/README.md)
- finished: $(date -u +%Y-%m-%dT%H:%M:%SZ), wall time ${seconds} s on $(nproc) cores ($(uname -m))$($analyze_only && echo " (the analysis only)")
- the sweep's cells were computed in $ran
- raw rows: \`results/study/$sweep/rows.parquet\` (not committed; \`.venv/bin/saddlescape run sweeps.yaml --sweep $sweep --storage results/study\`
  recreates them, cell by cell identical)
MD
done
