"""What a u8 KV cache does to a bundle's multiple-choice accuracy, when the choices read the context back
from the cache as generation reads a prompt.

Scored with one fresh prefill per choice, whose attention uses the fresh keys and values, the cache's
precision never acts (the frontier bench's "+ KV u8" row has the accuracy and choice KL of the row
without it; `hwnas export`'s holdout scored this way until it moved to the context in the cache). This bench scores one bundle on the same items
three ways, all with the bundle's own runtime settings but the KV-cache precision:

1. KV cache f16, context in the cache;
2. KV cache u8, context in the cache;
3. KV cache u8, one prefill per choice (what export's holdout did before);

and gives the paired difference of 2 and 3 from 1 (points ± stderr, items) and their choice KL to 1.

    flock /tmp/hwnas-heavy.lock .venv/bin/python bench/kv_cache_effect.py BUNDLE \\
        [--tasks arc_easy,piqa] [--split holdout] [--limit 300] [--out bench/results/kv_cache_effect.json]
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
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--tasks", default="arc_easy,piqa")
    ap.add_argument("--split", default="holdout")
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--out", type=Path, default=Path("bench/results/kv_cache_effect.json"))
    a = ap.parse_args()

    from transformers import AutoTokenizer

    from hwnas.accuracy.evaluate import TaskSuite
    from hwnas.accuracy.paired import compare_items
    from hwnas.deploy.ir_accuracy import ir_accuracy
    from hwnas.model.space import SubnetConfig
    from hwnas.io import write_json_atomic, write_text_atomic

    man = json.loads((a.bundle / "hwnas_manifest.json").read_text())
    props = {k: ("YES" if v is True else "NO" if v is False else str(v))
             for k, v in ((man.get("runtime") or {}).get("properties") or {}).items()}
    tok = AutoTokenizer.from_pretrained(a.bundle)
    suite = TaskSuite(tok, a.tasks.split(","), split=a.split, limit=a.limit, seed=0)
    ways = {"f16_cache": ("f16", True), "u8_cache": ("u8", True), "u8_per_choice": ("u8", False)}
    items, seconds = {}, {}
    for name, (kv, in_cache) in ways.items():
        t0 = time.perf_counter()
        items[name] = ir_accuracy(a.bundle, tok, suite=suite, properties={**props, "KV_CACHE_PRECISION": kv},
                                  keep_items=True, context_in_cache=in_cache)["_items"]
        seconds[name] = round(time.perf_counter() - t0, 1)
    rows = {}
    for name in ("u8_cache", "u8_per_choice"):
        cmp = compare_items(items[name], items["f16_cache"], "acc_norm", chance_tasks=[])
        rows[name] = {"vs_f16_cache": cmp["overall"], "choice_kl": cmp["choice_kl"],
                      "tasks": {n: {k: t[k] for k in ("points", "stderr", "items", "choice_kl")}
                                for n, t in cmp["tasks"].items()}}
    out = {"command": "python bench/kv_cache_effect.py " + " ".join(sys.argv[1:]),
           "bundle": str(a.bundle), "subnet": SubnetConfig.from_dict(man["subnet"]).key if man.get("subnet") else None,
           "properties": props, "tasks": a.tasks.split(","), "split": a.split, "limit": a.limit,
           "items": suite.n_items, "rows": rows, "seconds": seconds, "loadavg": list(os.getloadavg())}
    write_json_atomic(a.out, out)
    md = [f"# KV cache precision and multiple-choice accuracy ({a.out.stem})", "",
          f"Command: `{out['command']}`. Bundle subnet `{out['subnet']}`, its runtime settings but the KV cache "
          f"precision; {suite.n_items} {a.split}-split items ({', '.join(out['tasks'])}), acc_norm, paired with "
          "the same bundle scored with an f16 KV cache and the context in the cache.", "",
          "| scored as | Δ acc_norm vs f16 cache (pts) | items | choice KL to f16 cache | seconds |", "|---|---|---|---|---|"]
    for name, label in (("u8_cache", "u8 KV cache, context read back from the cache"),
                        ("u8_per_choice", "u8 KV cache, one prefill per choice (export's holdout)")):
        p = rows[name]["vs_f16_cache"]
        md.append(f"| {label} | {p['points']:+.2f} ± {p['stderr']:.2f} | {p['items']} | {rows[name]['choice_kl']:.5f} "
                  f"| {seconds[name]} |")
    write_text_atomic(a.out.with_suffix(".md"), "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
