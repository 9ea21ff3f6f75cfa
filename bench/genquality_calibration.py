"""Calibrate the generation check's thresholds (hwnas.accuracy.genquality.DEFAULT_THRESHOLDS).

Scores, against the full default model's greedy generations on calibration/genquality/prompts.jsonl
(20 prompts x 32 new tokens), candidates that must pass and candidates known to be broken:
- OpenVINO int8 bundles (INC RTN int8, the export default, generation check off while building):
  the full model (must pass) and 15 x 384 without recovery (must fail), optionally more (--bundles;
  a name ending in "+rec" is exported with training-free recovery, as `hwnas export` ships it);
- torch (fp32, supernet slices, no recovery): subnets with layers in the supernet's ranked order:
  15 x 384, 24 x 1536, 27 x 1536, 30 x 1152, 30 x 768 (`--torch full` adds the sanity check).
Resumable: candidates already in --out (same prompts) are kept and not scored again.

Writes bench/results/genquality_calibration.json (aggregates, per-prompt scores, the first
generations decoded, seconds per check) after every candidate, and a markdown table next to it.
Seconds are indicative only (2 cores; the load average before and after is recorded). Each bundle
is exported from a freshly loaded model (a subnet's in-place quantization touches tensors shared
with the full model) and every NLL is computed by a separate, never-exported copy of the full model.

    PYTHONPATH=. python bench/genquality_calibration.py [--bundles full,15x384] [--out bench/results/genquality_calibration.json]
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

SUBNETS = {"15x384": (15, 384), "24x1536": (24, 1536), "27x1536": (27, 1536), "30x1152": (30, 1152),
           "30x768": (30, 768)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--torch", default=",".join(SUBNETS), help="torch candidates (comma list)")
    ap.add_argument("--bundles", default="full,15x384,27x1536", help="int8 bundle candidates (comma list; NAME+rec: recovered)")
    ap.add_argument("--out", default="bench/results/genquality_calibration.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from hwnas.accuracy import genquality as gq
    from hwnas.deploy.manifest import EXACT_PROPERTIES
    from hwnas.io import write_json_atomic, write_text_atomic
    from hwnas.model.space import SubnetConfig
    from hwnas.model.supernet import load_supernet

    import os

    load_before = [round(x, 2) for x in os.getloadavg()]
    t0 = time.perf_counter()
    loaded, sn = load_supernet("default")  # never exported from: the reference and every NLL use it
    tok = loaded.tokenizer
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    key = f"{loaded.source.content_sha256()}|{next(loaded.model.parameters()).dtype}"
    ref = gq.reference_generations(loaded.model, tok, cache_key=key)
    t_ref = time.perf_counter() - t0
    order = sn.space.layer_order

    def cfg_of(name: str) -> SubnetConfig | None:
        name = name.removesuffix("+rec")
        if name == "full":
            return None
        k, w = SUBNETS[name]
        return SubnetConfig(tuple(sorted(order[:k])), (w,) * k)

    out = Path(args.out)
    results: dict = {
        "what": "generation check calibration: candidates scored against the full default model's greedy tokens",
        "host_note": f"2 cores, load average {load_before} at the start; seconds are indicative only",
        "prompts": len(ref.prompts), "prompts_sha256": ref.prompts_sha256, "max_new_tokens": ref.max_new_tokens,
        "ngram": gq.NGRAM, "thresholds_in_code": gq.DEFAULT_THRESHOLDS.to_dict(),
        "reference": {"seconds": round(t_ref, 1), "load_seconds": round(t_load, 1),
                      "texts": {p.id: tok.decode(list(t)) for p, t in zip(ref.prompts, ref.tokens)},
                      "mean_nll": sum(ref.nll) / len(ref.nll)},
        "candidates": [],
    }
    if out.is_file():  # resume: keep candidates already scored against the same prompts
        old = json.loads(out.read_text())
        if old.get("prompts_sha256") == results["prompts_sha256"]:
            results["candidates"] = old.get("candidates", [])
    done = {(c["kind"], c["name"]) for c in results["candidates"]}

    def record(name: str, kind: str, cfg, rep, toks, seconds: float) -> None:
        results["candidates"].append({
            "name": name, "kind": kind, "subnet": None if cfg is None else dict(cfg.to_dict(), key=cfg.key),
            "aggregate": rep.aggregate, "passes_code_thresholds": rep.passed, "reasons": list(rep.reasons),
            "seconds": round(seconds, 1), "per_prompt": [p.to_dict() for p in rep.prompts],
            "texts": {p.id: tok.decode(list(t)) for p, t in list(zip(ref.prompts, toks))[:6]},
        })
        write_json_atomic(out, results)
        a = rep.aggregate
        print(f"{kind:6s} {name:8s} prefix {a['prefix']:.3f} forced {a['forced']:.3f} repeat+ {a['repeat_excess']:.3f} "
              f"nll+ {a['nll_excess']:+.3f} ({seconds:.0f} s)", flush=True)

    def todo(names: str, kind: str) -> list[str]:
        return [n for n in names.split(",") if n and (kind, n) not in done]

    from hwnas.deploy.export import export_bundle
    from hwnas.deploy.gencheck import BundleCandidate
    from hwnas.deploy.quantize import make_recipe

    tmp = Path(tempfile.mkdtemp(prefix="genq-bench-"))
    try:
        for name in todo(args.bundles, "int8"):
            cfg = cfg_of(name)
            fresh, fresh_sn = load_supernet("default")  # its tensors may be quantized in place by the export
            t0 = time.perf_counter()
            res = export_bundle(fresh, tmp / name.replace("+", "_"), recipe=make_recipe("int8"), subnet=cfg,
                                measure=False, generation_check=False, recovery=name.endswith("+rec"))
            del fresh, fresh_sn
            t_export = time.perf_counter() - t0
            t0 = time.perf_counter()
            rep, toks = gq.check_candidate(BundleCandidate(res.path, EXACT_PROPERTIES, ref.eos_ids), ref,
                                           full_model=loaded.model)
            record(name, "int8", cfg or sn.full_config(), rep, toks, time.perf_counter() - t0)
            results["candidates"][-1]["export_seconds"] = round(t_export, 1)
            results["candidates"][-1]["recovery"] = name.endswith("+rec")
            write_json_atomic(out, results)
            shutil.rmtree(res.path, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    for name in todo(args.torch, "torch"):
        cfg = cfg_of(name)
        t0 = time.perf_counter()
        with sn.subnet(cfg) as m:
            cand = gq.TorchCandidate(m, ref.eos_ids)
            toks = [cand.generate(ids, ref.max_new_tokens) for ids in ref.prompt_ids]
            forced = [cand.next_tokens(ids, r) for ids, r in zip(ref.prompt_ids, ref.tokens)]
        scorer = gq.TorchCandidate(loaded.model, ref.eos_ids)  # full model again (slice reset)
        nll = [scorer.nll(ids, c) for ids, c in zip(ref.prompt_ids, toks)]
        rep = gq.score_generations([p.id for p in ref.prompts], [p.kind for p in ref.prompts], toks, ref.tokens,
                                   forced, nll=nll, ref_nll=ref.nll)
        record(name, "torch", cfg, rep, toks, time.perf_counter() - t0)

    results["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    by = {(c["kind"], c["name"]): c for c in results["candidates"]}
    must = {("int8", "full"): True, ("int8", "15x384"): False}
    results["requirements"] = {f"{k[1]} ({k[0]}) must {'pass' if want else 'fail'}":
                               (None if k not in by else by[k]["passes_code_thresholds"] == want) for k, want in must.items()}
    write_json_atomic(out, results)
    lines = ["# Generation check calibration (`bench/genquality_calibration.py`)", "",
             f"{results['prompts']} prompts x {results['max_new_tokens']} new tokens, greedy; reference: the full default "
             f"model (torch fp32). {results['host_note']}.", "",
             "| candidate | kind | prefix | forced | repeat excess | NLL excess (nats/token) | check | s |",
             "|---|---|---|---|---|---|---|---|"]
    for c in results["candidates"]:
        a = c["aggregate"]
        lines.append(f"| {c['name']} | {c['kind']} | {a['prefix']:.3f} | {a['forced']:.3f} | {a['repeat_excess']:.3f} | "
                     f"{a['nll_excess']:+.3f} | {'pass' if c['passes_code_thresholds'] else 'FAIL'} | {c['seconds']:.0f} |")
    lines += ["", f"Thresholds in code: {results['thresholds_in_code']}", "",
              *[f"- {k}: {'met' if v else ('not scored' if v is None else 'NOT met')}" for k, v in results["requirements"].items()]]
    write_text_atomic(out.with_suffix(".md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
