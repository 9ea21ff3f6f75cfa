"""One-shot supernet training, measured: subnets of the default model before vs after `hwnas train`.

In one run and on the same items (the *search* split, first --limit items of each task):
mean multiple-choice accuracy and WikiText-2 perplexity of the largest subnet, the smallest
subnet and 5 fixed random subnets (seeded), evaluated with `hwnas.accuracy.evaluate.TaskSuite` on the
importance-ordered model, then again on the folder `hwnas.train.instatune.train` wrote. Optionally times a
training step of the full model in fp32 and bf16 autocast first (--precision-probe N), to back
the choice of `--precision auto`.

Usage:
  python bench/train_bench.py [--steps 16] [--data ../shared/data/c4_demo/c4_demo.jsonl] [--limit 40]
      [--windows 4] [--lr 5e-5] [--k 1] [--no-distill] [--precision-probe 3] [--out bench/results/train_bench.json]

Budget: on 2 shared cores each full-model training step of 512 tokens takes tens of seconds, so
the defaults are a few minutes of training; results are written as JSON plus a markdown table.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from hwnas.accuracy.evaluate import TaskSuite
from hwnas.io import write_json_atomic, write_text_atomic  # noqa: E402
from hwnas.model.loading import load_model
from hwnas.model.supernet import Supernet, load_supernet
from hwnas.train.instatune import TrainConfig, train

REPO = Path(__file__).resolve().parent.parent
MC_TASKS = ["arc_easy", "arc_challenge", "piqa"]


def precision_probe(sn, reps: int, seq_len: int, batch: int) -> dict:
    """Wall time of one forward+backward of the full model, fp32 vs bf16 autocast, interleaved."""
    import torch

    model = sn.model
    model.train()
    ids = torch.randint(0, model.config.vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}

    def step(bf16: bool) -> float:
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=ids, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        loss.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    step(False), step(True)  # warm-up
    for _ in range(reps):
        for name in ("fp32", "bf16"):
            times[name].append(step(name == "bf16"))
    model.eval()
    return {name: {"median_s": statistics.median(v), "min_s": min(v), "samples_s": v} for name, v in times.items()} | {
        "tokens_per_step": batch * seq_len, "bf16_over_fp32_median": statistics.median(times["bf16"]) / statistics.median(times["fp32"])}


def evaluate_all(sn, suites, subnets, label: str, precision: str) -> dict:
    out = {}
    for name, cfg in subnets.items():
        t = time.perf_counter()
        res = {}
        for suite in suites:
            res.update(suite.evaluate(sn, subnet=cfg, precision=precision)["tasks"])
        accs = [res[t]["acc"] for t in MC_TASKS]
        out[name] = {"tasks": res, "mean_acc": float(np.mean(accs)), "ppl": res["wikitext2"]["perplexity"],
                     "seconds": time.perf_counter() - t}
        print(f"[{label}] {name:<9} acc {out[name]['mean_acc']:.4f} ppl {out[name]['ppl']:9.2f} "
              f"({out[name]['seconds']:.0f} s)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "c4_demo" / "c4_demo.jsonl"))
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--no-distill", action="store_true")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--limit", type=int, default=40, help="items per multiple-choice task (search split)")
    ap.add_argument("--windows", type=int, default=4, help="512-token WikiText-2 windows (search split)")
    ap.add_argument("--eval-precision", default="fp32", help="precision of the accuracy/perplexity evaluation")
    ap.add_argument("--random-subnets", type=int, default=5)
    ap.add_argument("--subnet-seed", type=int, default=2024)
    ap.add_argument("--precision-probe", type=int, default=0, help="repeats of the fp32-vs-bf16 step timing (0: skip)")
    ap.add_argument("--run-dir", default="/tmp/hwnas-train-bench-run")
    ap.add_argument("--out", default="bench/results/train_bench.json")
    args = ap.parse_args()

    import torch

    t_all = time.time()
    loaded, sn = load_supernet(args.model)
    space = sn.space
    rng = np.random.default_rng(args.subnet_seed)
    subnets = {"largest": space.largest(), "smallest": space.smallest()}
    for i in range(args.random_subnets):
        subnets[f"random-{i + 1}"] = space.sample(rng)
    suites = [TaskSuite(loaded.tokenizer, MC_TASKS, split="search", limit=args.limit),
              TaskSuite(loaded.tokenizer, ["wikitext2"], split="search", limit=args.windows)]
    report: dict = {"args": vars(args), "torch_threads": torch.get_num_threads(),
                    "subnets": {k: {**v.to_dict(), "n_params": v.n_params(sn.config)} for k, v in subnets.items()}}
    if args.precision_probe:
        report["precision_probe"] = precision_probe(sn, args.precision_probe, args.seq_len, args.batch_size)
        print("precision probe:", {k: v if not isinstance(v, dict) else round(v["median_s"], 2)
                                   for k, v in report["precision_probe"].items()}, flush=True)
    t = time.time()
    report["before"] = evaluate_all(sn, suites, subnets, "before", args.eval_precision)
    report["eval_before_s"] = time.time() - t
    del sn, loaded

    cfg = TrainConfig(steps=args.steps, strategy="sandwich", k=args.k, distill=not args.no_distill, lr=args.lr,
                      batch_size=args.batch_size, seq_len=args.seq_len, precision=args.precision,
                      warmup_steps=max(1, args.steps // 10), val_sequences=4, eval_subnets=2, device="cpu")
    shutil.rmtree(args.run_dir, ignore_errors=True)
    t = time.time()

    def progress(done: int, total: int, label: str) -> None:
        print(f"  train {done}/{total} {label} ({time.time() - t:.0f} s)", flush=True)

    res = train(args.model, args.data, args.run_dir, cfg, progress=progress)
    report["train"] = {"config": cfg.to_dict(), "result": res.to_dict(), "seconds": time.time() - t}

    loaded = load_model(args.run_dir)
    sn = Supernet.from_loaded(loaded)
    assert loaded.supernet_meta.get("channels_ordered"), "trained folder lost its channel order"
    t = time.time()
    report["after"] = evaluate_all(sn, suites, subnets, "after", args.eval_precision)
    report["eval_after_s"] = time.time() - t
    report["total_s"] = time.time() - t_all

    b, a = report["before"], report["after"]
    rand = [k for k in subnets if k.startswith("random")]
    report["summary"] = {
        "largest": {"d_acc": a["largest"]["mean_acc"] - b["largest"]["mean_acc"],
                    "ppl": [b["largest"]["ppl"], a["largest"]["ppl"]]},
        "smallest": {"d_acc": a["smallest"]["mean_acc"] - b["smallest"]["mean_acc"],
                     "ppl": [b["smallest"]["ppl"], a["smallest"]["ppl"]]},
        "random_mean": {"d_acc": float(np.mean([a[k]["mean_acc"] - b[k]["mean_acc"] for k in rand])),
                        "ppl_ratio_geomean": float(np.exp(np.mean([np.log(a[k]["ppl"] / b[k]["ppl"]) for k in rand])))},
    }
    write_json_atomic(REPO / args.out if not Path(args.out).is_absolute() else args.out, report)
    lines = ["| subnet | layers | MLP widths | params | mean acc before | after | WikiText-2 ppl before | after |",
             "|---|---|---|---|---|---|---|---|"]
    for k, cfg_s in subnets.items():
        w = cfg_s.mlp_widths
        lines.append(f"| {k} | {len(cfg_s.layers)} | {min(w)}-{max(w)} (mean {np.mean(w):.0f}) | "
                     f"{cfg_s.n_params(loaded.config) / 1e6:.1f}M | {b[k]['mean_acc']:.3f} | {a[k]['mean_acc']:.3f} | "
                     f"{b[k]['ppl']:.2f} | {a[k]['ppl']:.2f} |")
    md = "\n".join(lines) + "\n"
    write_text_atomic(Path(str(REPO / args.out if not Path(args.out).is_absolute() else args.out)).with_suffix(".md"), md)
    print(md)
    print(json.dumps(report["summary"], indent=2))
    print(f"total {report['total_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
