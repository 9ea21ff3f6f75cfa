"""Which search-time accuracy signal predicts the real accuracy drop of a subnet?

Subnets spanning the default search space (uniform ranked subnets plus seeded random samples) are
scored with each cheap signal the search could use, at its search-time cost:

- acc_norm on the search split (`--search-limit` items per task; the search's default signal);
- choice KL to the full model on those same items (free with the above);
- token KL and top-1 agreement to the full model on held-out text (WikiText-2 search split);

and with the "truth": the paired acc_norm drop from the full model on the report split
(`--report-limit` items per task, mean over tasks). The table gives Spearman's rho of each
signal with the truth, and its seconds per subnet. Subnets are scored after recovery, as the
search scores them. Results are appended per subnet (rerun to resume).

Usage: python bench/signal_bench.py [--subnets 20] [--report-limit 600]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def spearman(a, b) -> float:
    import numpy as np
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(spearmanr(a, b).statistic) if len(a) > 2 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="arc_easy,arc_challenge,mmlu,piqa")
    ap.add_argument("--subnets", type=int, default=20)
    ap.add_argument("--search-limit", type=int, default=50)
    ap.add_argument("--report-limit", type=int, default=600)
    ap.add_argument("--no-recovery", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/signal_bench.json")
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import numpy as np
    import torch

    from hwnas.accuracy.evaluate import TaskSuite
    from hwnas.accuracy.fidelity import TokenFidelity
    from hwnas.accuracy.paired import compare_items, full_model_items
    from hwnas.io import write_json_atomic
    from hwnas.model.recovery import make_recoverer
    from hwnas.model.space import SubnetConfig
    from hwnas.model.supernet import load_supernet

    torch.set_num_threads(2)
    loaded, sn = load_supernet("default")
    tok = loaded.tokenizer
    key = loaded.source.content_sha256()[:16]
    search = TaskSuite(tok, args.tasks, split="search", limit=args.search_limit)
    report = TaskSuite(tok, args.tasks, split="report", limit=args.report_limit)
    fid = TokenFidelity.from_task(tok, "wikitext2", split="search", windows=8, window=256)
    full_search = full_model_items(search, sn, key)
    full_report = full_model_items(report, sn, key)
    fid.reference(sn)
    if not args.no_recovery:
        sn.recoverer = make_recoverer(sn, tok)
    space = sn.space
    order = list(space.layer_order)
    rng = np.random.default_rng(args.seed)
    cfgs = [SubnetConfig(tuple(sorted(order[:k])), (w,) * k) for k, w in
            ((27, 1536), (24, 1536), (21, 1536), (30, 1152), (30, 768), (24, 1152), (21, 1152), (18, 1536))]
    while len(cfgs) < args.subnets:
        c = space.sample(rng)
        if c not in cfgs and c.num_layers >= 15:
            cfgs.append(c)
    cfgs = cfgs[: args.subnets]
    out = Path(args.out)
    res = json.loads(out.read_text()) if out.is_file() else {}
    rows = res.get("rows", {})
    res.update({"schema_version": 1, "tasks": args.tasks, "search_items": search.n_items, "report_items": report.n_items,
                "recovery": not args.no_recovery, "note": "shared 2-core host; seconds indicative"})
    for n, cfg in enumerate(cfgs):
        if cfg.key in rows:
            continue
        t = time.perf_counter()
        ev = search.evaluate(sn, subnet=cfg, keep_items=True)  # includes recovery (cached per subnet)
        t_acc = time.perf_counter() - t
        s = compare_items(ev["_items"], full_search, "acc_norm")
        t = time.perf_counter()
        f = fid.measure(sn, cfg)
        t_fid = time.perf_counter() - t
        r = compare_items(report.items(sn, subnet=cfg), full_report, "acc_norm")
        rows[cfg.key] = {"subnet": cfg.to_dict(), "layers": cfg.num_layers,
                         "search_acc_points": s["overall"]["points"], "search_choice_kl": s["choice_kl"],
                         "token_kl": f["kl"], "top1_agreement": f["top1_agreement"],
                         "truth_points": r["overall"]["points"], "truth_stderr": r["overall"]["stderr"],
                         "truth_items": r["overall"]["items"], "seconds": {"search_acc": round(t_acc, 2),
                                                                           "token_fidelity": round(t_fid, 2)}}
        print(n, cfg.key, rows[cfg.key], flush=True)
        res["rows"] = rows
        write_json_atomic(out, res)
    keys = list(rows)
    truth = [rows[k]["truth_points"] for k in keys]
    res["spearman_with_truth"] = {
        "search_acc_points": spearman([rows[k]["search_acc_points"] for k in keys], truth),
        "search_choice_kl (negated)": spearman([-rows[k]["search_choice_kl"] for k in keys], truth),
        "token_kl (negated)": spearman([-rows[k]["token_kl"] for k in keys], truth),
        "top1_agreement": spearman([rows[k]["top1_agreement"] for k in keys], truth),
    }
    res["subnets_scored"] = len(keys)
    write_json_atomic(out, res)
    print(json.dumps(res["spearman_with_truth"], indent=1))


if __name__ == "__main__":
    main()
