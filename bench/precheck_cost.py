"""What the PyTorch generation pre-check of a candidate costs on the default model, next to what a failing
candidate costs without it (its quantized IR and the check on it: `build_seconds` of a bundle manifest);
and what decoding the check's prompts in one batch saves (the search's generation screen and the pre-check
decode that way): the full model's 20 prompts one by one vs in one left-padded batch, and whether the
tokens are the same.

    flock /tmp/hwnas-heavy.lock .venv/bin/python bench/precheck_cost.py \\
        [--search bench/results/demo_cold_auto_epyc] [--key l30-d0e92e82] [--out bench/results/precheck_cost.json]

The full model's reference generations are made first (cached), so the time is the pre-check's alone.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--search", type=Path, default=ROOT / "bench" / "results" / "demo_cold_auto_epyc",
                    help="a folder with pareto.json (and the bundle_manifest.json of the same run, for comparison)")
    ap.add_argument("--key", default="l30-d0e92e82", help="the front record to pre-check")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "precheck_cost.json")
    args = ap.parse_args()
    from hwnas.deploy.gencheck import precheck_fake_quantized, prepare_reference
    from hwnas.io import write_json_atomic
    from hwnas.model.loading import load_model
    from hwnas.model.space import SubnetConfig

    rec = next(r for r in json.loads((args.search / "pareto.json").read_text()) if r["key"] == args.key)
    loaded = load_model("default")
    ref = prepare_reference(loaded)
    t0 = time.perf_counter()
    report = precheck_fake_quantized(loaded.model, SubnetConfig.from_dict(rec["subnet"]), ref)
    seconds = time.perf_counter() - t0
    from hwnas.accuracy.genquality import TorchCandidate

    cand = TorchCandidate(loaded.model, ref.eos_ids)
    t0 = time.perf_counter()
    one = [cand.generate(ids, ref.max_new_tokens) for ids in ref.prompt_ids]
    t_one = time.perf_counter() - t0
    t0 = time.perf_counter()
    batch = cand.generate_many(ref.prompt_ids, ref.max_new_tokens)
    t_batch = time.perf_counter() - t0
    decode = {"prompts": len(one), "max_new_tokens": ref.max_new_tokens, "one_by_one_s": round(t_one, 1),
              "batched_s": round(t_batch, 1), "identical_rows": sum(int(a == b) for a, b in zip(one, batch)),
              "model": "the full default model, float weights"}
    manifest = args.search / "bundle_manifest.json"
    build = json.loads(manifest.read_text()).get("build_seconds") if manifest.is_file() else None
    doc = {"key": args.key, "precheck_s": round(seconds, 1), "passed": report.passed, "summary": report.summary(),
           "bundle_build_seconds_same_folder": build, "decode": decode, "host": platform.node(), "cpus": os.cpu_count(),
           "loadavg_at_end": list(os.getloadavg())}
    write_json_atomic(args.out, doc)
    print(json.dumps({k: doc[k] for k in ("precheck_s", "passed", "bundle_build_seconds_same_folder", "decode")}))


if __name__ == "__main__":
    main()
