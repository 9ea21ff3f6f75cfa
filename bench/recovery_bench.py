"""Training-free recovery: what it buys per subnet, and what it costs.

For fixed subnets of the default model (ranked layers as the search space keeps them), each used
as sliced ("none") and after recovery (`hwnas.model.recovery`), this measures:

- WikiText-2 perplexity (report split windows) as a ratio to the full model's;
- the paired accuracy difference from the full model on the same report-split items
  (acc_norm, mean over tasks, ± stderr, item count), with the choice KL;
- top-1 agreement / KL to the full model on held-out text (WikiText-2 search split);
- the seconds recovery took (the teacher pass is paid once per model, listed separately).

Usage: python bench/recovery_bench.py [--limit 250] [--out bench/results/recovery_bench.json]
The host is noisy (shared 2-core VM): seconds are indicative; all accuracy figures are paired.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEMO_PICK = "bench/results/search_main_job/pareto.json"


def subnets(sn) -> dict:
    from hwnas.model.space import SubnetConfig

    order = list(sn.space.layer_order)

    def ranked(k: int, widths) -> SubnetConfig:
        layers = tuple(sorted(order[:k]))
        ws = widths if isinstance(widths, (list, tuple)) else [widths] * k
        return SubnetConfig(layers, tuple(ws))

    # 21 layers, mixed: the 7 most important kept layers at full width, the rest narrowed
    layers21 = sorted(order[:21])
    rank = {layer: r for r, layer in enumerate(order)}
    mixed = [1536 if rank[i] < 7 else (1152 if rank[i] < 14 else 768) for i in layers21]
    out = {
        "24x1536": ranked(24, 1536),
        "27x1536": ranked(27, 1536),
        "21 mixed (7x1536, 7x1152, 7x768)": ranked(21, mixed),
        "30x768": ranked(30, 768),
        "18x1152": ranked(18, 1152),
    }
    pick = Path(DEMO_PICK)
    if pick.is_file():
        rec = next((r for r in json.loads(pick.read_text()) if r["key"] == "l21-4d136097"), None)
        if rec:
            out["l21-4d136097 (last session's demo pick)"] = SubnetConfig.from_dict(rec["subnet"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="arc_easy,arc_challenge,mmlu,piqa")
    ap.add_argument("--limit", type=int, default=250, help="report-split items per task")
    ap.add_argument("--ppl-windows", type=int, default=16)
    ap.add_argument("--only", default=None, help="';'-separated subnet names to run")
    ap.add_argument("--target", default=None, help="recovery target (auto, residual, mlp); default: RecoveryConfig's")
    ap.add_argument("--out", default="bench/results/recovery_bench.json")
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from hwnas.accuracy.evaluate import TaskSuite
    from hwnas.accuracy.fidelity import TokenFidelity
    from hwnas.accuracy.paired import compare_items, full_model_items
    from hwnas.io import write_json_atomic
    from hwnas.model.recovery import make_recoverer
    from hwnas.model.supernet import load_supernet

    torch.set_num_threads(2)
    loaded, sn = load_supernet("default")
    tok = loaded.tokenizer
    key = loaded.source.content_sha256()[:16]
    mc = TaskSuite(tok, args.tasks, split="report", limit=args.limit)
    ppl = TaskSuite(tok, "wikitext2", split="report", limit=args.ppl_windows)
    fid = TokenFidelity.from_task(tok, "wikitext2", split="search", windows=8, window=256)
    t0 = time.perf_counter()
    full_items = full_model_items(mc, sn, key)
    full_ppl = ppl.evaluate(sn)["tasks"]["wikitext2"]["perplexity"]
    fid.reference(sn)
    full_s = time.perf_counter() - t0
    from hwnas.model.recovery import RecoveryConfig

    rc = make_recoverer(sn, tok, config=RecoveryConfig(target=args.target) if args.target else None)
    results = {"schema_version": 1, "tasks": args.tasks, "report_items": mc.describe(), "full_perplexity": full_ppl,
               "ppl_windows": args.ppl_windows, "recovery": rc.describe(), "host_load": os.getloadavg(),
               "note": "shared 2-core host; accuracy differences are paired on the same items", "subnets": {}}
    if Path(args.out).is_file():
        results["subnets"] = json.loads(Path(args.out).read_text()).get("subnets", {})
    wanted = set(args.only.split(";")) if args.only else None
    for name, cfg in subnets(sn).items():
        if wanted and name not in wanted:
            continue
        row = {"subnet": cfg.to_dict(), "key": cfg.key}
        for mode in ("none", "recovered"):
            sn.recoverer = rc if mode == "recovered" else None
            fit_s = None
            if mode == "recovered":
                t = time.perf_counter()
                rc.fit(cfg)
                fit_s = time.perf_counter() - t
            ev = mc.evaluate(sn, subnet=cfg, keep_items=True)
            cmp = compare_items(ev["_items"], full_items, "acc_norm")
            p = ppl.evaluate(sn, subnet=cfg)["tasks"]["wikitext2"]["perplexity"]
            f = fid.measure(sn, cfg)
            row[mode] = {"perplexity_ratio": round(p / full_ppl, 4), "acc_norm_vs_full": cmp["overall"],
                         "tasks": {k: {kk: v[kk] for kk in ("points", "stderr", "items")} for k, v in cmp["tasks"].items()},
                         "choice_kl": cmp["choice_kl"], "token_kl": f["kl"], "top1_agreement": f["top1_agreement"],
                         "recovery_seconds": None if fit_s is None else round(fit_s, 2)}
            print(name, mode, row[mode]["perplexity_ratio"], cmp["overall"], f["top1_agreement"], fit_s, flush=True)
        sn.recoverer = None
        results["subnets"][name] = row
        results["teacher_seconds"] = round(rc.teacher_seconds, 2)
        results["full_model_seconds"] = round(full_s, 2)
        write_json_atomic(args.out, results)
    write_json_atomic(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
