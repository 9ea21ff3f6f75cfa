#!/usr/bin/env bash
# A short real search with the deployment genes on the default model, and its small outputs kept:
#   bench/results/search_quant_auto/{candidates.jsonl,pareto.json,history.jsonl,report.jsonl,summary.md,pareto.png,
#                                    config.json,remeasured.json,stage_seconds.json}
# Budget: 5 validated candidates (population 3), 20 search-split items per task, 25 select-split items per task
# (a demonstration that the path works end to end, not a converged front). Run under the shared heavy lock.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/search_quant_auto}
RES=bench/results/search_quant_auto
rm -rf "$OUT"
.venv/bin/hwnas search --quant auto --target xeon --evaluations 5 --population 3 --limit 20 --report-limit 25 \
  --out "$OUT" --no-progress
mkdir -p "$RES"
for f in candidates.jsonl pareto.json history.jsonl report.jsonl summary.md pareto.png config.json remeasured.json \
         stage_seconds.json; do
  [ -f "$OUT/$f" ] && cp "$OUT/$f" "$RES/"
done
echo "kept $RES"
