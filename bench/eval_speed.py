"""Evaluation speed and accuracy: the full default model and an 18-layer x 768-width subnet.

Scores the same multiple-choice items (search split, `--limit` per task, 1,000 items by
default over ARC-Easy, ARC-Challenge, MMLU, PIQA, BoolQ) with the full model and the subnet,
both through one Supernet (the subnet by `set_subnet`, no copies), in bf16 autocast and fp32.
Reports items/s, seconds, accuracies with sample counts, and the bf16-vs-fp32 differences
(accuracy change per task, share of items whose predicted choice flips, log-likelihood error).

    .venv/bin/python bench/eval_speed.py [--limit 200] [--threads N] [--configs full-bf16,full-fp32,sub-bf16,sub-fp32]
                                         [--ppl-windows 20] [--out bench/results/eval_speed.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--tasks", default="arc_easy,arc_challenge,mmlu,piqa,boolq")
    ap.add_argument("--limit", type=int, default=200, help="items per task (search split)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--row-tokens", type=int, default=None)
    ap.add_argument("--configs", default="full-bf16,full-fp32,sub-bf16,sub-fp32")
    ap.add_argument("--subnet-layers", type=int, default=18)
    ap.add_argument("--subnet-width", type=int, default=768)
    ap.add_argument("--ppl-windows", type=int, default=0, help="also WikiText-2 perplexity on N windows (0: skip)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from hwnas.accuracy.evaluate import DEFAULT_BATCH_SIZE, DEFAULT_ROW_TOKENS, TaskSuite, mc_metrics
    from hwnas.model.loading import load_model
    from hwnas.model.space import SubnetConfig
    from hwnas.model.supernet import Supernet

    bs = args.batch_size or DEFAULT_BATCH_SIZE
    rt = args.row_tokens or DEFAULT_ROW_TOKENS
    t0 = time.perf_counter()
    loaded = load_model(args.model)
    sn = Supernet.from_loaded(loaded)  # importance-ordered channels, as the search uses them
    sub = SubnetConfig.uniform(args.subnet_layers, args.subnet_width)
    sn.space.validate(sub, structure=False)
    setup_s = time.perf_counter() - t0
    suite = TaskSuite(loaded.tokenizer, args.tasks, split="search", limit=args.limit, data_dir=args.data_dir)
    reqs = {name: d.requests for name, d in suite.data.items() if d.requests is not None}
    fed = sum(r.fed_tokens for rs in reqs.values() for r in rs)
    out: dict = {
        "model": loaded.source.to_dict(), "subnet": sub.to_dict(), "subnet_key": sub.key,
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "load_average_before": os.getloadavg(),
        "batch_size": bs, "row_tokens": rt, "split": "search", "limit_per_task": args.limit,
        "items": suite.n_items, "items_per_task": suite.describe(), "fed_tokens": fed,
        "setup_seconds": round(setup_s, 1), "runs": {},
    }
    print(f"{suite.n_items} items, {fed} tokens fed; load average {os.getloadavg()}", flush=True)
    # warm-up (oneDNN primitives, bf16 weight casts)
    warm = TaskSuite(loaded.tokenizer, args.tasks, split="search", limit=2, data_dir=args.data_dir)
    warm.evaluate(sn, precision="bf16")
    warm.evaluate(sn, precision="fp32")

    lls_by_run = {}
    for run in [c.strip() for c in args.configs.split(",") if c.strip()]:
        which, prec = run.split("-")
        cfg = None if which == "full" else sub
        t = time.perf_counter()
        lls = suite.loglikelihoods(sn, subnet=cfg, batch_size=bs, row_tokens=rt, precision=prec)
        sec = time.perf_counter() - t
        lls_by_run[run] = lls
        tasks = {}
        for name, rs in reqs.items():
            tasks[name] = mc_metrics(lls[name], [r.gold for r in rs], [np.array(r.choice_bytes, float) for r in rs])
        rec = {"seconds": round(sec, 2), "items_per_second": round(suite.n_items / sec, 3),
               "seconds_per_1000_items": round(1000 * sec / suite.n_items, 1),
               "tokens_per_second": round(fed / sec, 1), "tasks": tasks}
        if args.ppl_windows:
            ps = TaskSuite(loaded.tokenizer, "wikitext2", split="search", limit=args.ppl_windows, data_dir=args.data_dir)
            rec["wikitext2"] = ps.evaluate(sn, subnet=cfg, precision=prec)["tasks"]["wikitext2"]
        out["runs"][run] = rec
        accs = ", ".join(f"{k} {100 * v['acc']:.1f}" for k, v in tasks.items())
        print(f"{run}: {sec:.1f} s, {suite.n_items / sec:.2f} items/s; acc {accs}", flush=True)

    # bf16 vs fp32 on the same items
    for which in ("full", "sub"):
        a, b = lls_by_run.get(f"{which}-bf16"), lls_by_run.get(f"{which}-fp32")
        if a is None or b is None:
            continue
        cmp = {}
        for name, rs in reqs.items():
            flips = np.mean([int(np.argmax(x)) != int(np.argmax(y)) for x, y in zip(a[name], b[name])])
            err = np.concatenate([np.abs(x - y) for x, y in zip(a[name], b[name])])
            ra, rb = out["runs"][f"{which}-bf16"]["tasks"][name], out["runs"][f"{which}-fp32"]["tasks"][name]
            cmp[name] = {"acc_diff_points": round(100 * (ra["acc"] - rb["acc"]), 2),
                         "acc_norm_diff_points": round(100 * (ra["acc_norm"] - rb["acc_norm"]), 2),
                         "acc_stderr_points": round(100 * rb["acc_stderr"], 2),
                         "prediction_flip_fraction": round(float(flips), 4),
                         "median_abs_loglik_diff": round(float(np.median(err)), 4)}
        sa, sb = out["runs"][f"{which}-bf16"]["seconds"], out["runs"][f"{which}-fp32"]["seconds"]
        out[f"bf16_vs_fp32_{which}"] = {"speedup": round(sb / sa, 2), "tasks": cmp}
    out["load_average_after"] = os.getloadavg()
    print(json.dumps(out, indent=2))
    if args.out:
        from hwnas.io import write_json_atomic

        write_json_atomic(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
