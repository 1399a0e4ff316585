#!/usr/bin/env bash
# Runs the study's sweeps at full size and files each report under docs/study/<sweep>/:
# report.md, its figures, and COMMAND.md (the exact command, the commit, the times).
#
#   bash docs/study/run_study.sh                 # every study sweep, in this order
#   bash docs/study/run_study.sh beta2 alignment # some of them
#
# Results (the raw rows) go to results/study/ and stay out of git.
set -euo pipefail
cd "$(dirname "$0")/../.."
SWEEPS=${*:-"staib2019 stepsize anisotropy ideal_precond beta2 alignment heavy_tails dimension mf_batch pca_gap tensor_precond phase_batch deep_linear_depth mlp_offset logistic_beta"}
make --silent .venv/.installed-stamp
commit=$(git rev-parse HEAD)
[ -z "$(git status --porcelain --untracked-files=no)" ] || commit="$commit (with uncommitted changes)"
for sweep in $SWEEPS; do
    command=".venv/bin/saddlescape run sweeps.yaml --sweep $sweep --storage results/study"
    echo "== $command"
    start=$(date +%s)
    $command
    seconds=$(( $(date +%s) - start ))
    out="docs/study/$sweep"
    rm -rf "$out" && mkdir -p "$out"
    cp "results/study/$sweep/analysis/report.md" "$out/"
    cp -r "results/study/$sweep/analysis/figures" "$out/"
    cat > "$out/COMMAND.md" <<MD
# How this report was made

    $command

- report written at commit: \`$commit\` (cells are computed once and kept: see docs/study/README.md)
- finished: $(date -u +%Y-%m-%dT%H:%M:%SZ), wall time ${seconds} s on $(nproc) cores ($(uname -m))
- raw rows: \`results/study/$sweep/rows.parquet\` (not committed; rerun the command to recreate them,
  cell by cell identical)
MD
done
