"""Does the search time weight formats the way they run? The full default model as timing IRs in uniform
weight formats (f16, int8, int4 asym, int4 sym), each built the way `hwnas search --quant auto` builds a
candidate's timing IR (architecture float IR + RTN codes via compress_ir, hwnas.hardware.quant_ir),
measured in ONE interleaved session (hwnas.hardware.measure.measure_many) under a target's properties,
plus the int8 model with the KV-cache / dynamic-quantization runtime genes changed one at a time.

Expected order of per-token decode: int4 < int8 < f16. Reports TPOT / TTFT medians, each row's
paired TPOT ratio to the int8 row (bootstrap 95% interval over the shared rounds), the load average.

Usage: .venv/bin/python bench/quant_speed_order.py [--target xeon] [--model default] [--out bench/results]
Writes OUT/quant_speed_order.json. Run under the shared heavy lock on a shared host.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="xeon")
    ap.add_argument("--model", default="default")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from hwnas.hardware.host import detect_host
    from hwnas.hardware.irexport import export_ir_cached
    from hwnas.hardware.measure import MeasureJob, measure_many, speedup
    from hwnas.hardware.quant_ir import quantized_model, shipped_bytes
    from hwnas.hardware.targets import load_target
    from hwnas.model.deploy_space import default_group_size
    from hwnas.model.supernet import load_supernet

    t0 = time.perf_counter()
    load0 = os.getloadavg()
    target = load_target(args.target)
    host = detect_host()
    loaded, sn = load_supernet(args.model)
    full = sn.full_config()
    n = len(full.layers)
    g = default_group_size((int(sn.config.hidden_size),) + tuple(sn.space.widths))
    model_id = loaded.source.sha256()[:12]
    ir, _ = export_ir_cached(key=f"{model_id}-{full.key}", build=lambda: sn.extract(full))
    t_export = time.perf_counter() - t0
    rows = [("f16", "f16", "f16", {}), ("int8", "int8", "int8", {}),
            (f"int4_asym_g{g}", f"int4_asym_g{g}", "int8", {}), (f"int4_sym_g{g}", f"int4_sym_g{g}", "int8", {}),
            ("int8 + KV f16", "int8", "int8", {"KV_CACHE_PRECISION": "f16"}),
            ("int8 + dyn. quant. off", "int8", "int8", {"DYNAMIC_QUANTIZATION_GROUP_SIZE": 0})]
    jobs, info = [], {}
    for label, fmt, head, runtime in rows:
        cfg = full.with_deploy([(fmt, fmt)] * n, head, runtime)
        _, summary = quantized_model(ir, cfg)
        info[cfg.key] = {"label": label, "subnet_key": cfg.key, "weights": fmt, "head": head, "runtime": runtime,
                         "shipped_mb": round(shipped_bytes(summary) / 1e6, 1)}
        jobs.append(MeasureJob(str(ir), cfg.key, cfg.to_dict(), tuple(cfg.mlp_widths), 0, "variant",
                               properties=dict(cfg.runtime) or None,
                               build=lambda cfg=cfg: quantized_model(ir, cfg)[0]))
    ms = measure_many(jobs, target, host=host, seed=args.seed)
    by_key = {m.subnet_key: m for m in ms}
    base = by_key[jobs[1].subnet_key]
    out_rows = []
    for job in jobs:
        m = by_key[job.subnet_key]
        r = dict(info[job.subnet_key], tpot_ms=round(m.tpot_ms, 3), ttft_ms=round(m.ttft_ms, 2),
                 decode_tok_s=round(1000 / m.tpot_ms, 1), stable=m.stable,
                 properties={k: m.properties.get(k) for k in ("INFERENCE_PRECISION_HINT", "KV_CACHE_PRECISION",
                                                              "DYNAMIC_QUANTIZATION_GROUP_SIZE")})
        if m is not base:
            r["decode_speedup_vs_int8"] = speedup(m, base, "tpot_ms", seed=args.seed)   # >1: faster than int8
        out_rows.append(r)
    tp = {r["label"]: r["tpot_ms"] for r in out_rows}
    doc = {"command": " ".join(["bench/quant_speed_order.py"] + sys.argv[1:]), "target": target.name,
           "host": host.describe(), "host_fingerprint": host.fingerprint, "model": args.model,
           "load_average_before": [round(x, 2) for x in load0], "load_average_after": [round(x, 2) for x in os.getloadavg()],
           "session": ms[0].session, "rows": out_rows,
           "order_ok": tp[f"int4_sym_g{g}"] < tp["int8"] < tp["f16"] and tp[f"int4_asym_g{g}"] < tp["int8"],
           "seconds": {"export": round(t_export, 1), "total": round(time.perf_counter() - t0, 1)},
           "note": "shared 2-core host (other jobs running); compare rows within this session only"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from hwnas.io import write_json_atomic

    write_json_atomic(out / "quant_speed_order.json", doc)
    for r in out_rows:
        print(f"{r['label']:<24} TPOT {r['tpot_ms']:7.2f} ms  TTFT {r['ttft_ms']:8.1f} ms  {r['shipped_mb']:6.1f} MB  "
              f"{r.get('decode_speedup_vs_int8', '')}")
    print("order int4 < int8 < f16:", doc["order_ok"])


if __name__ == "__main__":
    main()
