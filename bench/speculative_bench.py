"""Speculative bundles vs the full int8 bundle vs the best plain subnet bundle, in one run: decode tokens/s,
draft acceptance, the expected-speed model's prediction, and whether the output stayed token-identical.

    PYTHONPATH=. python bench/speculative_bench.py --full FULL --subnet SUBNET --spec SPEC [SPEC ...] \
        --out bench/results/speculative_bench.json

Speed: openvino_genai.LLMPipeline with each bundle's target properties, greedy, `--tokens` new tokens
(EOS ignored), decode ms/token = (wall(tokens) - wall(1 token)) / (tokens - 1), median over interleaved
repeats. Each speculative bundle is run at k = 1..4 draft tokens per step (its manifest's k is marked).
Acceptance: per-position agreement of the draft's greedy token with the full model's on the full model's
own greedy continuation (f32 numerics), turned into tokens per verification step; prediction =
tokens_per_step / (k * draft TPOT + measured full-model pass over k+1 tokens). Identity: speculative
tokens == full-model tokens, with f32 numerics (the lossless claim) and with the target's (bf16) ones.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PROMPTS = ["The three primary colours are", "Once upon a time, in a small village,", "Water boils at",
           "The best way to learn a language is"]
EXACT = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}


def _props(bundle: str) -> dict:
    from hwnas.deploy.serving.server import prepare

    p = prepare(bundle, verify=False).properties
    return {k: ("YES" if v is True else "NO" if v is False else str(v)) for k, v in p.items()}


def _pipe(bundle: str, props: dict, draft: str | None = None):
    import openvino_genai as og

    kw = {"draft_model": og.draft_model(draft, "CPU", **props)} if draft else {}
    return og.LLMPipeline(bundle, "CPU", **props, **kw)


def _gen(pipe, ids, n: int, k: int = 0) -> tuple[list[int], float]:
    import numpy as np
    import openvino as ov
    import openvino_genai as og

    cfg = og.GenerationConfig()
    cfg.max_new_tokens = n
    cfg.min_new_tokens = n
    cfg.do_sample = False
    cfg.ignore_eos = True
    cfg.apply_chat_template = False
    if k:
        cfg.num_assistant_tokens = k
    inp = og.TokenizedInputs(ov.Tensor(np.asarray([ids], dtype=np.int64)), ov.Tensor(np.ones((1, len(ids)), dtype=np.int64)))
    t0 = time.perf_counter()
    res = pipe.generate(inp, cfg)
    return [int(t) for t in res.tokens[0]], time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", required=True)
    ap.add_argument("--subnet", required=True, help="The best plain subnet bundle (e.g. the demo pick).")
    ap.add_argument("--spec", nargs="+", required=True)
    ap.add_argument("--tokens", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ks", default="1,2,3,4")
    ap.add_argument("--out", default=str(ROOT / "bench/results/speculative_bench.json"))
    a = ap.parse_args()
    import openvino_genai as og

    from hwnas.deploy.speculative import (
        DRAFT_DIR,
        agreement,
        expected_speed,
        read_spec,
        tokens_per_step,
        verify_cost_ms,
    )

    ks = [int(k) for k in a.ks.split(",")]
    props = _props(a.full)
    tok = og.Tokenizer(a.full)
    prompts_ids = [[int(i) for i in tok.encode(p, add_special_tokens=False).input_ids.data[0]] for p in PROMPTS]

    # configurations: (label, bundle, draft folder or None, k)
    configs = [("full int8", a.full, None, 0), ("plain subnet int8", a.subnet, None, 0)]
    specs = {}
    for sb in a.spec:
        spec = read_spec(sb)
        specs[sb] = spec
        name = Path(sb).name
        configs.append((f"{name}: draft alone", str(Path(sb) / DRAFT_DIR), None, 0))
        for k in ks:
            configs.append((f"{name}: speculative k={k}" + (" (manifest)" if k == spec["num_assistant_tokens"] else ""),
                            sb, str(Path(sb) / DRAFT_DIR), k))
    pipes = {}
    for label, b, d, k in configs:
        key = (b, d)
        if key not in pipes:
            pipes[key] = _pipe(b, props, d)
    print(f"{len(pipes)} pipelines loaded, properties {props}", flush=True)

    # speed: interleaved repeats
    walls = {c[0]: {"n": [], "one": []} for c in configs}
    ref_tokens = {}
    spec_tokens = {}
    for r in range(a.repeats + 1):
        for label, b, d, k in configs:
            pipe = pipes[(b, d)]
            ids = prompts_ids[r % len(prompts_ids)]
            toks, wn = _gen(pipe, ids, a.tokens, k)
            _, w1 = _gen(pipe, ids, 1, k)
            if r:  # the first round is a warm-up
                walls[label]["n"].append(wn)
                walls[label]["one"].append(w1)
            if label == "full int8":
                ref_tokens[r % len(prompts_ids)] = toks
            elif d is not None:
                spec_tokens.setdefault(label, {})[r % len(prompts_ids)] = toks
    rows = []
    for label, b, d, k in configs:
        per = [(wn - w1) / (a.tokens - 1) for wn, w1 in zip(walls[label]["n"], walls[label]["one"])]
        ms = 1000 * statistics.median(per)
        rows.append({"config": label, "bundle": b, "k": k, "decode_ms_per_token": ms, "decode_tok_s": 1000 / ms,
                     "samples_ms": [1000 * x for x in per]})
    base = rows[0]["decode_tok_s"]
    for row in rows:
        row["vs_full"] = row["decode_tok_s"] / base
        label = row["config"]
        if label in spec_tokens:
            same = [spec_tokens[label][i] == ref_tokens[i] for i in spec_tokens[label]]
            row["identical_target_numerics"] = f"{sum(same)}/{len(same)}"
    print("speed done", flush=True)

    # acceptance, prediction, and identity under f32 numerics
    verify_ms = verify_cost_ms(a.full, ks, props)
    analysis = {}
    for sb, spec in specs.items():
        name = Path(sb).name
        draft = str(Path(sb) / DRAFT_DIR)
        agree = agreement(a.full, draft, prompts_ids, a.tokens, EXACT)
        rate = sum(map(sum, agree)) / sum(map(len, agree))
        draft_ms = next(r["decode_ms_per_token"] for r in rows if r["config"] == f"{name}: draft alone")
        preds = [expected_speed(agree, k, draft_ms, verify_ms[k]) for k in ks]
        full_exact = _pipe(a.full, EXACT)
        spec_exact = _pipe(sb, EXACT, draft)
        ident = [_gen(spec_exact, ids, a.tokens, spec["num_assistant_tokens"])[0] == _gen(full_exact, ids, a.tokens)[0]
                 for ids in prompts_ids]
        del full_exact, spec_exact
        analysis[name] = {"draft": spec["draft"], "draft_rule": spec.get("draft_rule"), "acceptance_rate": rate,
                          "tokens_per_step": {k: tokens_per_step(agree, k) for k in ks},
                          "predicted": preds, "identical_f32": f"{sum(ident)}/{len(ident)}"}
        for p in preds:
            for row in rows:
                if row["config"].startswith(f"{name}: speculative k={p['k']}"):
                    row["predicted_tok_s"] = p["tokens_per_s"]
        print(f"{name}: acceptance {rate:.2f}, identical (f32) {sum(ident)}/{len(ident)}", flush=True)

    out = {"rows": rows, "analysis": analysis, "verify_ms_of_k": verify_ms, "properties": props, "tokens": a.tokens,
           "repeats": a.repeats, "prompts": PROMPTS,
           "host": {"cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
                    "loadavg_end": [round(x, 2) for x in os.getloadavg()],
                    "note": "the host may be shared (see the load average): compare within this run only"},
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    md = ["| configuration | decode tok/s | vs full int8 | predicted tok/s | greedy tokens identical to full (target numerics) |",
          "|---|---|---|---|---|"]
    for r in rows:
        pred = f"{r['predicted_tok_s']:.1f}" if "predicted_tok_s" in r else "-"
        md.append(f"| {r['config']} | {r['decode_tok_s']:.1f} | {r['vs_full']:.2f}x | {pred} | {r.get('identical_target_numerics', '-')} |")
    md.append("")
    for name, an in analysis.items():
        md.append(f"- {name}: draft {an['draft']['key']} ({len(an['draft']['layers'])} layers; {an['draft_rule']}), "
                  f"acceptance {100 * an['acceptance_rate']:.0f}% per token, tokens per step "
                  + ", ".join(f"k={k}: {v:.2f}" for k, v in an["tokens_per_step"].items())
                  + f"; greedy output identical to the full model with f32 numerics: {an['identical_f32']} prompts")
    md.append("- full-model pass over k+1 tokens (ms): " + ", ".join(f"k={k}: {v:.1f}" for k, v in verify_ms.items()))
    md.append(f"\n{out['host']['note']}; {a.tokens} new tokens, median of {a.repeats} interleaved repeats.")
    Path(a.out).with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
