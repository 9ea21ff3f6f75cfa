#!/usr/bin/env bash
# Times the main job (`make demo`'s scripts/demo.sh) from an empty demo folder and keeps its small
# outputs (step timings, profile, search summary and front, report split, bundle manifest) in bench/results/.
# Usage: bash bench/demo_bench.sh [RESULTS_DIR]   (default bench/results/demo_main_job)
# Env: HWNAS_EVALUATIONS etc. as for scripts/demo.sh; HWNAS_CACHE_DIR=/tmp/empty times a cold run. The IR cache is kept, so by default this
# times a warm run; the demo_timing.json says how loaded the host was at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-bench/results/demo_main_job}
mkdir -p runs   # absent in a fresh clone
RUN=$(mktemp -d runs/demo-bench-XXXXXX)
HWNAS_DEMO_DIR="$RUN" bash scripts/demo.sh 2>&1 | tee "$RUN/demo.log"
TMP="$DEST.tmp"
rm -rf "$TMP" && mkdir -p "$TMP"
cp "$RUN/demo_timing.json" "$TMP/"
cp "$RUN"/search/{summary.md,pareto.json,candidates.jsonl,history.jsonl,report.jsonl,config.json,stage_seconds.json} "$TMP/"
cp "$RUN/bundle/hwnas_manifest.json" "$TMP/bundle_manifest.json"
[ -f "$RUN/search/generation_screen.jsonl" ] && cp "$RUN/search/generation_screen.jsonl" "$TMP/"   # screens before the report split
cp "$RUN/profile/profile.json" "$TMP/"   # the profile's own timings and its measurement session (rounds, interference)
grep -E '^\[demo|main job finished|pick|holdout|within|generation check' "$RUN/demo.log" > "$TMP/console.txt" || true
# what `hwnas run` generated with the bundle (the line before "main job finished")
grep -a -B2 'main job finished' "$RUN/demo.log" | head -n 1 | sed 's/^/hwnas run: /' >> "$TMP/console.txt" || true
rm -rf "$DEST" && mv "$TMP" "$DEST"
echo "kept $DEST (the run itself: $RUN)"
