#!/usr/bin/env bash
# The main job on the default model, as one command (`make demo`):
#   1. profile the target CPU with OpenVINO (once; reused on later runs): 4 subnets plus a designed set of
#      weight-format / runtime variants, so the gene-aware latency model is fitted and its error per gene known,
#   2. LINAS search for the accuracy/latency Pareto front over depth, widths AND the deployment genes
#      (--quant auto: per-layer weight formats, head format, runtime settings; resumes if interrupted),
#   3. export the fastest subnet within 1 point of the full model: the pick ships in its own formats with its
#      runtime settings (--quant int8 applies only to a pick without genes),
#   4. verify the bundle and generate from it.
# Override with env vars: HWNAS_MODEL, HWNAS_TARGET, HWNAS_DEMO_DIR, HWNAS_EVALUATIONS, HWNAS_QUANT (auto|int8).
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
MODEL=${HWNAS_MODEL:-default}
TARGET=${HWNAS_TARGET:-xeon}
OUT=${HWNAS_DEMO_DIR:-runs/demo}
EVALS=${HWNAS_EVALUATIONS:-16}
QUANT=${HWNAS_QUANT:-auto}
mkdir -p "$OUT"
start=$(date +%s)
timing=()
step() {
  timing+=("$1=$(( $(date +%s) - start ))")
  echo "[demo +$(( $(date +%s) - start )) s] $*"
}

step "profile"
if [ ! -f "$OUT/profile/profile.json" ]; then
  hwnas profile --model "$MODEL" --target "$TARGET" --quant "$QUANT" --samples 4 --out "$OUT/profile" --force
fi

step "search"
resume=()
[ -f "$OUT/search/config.json" ] && resume=(--resume)
# --quant auto: candidates' latency is predicted by the profile's gene-aware model (fit on this host), and only
# the Pareto front is exported and timed for real, interleaved, at the end: the time the new genes cost per
# candidate (integer IR build + measurement) is saved on every candidate that does not reach the front.
profile=()
[ "$QUANT" = auto ] && profile=(--profile "$OUT/profile")
hwnas search --model "$MODEL" --target "$TARGET" --quant "$QUANT" --evaluations "$EVALS" --out "$OUT/search" \
  "${profile[@]}" "${resume[@]}"

step "export"
hwnas export --model "$MODEL" --from "$OUT/search" --pick "fastest-within 1.0" --quant int8 \
  --target "$TARGET" --out "$OUT/bundle" --force
step "verify and run"
hwnas verify "$OUT/bundle"
hwnas run "$OUT/bundle" --prompt "The three primary colours are" --max-new-tokens 24

timing+=("end=$(( $(date +%s) - start ))")
# Seconds from the start at which each step began, written atomically (benchmarks quote this file).
python - "$OUT/demo_timing.json" "${timing[@]}" <<'PY'
import os, platform, sys
from hwnas.io import write_json_atomic
out, marks = sys.argv[1], dict(m.split("=", 1) for m in sys.argv[2:])
write_json_atomic(out, {"step_started_at_s": {k: int(v) for k, v in marks.items()}, "total_s": int(marks["end"]),
                        "cpus": os.cpu_count(), "loadavg_at_end": list(os.getloadavg()), "host": platform.node()})
PY
echo
echo "main job finished in $(( $(date +%s) - start )) s; results in $OUT (search/summary.md, search/pareto.png, bundle/)"
