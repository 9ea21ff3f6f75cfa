"""Deployment benchmark: what hwnas ships vs what a user would deploy instead, measured in one run.

Builds and measures on this host, under one target's OpenVINO properties and workload:
  (a) full model, PyTorch fp32 eager (KV cache)
  (b) full model, OpenVINO IR exported by optimum-intel with NNCF int8 weights   <- the baseline
  (c) a subnet (default: 24 layers at MLP width 1152, the layers kept by the supernet's block-influence
      ranking, i.e. dropping the 6 least influential; --subnet or --from/--pick to
      take the search's pick) quantized by hwnas with Neural Compressor, one bundle per --quant

and reports decode tokens/s (1000 / TPOT at batch 1), TTFT, throughput at the target's largest
batch, weight bytes (openvino_model.bin; fp32 parameters for PyTorch), bundle bytes, and
report-split accuracy on ARC-e, ARC-c, MMLU and PIQA (--limit items per task), each with its
ratio to (b). OpenVINO models are compiled together and timed with their repeats interleaved
(b, c1, c2, b, c1, c2, ...; hwnas.hardware.measure.measure_many) and
medians are reported, so a busy machine slows all of them alike. Accuracy of the
IRs is scored with OpenVINO on the IR itself (hwnas.deploy.ir_accuracy.ir_accuracy, the target's
properties); (a) with hwnas.accuracy.evaluate in PyTorch fp32.

Usage:
  .venv/bin/python bench/deploy_bench.py [--limit 100] [--repeats 5] [--quant int8,int4]
      [--subnet SPEC | --from SEARCH_DIR --pick 'fastest-within 1.0'] [--out runs/deploy_bench] [--reuse]
Writes RESULTS/deploy_bench.json and .md (default bench/results/); bundles go under OUT/bundles.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

log = logging.getLogger("deploy_bench")
TASKS = ["arc_easy", "arc_challenge", "mmlu", "piqa"]


def _acc_summary(tasks: dict) -> dict:
    accs = [v["acc"] for v in tasks.values() if v.get("acc") is not None]
    return {"tasks": {k: {"acc": v.get("acc"), "acc_norm": v.get("acc_norm"), "acc_stderr": v.get("acc_stderr"),
                          "n": v.get("n")} for k, v in tasks.items()},
            "mean": sum(accs) / len(accs) if accs else None}


def _mean(accuracy: dict | None, metric: str) -> float | None:
    """Mean over tasks of `metric` ("acc" or "acc_norm"); None when any task lacks it."""
    vals = [(v or {}).get(metric) for v in ((accuracy or {}).get("tasks") or {}).values()]
    return sum(vals) / len(vals) if vals and all(v is not None for v in vals) else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--subnet", default=None, help="subnet JSON/file (default: first 24 layers, MLP 1152)")
    ap.add_argument("--from", dest="search_dir", default=None)
    ap.add_argument("--pick", default="fastest-within 1.0")
    ap.add_argument("--quant", default="int8,int4")
    ap.add_argument("--target", default="xeon")
    ap.add_argument("--limit", type=int, default=100, help="items per task (report split)")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per model (default: the target's)")
    ap.add_argument("--no-torch", action="store_true", help="skip (a)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reuse", action="store_true", help="reuse bundles and accuracies already in --out (same subnet/settings)")
    ap.add_argument("--out", default=str(REPO / "runs" / "deploy_bench"), help="bundles and caches")
    ap.add_argument("--results", default=str(REPO / "bench" / "results"), help="where deploy_bench.json/.md go")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("neural_compressor", "nncf", "transformers", "optimum", "torchao"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from hwnas.accuracy.evaluate import evaluate
    from hwnas.deploy.archive import sha256_file
    from hwnas.deploy.benchmark import NNCF_INT8, TORCH_FP32, ir_rows, measure_torch, nncf_int8_ir, ratios
    from hwnas.deploy.export import export_bundle
    from hwnas.deploy.ir_accuracy import ir_accuracy
    from hwnas.deploy.manifest import read_manifest
    from hwnas.deploy.quantize import make_recipe
    from hwnas.hardware.host import detect_host
    from hwnas.hardware.targets import load_target
    from hwnas.model.loading import load_model
    from hwnas.model.space import SubnetConfig, parse_subnet_spec
    from hwnas.search.picking import pick_from_search

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = [t for t in args.tasks.split(",") if t]
    quants = [q for q in args.quant.split(",") if q]
    target = load_target(args.target)
    if args.repeats:
        import dataclasses

        target = dataclasses.replace(target, measure=dataclasses.replace(target.measure, repeats=args.repeats))
    host = detect_host()
    props = target.resolved_properties(host)
    t_start = time.time()
    log.info("host %s; target %s -> %s", host.describe(), target.name, props)

    if args.subnet:
        subnet, how = parse_subnet_spec(args.subnet), "--subnet"
    elif args.search_dir:
        p = pick_from_search(args.search_dir, args.pick)
        subnet, how = p.subnet, f"{args.search_dir}: {p.rule}"
    else:
        from hwnas.model.supernet import load_supernet

        _, sn = load_supernet(args.model)
        if sn.space.layer_order:
            layers = tuple(sorted(sn.space.layer_order[:24]))
            subnet, how = SubnetConfig(layers, (1152,) * 24), "fixed 24 x 1152, layers ranked by block influence (no search yet)"
        else:
            subnet, how = SubnetConfig.uniform(24, 1152), "fixed 24 x 1152, first 24 layers (no search yet)"
        del sn, _
    log.info("subnet %s (%s): %s", subnet.key, subnet.describe(), how)

    loaded = load_model(args.model)
    tok = loaded.tokenizer

    # ---- build
    t0 = time.time()
    base_dir = nncf_int8_ir(loaded)
    log.info("(b) NNCF int8 IR at %s (%.0fs)", base_dir, time.time() - t0)
    bundles = {}
    for q in quants:
        t0 = time.time()
        prev = out / "bundles" / f"subnet-{q}"
        if args.reuse and (prev / "hwnas_manifest.json").is_file():
            man = read_manifest(prev)
            if man.subnet and man.subnet.get("key") == subnet.key and man.quantization["name"] == q:
                bundles[q] = prev
                log.info("(c) %s bundle reused from %s", q, prev)
                continue
        res = export_bundle(args.model, out / "bundles" / f"subnet-{q}", recipe=make_recipe(q), subnet=subnet,
                            target=target, seed=args.seed, force=True, measure=False)
        bundles[q] = res.path
        log.info("(c) %s bundle: %s, %.1f MB (%.0fs)", q, res.manifest.recipe.describe(), res.nbytes / 1e6, time.time() - t0)

    # ---- accuracy (report split); cached in OUT/accuracy_cache.json by weights hash and settings
    cache_path = out / "accuracy_cache.json"
    cache = json.loads(cache_path.read_text()) if args.reuse and cache_path.is_file() else {}

    def cached(key: str, fn):
        full = f"{key}|{args.limit}|{','.join(tasks)}|{args.seed}|{json.dumps(props, sort_keys=True, default=str)}"
        if full not in cache:
            t0 = time.time()
            cache[full] = fn()
            cache_path.write_text(json.dumps(cache, indent=1))
            log.info("accuracy of %s: %.4f (%.0fs)", key.split("|")[0], cache[full]["mean"], time.time() - t0)
        else:
            log.info("accuracy of %s: %.4f (cached)", key.split("|")[0], cache[full]["mean"])
        return cache[full]

    acc = {NNCF_INT8: cached(f"{NNCF_INT8}|{sha256_file(base_dir / 'openvino_model.bin')}",
                             lambda: ir_accuracy(base_dir, tok, tasks, limit=args.limit, seed=args.seed, properties=props))}
    for q, path in bundles.items():
        acc[q] = cached(f"{q}|{sha256_file(path / 'openvino_model.bin')}",
                        lambda: ir_accuracy(path, tok, tasks, limit=args.limit, seed=args.seed, properties=props))
    if not args.no_torch:
        acc[TORCH_FP32] = cached(f"{TORCH_FP32}|{loaded.source.sha256()}", lambda: _acc_summary(
            evaluate(loaded.model, tok, tasks, split="report", limit=args.limit, seed=args.seed, precision="fp32")["tasks"]))

    # ---- speed: all OpenVINO models compiled together, repeats interleaved (hwnas.hardware.measure.measure_many)
    t0 = time.time()
    items = [("full model", NNCF_INT8, base_dir)] + [(f"subnet {q}", "bundle", p) for q, p in bundles.items()]
    rows = ir_rows(items, target, host=host, seed=args.seed)
    for row in rows:
        row.accuracy = acc.get(NNCF_INT8 if row.kind == NNCF_INT8 else row.name.split()[-1])
        log.info("%s: TTFT %.1f ms, TPOT %.2f ms (samples %s), thr %.1f tok/s", row.name, row.ttft_ms, row.tpot_ms,
                 row.extra.get("tpot_samples_ms"), row.throughput_tok_s)
        if row.kind == "bundle":
            man = read_manifest(bundles[row.name.split()[-1]])
            row.extra.update(quantization=man.recipe.describe(), subnet_key=subnet.key)
    log.info("OpenVINO timing %.0fs", time.time() - t0)
    if not args.no_torch:
        t0 = time.time()
        trow = measure_torch(loaded.model, target, seed=args.seed)
        trow.accuracy = acc.get(TORCH_FP32)
        rows.insert(0, trow)
        log.info("(a) torch: TTFT %.1f ms, TPOT %.2f ms (%.0fs)", trow.ttft_ms, trow.tpot_ms, time.time() - t0)

    table = ratios(rows)
    # Both metrics: the search ranks subnets by acc_norm (its default), lm-eval tables often show acc.
    for metric, field in (("acc", "accuracy_points_vs_b"), ("acc_norm", "accuracy_norm_points_vs_b")):
        base = _mean(acc.get(NNCF_INT8), metric)
        for d in table:
            a = _mean(d.get("accuracy"), metric)
            d["mean_" + metric] = a
            d[field] = 100 * (a - base) if a is not None and base is not None else None
    result = {"subnet": {**subnet.to_dict(), "key": subnet.key, "how": how}, "target": target.name,
              "properties": props, "host": host.to_dict(), "limit": args.limit, "tasks": tasks, "repeats": target.measure.repeats,
              "seconds": round(time.time() - t_start, 1), "rows": table}
    res_dir = Path(args.results)
    res_dir.mkdir(parents=True, exist_ok=True)
    (res_dir / "deploy_bench.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    md = _markdown(result)
    (res_dir / "deploy_bench.md").write_text(md)
    print(md)
    return 0


def _markdown(res: dict) -> str:
    def f(v, d=2, s=""):
        return "-" if v is None else f"{v:.{d}f}{s}"

    lines = [f"# Deployment benchmark ({res['target']}, {res['host']['cpu_model']}, {res['host']['physical_cores']} cores)", "",
             f"Subnet {res['subnet']['key']} ({len(res['subnet']['layers'])} layers, MLP {sorted(set(res['subnet']['mlp_widths']))}): "
             f"{res['subnet']['how']}. Properties {res['properties']}. Accuracy: report split, {res['limit']} items per task "
             f"(per-task columns: acc; the search ranks by acc_norm, so both means are shown). "
             f"Speed: median of {res['repeats']} interleaved repeats (plus re-measure rounds when noisy); ratios vs (b).", "",
             "| model | decode tok/s | TTFT ms | throughput tok/s | weights MB | bundle MB | speed-up | smaller | "
             + " | ".join(res["tasks"]) + " | mean acc | Δ pts vs (b) | mean acc_norm | Δ pts vs (b) |",
             "|" + "---|" * (12 + len(res["tasks"]))]
    for d in res["rows"]:
        acc = d.get("accuracy") or {}
        per = [f((acc.get("tasks", {}).get(t) or {}).get("acc") * 100, 1) if (acc.get("tasks", {}).get(t) or {}).get("acc") is not None
               else "-" for t in res["tasks"]]
        label = {"pytorch-fp32": "(a) PyTorch fp32", "openvino-nncf-int8": "(b) OV NNCF int8"}.get(d["kind"], f"(c) {d['name']}")
        lines.append("| " + " | ".join([
            label, f(d["decode_tok_s"], 1), f(d["ttft_ms"], 1), f(d["throughput_tok_s"], 1),
            f(d["weight_bytes"] / 1e6 if d.get("weight_bytes") else None, 1),
            f(d["total_bytes"] / 1e6 if d.get("total_bytes") else None, 1),
            f(d.get("decode_speedup"), 2, "x"), f(d.get("size_ratio"), 2, "x"), *per,
            f(d["mean_acc"] * 100 if d.get("mean_acc") is not None else None, 1), f(d.get("accuracy_points_vs_b"), 1),
            f(d["mean_acc_norm"] * 100 if d.get("mean_acc_norm") is not None else None, 1),
            f(d.get("accuracy_norm_points_vs_b"), 1),
        ]) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
