"""Layer choice: block influence (the default ranked order) vs greedy removal by measured damage.

Greedy: drop, one at a time, the layer whose removal raises the full-width subnet's KL to the
full model least (`hwnas.accuracy.fidelity.greedy_layer_order`), on WINDOWS x WINDOW calibration
tokens (calibration/, seed 1). Compared on WikiText-2 perplexity (report split, 8 windows of 512)
as a ratio to the full model, for 27, 24 and 21 kept layers at full width, without recovery.

Usage: python bench/layer_order_bench.py [--window 128 --windows 4 --min-layers 20]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--min-layers", type=int, default=20)
    ap.add_argument("--out", default="bench/results/layer_order_bench.json")
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import numpy as np
    import torch

    from hwnas.accuracy.evaluate import TaskSuite
    from hwnas.accuracy.fidelity import TokenFidelity, greedy_layer_order
    from hwnas.io import write_json_atomic
    from hwnas.model.calibration import load_texts
    from hwnas.model.space import SubnetConfig
    from hwnas.model.supernet import load_supernet

    torch.set_num_threads(2)
    loaded, sn = load_supernet("default")
    tok = loaded.tokenizer
    ids: list[int] = []
    for t in load_texts(seed=1):
        ids += tok(t, add_special_tokens=False, verbose=False)["input_ids"]
    wins = np.array(ids[: args.window * args.windows]).reshape(args.windows, args.window)
    t0 = time.perf_counter()
    order, kls = greedy_layer_order(sn, TokenFidelity(wins, topk=32), min_layers=args.min_layers)
    greedy_s = time.perf_counter() - t0
    suite = TaskSuite(tok, "wikitext2", split="report", limit=8)
    full = suite.evaluate(sn, precision="fp32")["tasks"]["wikitext2"]["perplexity"]
    rows = {}
    for k in (27, 24, 21):
        for name, o in (("block influence", list(sn.space.layer_order)), ("greedy KL", order)):
            cfg = SubnetConfig(tuple(sorted(o[:k])), (sn.full_width,) * k)
            p = suite.evaluate(sn, subnet=cfg, precision="fp32")["tasks"]["wikitext2"]["perplexity"]
            rows.setdefault(str(k), {})[name] = round(p / full, 3)
            print(k, name, rows[str(k)][name], flush=True)
    write_json_atomic(args.out, {"schema_version": 1, "calibration_tokens": int(wins.size), "greedy_seconds": round(greedy_s, 1),
                                 "greedy_order": order, "greedy_kl": kls, "block_influence_order": list(sn.space.layer_order),
                                 "perplexity_ratio": rows, "note": "shared 2-core host; seconds indicative"})


if __name__ == "__main__":
    main()
