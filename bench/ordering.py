"""Importance ordering and layer choice, measured: WikiText-2 perplexity of subnets of the default model.

Compares, in one run and on the same text:
- the full model with and without MLP channel importance ordering (must be equal: ordering is a permutation);
- width-768 subnets with ordering vs plain first-k channel slicing;
- which layers a 24- and an 18-layer subnet keeps: the first N ("prefix"), the N with the highest
  block influence ("ranked", measured on calibration text), or the first N-1 plus the last layer.

Usage: python bench/ordering.py [--model default] [--windows 40] [--out bench/results/ordering.json]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hwnas.accuracy.evaluate import TaskSuite
from hwnas.io import write_json_atomic  # noqa: E402
from hwnas.model.space import SubnetConfig
from hwnas.model.supernet import load_supernet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--windows", type=int, default=40, help="512-token WikiText-2 windows (report split)")
    ap.add_argument("--out", default="bench/results/ordering.json")
    args = ap.parse_args()

    t0 = time.time()
    loaded, plain = load_supernet(args.model, order=False)
    suite = TaskSuite(loaded.tokenizer, ["wikitext2"], split="report", limit=args.windows)
    n = plain.space.num_layers
    full_w = plain.full_width

    def ppl(sn, cfg):
        return suite.evaluate(sn, subnet=cfg, precision="fp32")["tasks"]["wikitext2"]["perplexity"]

    rows = []
    w = 768 if full_w == 1536 else plain.space.widths[len(plain.space.widths) // 2]
    plain_cfgs = {
        "full": SubnetConfig.uniform(n, full_w),
        f"all layers x {w}": SubnetConfig.uniform(n, w),
        f"18 layers x {w}": SubnetConfig.uniform(min(18, n), w),
    }
    plain_ppl = {name: ppl(plain, cfg) for name, cfg in plain_cfgs.items()}
    del plain
    loaded, sn = load_supernet(args.model, order=True)
    for name, cfg in plain_cfgs.items():
        rows.append({"subnet": name, "first-k channels": plain_ppl[name], "importance-ordered": ppl(sn, cfg)})
    order = sn.meta["layer_order"]
    layer_rows = []
    for k in (24, 18):
        if k >= n:
            continue
        choices = {
            "prefix (first N)": tuple(range(k)),
            "first N-1 + last": tuple(range(k - 1)) + (n - 1,),
            "ranked (block influence)": tuple(sorted(order[:k])),
        }
        for label, layers in choices.items():
            cfg = SubnetConfig(layers, (full_w,) * k)
            layer_rows.append({"layers": k, "choice": label, "kept": list(layers), "perplexity": ppl(sn, cfg)})
    result = {
        "model": loaded.source.name, "windows": args.windows, "window_tokens": suite.window, "split": "report",
        "channel_ordering": rows, "layer_choice": layer_rows, "layer_order": order, "seconds": round(time.time() - t0, 1),
    }
    write_json_atomic(args.out, result)
    print(f"WikiText-2 perplexity ({args.windows} x {suite.window} tokens, report split)")
    print(f"{'subnet':<22}{'first-k':>12}{'ordered':>12}")
    for r in rows:
        print(f"{r['subnet']:<22}{r['first-k channels']:>12.2f}{r['importance-ordered']:>12.2f}")
    print(f"\n{'layers':<8}{'choice':<28}{'perplexity':>12}")
    for r in layer_rows:
        print(f"{r['layers']:<8}{r['choice']:<28}{r['perplexity']:>12.2f}")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
