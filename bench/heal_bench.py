"""`hwnas heal`: what distilling the pick buys, per CPU-minute (issue 10 §3).

For fixed subnets of the default model, each starting from the training-free recovered subnet
(what search scores and export ships without a heal), this heals it with `hwnas.train.heal`
for a wall-time budget per train mode (``cheap``: norms + down_proj; ``all``: every decoder
tensor) and measures before and after, on the same items:

- the paired acc_norm difference from the full model on report-split items of the tasks
  (± stderr, 95% interval, item count; the full model's per-item results are cached);
- WikiText-2 perplexity (report split windows) as a ratio to the full model's;
- token KL / top-1 agreement to the full model on WikiText-2 search-split text;
- the heal's wall seconds and CPU seconds (process time, both cores), and the training KL
  (on calibration text) at each minute, from the heal log.

Usage: python bench/heal_bench.py [--minutes 5] [--modes cheap,all] [--limit 600]
       [--only NAME;NAME] [--subnet SPEC ...] [--out bench/results/heal_bench.json]
--subnet (inline JSON, a subnet JSON file, or a record holding "subnet", e.g. a heal folder's
hwnas_heal.json) benches that subnet instead of the fixed ones, named by its key.
Results are appended subnet by subnet (atomic writes); rerunning skips finished rows unless --redo.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARETO = ROOT / "bench/results/search_demo_session3/pareto.json"


def subnets(sn) -> dict:
    """Subnets the main job found closest to the full model, and a ranked 27-layer cut."""
    from hwnas.model.space import SubnetConfig

    order = list(sn.space.layer_order)
    out = {"27x1536": SubnetConfig(tuple(sorted(order[:27])), (1536,) * 27)}
    if PARETO.is_file():
        for rec in json.loads(PARETO.read_text()):
            if rec["key"] in ("l30-a4fe9171", "l26-f4ae0416"):
                out[f"{rec['key']} (main-job front)"] = SubnetConfig.from_dict(rec["subnet"])
    return out


def _kl_by_minute(folder: Path) -> list[dict]:
    """Training KL (calibration text) averaged over each minute of the heal, from heal_log.jsonl."""
    steps = [json.loads(x) for x in (folder / "heal_log.jsonl").read_text().splitlines()]
    steps = [s for s in steps if "kl" in s and "seconds" in s]
    by_min: dict[int, list[float]] = {}
    for s in steps:
        by_min.setdefault(int(s["seconds"] // 60), []).append(s["kl"])
    return [{"minute": m + 1, "train_kl": round(sum(v) / len(v), 5), "steps": len(v)} for m, v in sorted(by_min.items())]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="arc_easy,arc_challenge,mmlu,piqa")
    ap.add_argument("--limit", type=int, default=600, help="report-split items per task (ARC-Challenge has 586)")
    ap.add_argument("--minutes", type=float, default=5.0, help="heal budget per subnet and mode (wall time)")
    ap.add_argument("--modes", default="cheap,all")
    ap.add_argument("--ppl-windows", type=int, default=16)
    ap.add_argument("--only", default=None, help="';'-separated subnet names to run")
    ap.add_argument("--subnet", action="append", default=[],
                    help="bench this subnet (JSON or a file holding one) instead of the fixed set; repeatable")
    ap.add_argument("--redo", action="store_true", help="rerun rows already in --out")
    ap.add_argument("--out", default=str(ROOT / "bench/results/heal_bench.json"))
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from hwnas.accuracy.evaluate import TaskSuite
    from hwnas.accuracy.fidelity import TokenFidelity
    from hwnas.accuracy.paired import compare_items, full_model_items
    from hwnas.io import write_json_atomic
    from hwnas.model.healed import apply_heal
    from hwnas.model.recovery import make_recoverer
    from hwnas.model.supernet import load_supernet
    from hwnas.train.heal import HealConfig, heal

    torch.set_num_threads(2)
    loaded, sn = load_supernet("default")
    tok = loaded.tokenizer
    sha = loaded.source.sha256()
    key = loaded.source.content_sha256()[:16]
    mc = TaskSuite(tok, args.tasks, split="report", limit=args.limit)
    ppl = TaskSuite(tok, "wikitext2", split="report", limit=args.ppl_windows)
    fid = TokenFidelity.from_task(tok, "wikitext2", split="search", windows=8, window=256, precision="fp32")
    full_items = full_model_items(mc, sn, key)
    full_ppl = ppl.evaluate(sn)["tasks"]["wikitext2"]["perplexity"]
    fid.reference(sn)
    rc = make_recoverer(sn, tok)
    sn.recoverer = rc

    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    results.update({"schema_version": 1, "model": loaded.source.to_dict(), "tasks": args.tasks,
                    "report_items": mc.describe(), "metric": "acc_norm", "full_perplexity": full_ppl,
                    "ppl_windows": args.ppl_windows, "recovery": rc.describe(), "fidelity": "WikiText-2 search split, 8x256 tokens",
                    "note": "shared 2-core host; accuracy differences are paired on the same items; CPU seconds are "
                            "process time over both cores"})
    results.setdefault("subnets", {})
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    wanted = set(args.only.split(";")) if args.only else None

    def score(model, label: str) -> dict:
        t = time.perf_counter()
        ev = mc.evaluate(model, keep_items=True)
        cmp = compare_items(ev["_items"], full_items, "acc_norm")
        p = ppl.evaluate(model)["tasks"]["wikitext2"]["perplexity"]
        f = fid.measure_model(sn, model)
        row = {"acc_norm_vs_full": cmp["overall"], "choice_kl": cmp["choice_kl"],
               "tasks": {k: {kk: v[kk] for kk in ("points", "stderr", "items")} for k, v in cmp["tasks"].items()},
               "perplexity_ratio": round(p / full_ppl, 4), "token_kl": f["kl"], "token_kl_stderr": f["kl_stderr"],
               "top1_agreement": f["top1_agreement"], "eval_seconds": round(time.perf_counter() - t, 1)}
        print(label, json.dumps({k: row[k] for k in ("acc_norm_vs_full", "perplexity_ratio", "token_kl", "top1_agreement")}),
              flush=True)
        return row

    from hwnas.model.space import parse_subnet_spec

    chosen = {c.key: c for c in map(parse_subnet_spec, args.subnet)} if args.subnet else subnets(sn)
    for name, cfg in chosen.items():
        if wanted and name not in wanted:
            continue
        row = results["subnets"].get(name, {}) if not args.redo else {}
        row.update({"subnet": cfg.to_dict(), "key": cfg.key})
        t = time.perf_counter()
        rc.fit(cfg)
        row["recovery_seconds"] = round(time.perf_counter() - t, 1)
        if "recovered" not in row:
            with torch.no_grad():
                row["recovered"] = score(sn.extract(cfg), f"{name} recovered")
        for mode in modes:
            if f"healed_{mode}" in row:
                continue
            folder = Path(tempfile.mkdtemp(prefix="heal_bench_"))
            try:
                c0, w0 = time.process_time(), time.perf_counter()
                res = heal(sn, tok, cfg, folder / "h", HealConfig(train=mode, steps=100_000, minutes=args.minutes),
                           fidelity=fid, model_record={"sha256": sha})
                cpu, wall = time.process_time() - c0, time.perf_counter() - w0
                dense = sn.extract(cfg)
                apply_heal(dense, folder / "h", subnet=cfg, model_sha256=sha)
                with torch.no_grad():
                    after = score(dense, f"{name} healed {mode}")
                after.update({"heal_wall_seconds": round(wall, 1), "heal_cpu_seconds": round(cpu, 1),
                              "steps": res.steps_done, "tokens": res.tokens, "trained_parameters": res.trained_parameters,
                              "lr": HealConfig(train=mode).peak_lr, "train_kl_by_minute": _kl_by_minute(folder / "h")})
                before = row["recovered"]["acc_norm_vs_full"]["points"]
                after["points_gained_per_cpu_minute"] = round(
                    (after["acc_norm_vs_full"]["points"] - before) / (cpu / 60), 3)
                row[f"healed_{mode}"] = after
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            results["subnets"][name] = row
            write_json_atomic(out, results)
        results["subnets"][name] = row
        write_json_atomic(out, results)
    write_json_atomic(out, results)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
