"""Benchmark of hwnas's hardware profiling on the default model, in one run.

Prints (and writes as JSON with --json-out):
1. Full model, batch 1, the target's workload: PyTorch fp32 eager vs OpenVINO f32 vs OpenVINO at the
   target's precision -- TTFT and TPOT medians and their ratios -- plus openvino-genai's own
   PerfMetrics on the same IR as a check of the TTFT/TPOT definitions.
2. `run_profile` with default settings (timed; --cold exports every IR afresh into a temporary
   cache) and its leave-one-out MAPE; then the latency model's MAPE on held-out subnets never seen
   by the fit: the profile's subnets and the held-out ones re-measured in one interleaved session,
   the model refit on the former and scored on the latter (no load drift between sessions), next
   to the per-width form and a parameter-count baseline; and the profile's own model scored on
   those held-out measurements (a profile reused later).
3. Kendall's tau between parameter count and measured TPOT.
4. benchmark_app sanity check: the prefill of the full model on a stateless, fixed-shape IR, timed by
   hwnas (`time_static_ir`) and by OpenVINO's benchmark_app with the same properties.

Usage: .venv/bin/python bench/profile_bench.py [--target xeon] [--samples 12] [--holdout 6] [--cold]
The machine may be shared: all figures are medians; compare ratios measured in the same run.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hwnas.deploy.benchmark import measure_torch
from hwnas.hardware.host import detect_host
from hwnas.hardware.irexport import export_ir, export_ir_cached, export_tokenizer
from hwnas.hardware.latency_model import fit_latency_model, mape, measurement_metrics
from hwnas.hardware.measure import MeasureJob, measure_ir, measure_many, time_static_ir
from hwnas.hardware.profile import choose_subnets, run_profile
from hwnas.hardware.targets import load_target
from hwnas.model.loading import load_model

log = logging.getLogger("profile_bench")


def genai_metrics(ir_dir, tokenizer, props, prompt_tokens, new_tokens, repeats, seed=0):
    """openvino-genai LLMPipeline on the same IR: its own TTFT / TPOT (PerfMetrics), median over generations."""
    import openvino as ov
    import openvino_genai as og

    folder = Path(tempfile.mkdtemp(prefix="genai-"))
    try:
        for f in ("openvino_model.xml", "openvino_model.bin", "config.json", "generation_config.json"):
            if (Path(ir_dir) / f).exists():
                shutil.copy(Path(ir_dir) / f, folder / f)
        export_tokenizer(tokenizer, folder)
        pipe = og.LLMPipeline(str(folder), "CPU", ATTENTION_BACKEND="SDPA",
                              **{k: (("YES" if v else "NO") if isinstance(v, bool) else str(v)) for k, v in props.items()})
        cfg = og.GenerationConfig()
        cfg.max_new_tokens = new_tokens
        cfg.min_new_tokens = new_tokens
        cfg.ignore_eos = True
        rng = np.random.default_rng(seed)
        ids = rng.integers(100, 40000, (1, prompt_tokens)).astype(np.int64)
        inputs = og.TokenizedInputs(ov.Tensor(ids), ov.Tensor(np.ones_like(ids)))
        ttft, tpot = [], []
        for r in range(repeats + 1):
            res = pipe.generate(inputs, cfg)
            pm = res.perf_metrics
            if r:
                ttft.append(pm.get_ttft().mean)
                tpot.append(pm.get_tpot().mean)
        return {"ttft_ms": statistics.median(ttft), "tpot_ms": statistics.median(tpot)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def benchmark_app_check(model, props, prompt_tokens, work, niter=30):
    """Prefill of the full model on a stateless fixed-shape IR: hwnas timer vs benchmark_app."""
    import openvino as ov

    static_dir = export_ir(model, work / "stateless", stateful=False)
    core = ov.Core()
    m = core.read_model(str(static_dir / "openvino_model.xml"))
    m.reshape({i.get_any_name(): [1, prompt_tokens] for i in m.inputs})
    fixed = work / "stateless" / "fixed.xml"
    ov.save_model(m, str(fixed))
    ov_props = {k: (("YES" if v else "NO") if isinstance(v, bool) else str(v)) for k, v in props.items()
                if k not in ("KV_CACHE_PRECISION", "KEY_CACHE_GROUP_SIZE", "VALUE_CACHE_GROUP_SIZE")}
    cfg = work / "bench_config.json"
    cfg.write_text(json.dumps({"CPU": ov_props}))
    exe = shutil.which("benchmark_app", path=str(ROOT / ".venv" / "bin")) or shutil.which("benchmark_app")
    # Alternate the two timers so that a busy phase of the machine hits both.
    hw, ba = [], []
    names = [i.get_any_name() for i in m.inputs]
    feeds = {"input_ids": np.random.default_rng(0).integers(0, 255, (1, prompt_tokens)).astype(np.int64),
             "attention_mask": np.ones((1, prompt_tokens), np.int64),
             "position_ids": np.arange(prompt_tokens, dtype=np.int64)[None]}
    feeds = {k: v for k, v in feeds.items() if k in names}
    for _ in range(3):
        hw.append(statistics.median(time_static_ir(fixed, props, feeds, warmup=3, repeats=niter)))
        out = subprocess.run([exe, "-m", str(fixed), "-d", "CPU", "-api", "sync", "-niter", str(niter),
                              "-load_config", str(cfg)], capture_output=True, text=True, timeout=600)
        mt = re.search(r"Median:\s+([\d.]+)\s*(ms|us)", out.stdout)
        if not mt:
            raise RuntimeError(f"benchmark_app output has no median latency:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
        ba.append(float(mt.group(1)) / (1000.0 if mt.group(2) == "us" else 1.0))
    hw_med, ba_med = statistics.median(hw), statistics.median(ba)
    return {"hwnas_median_ms": hw_med, "benchmark_app_median_ms": ba_med,
            "relative_difference_pct": 100.0 * (hw_med - ba_med) / ba_med,
            "hwnas_rounds_ms": hw, "benchmark_app_rounds_ms": ba, "properties": ov_props, "niter": niter}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="xeon")
    ap.add_argument("--samples", type=int, default=12)
    ap.add_argument("--holdout", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cold", action="store_true", help="export every IR afresh (temporary IR cache)")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("hwnas.hardware.measure", "hwnas.hardware.irexport", "hwnas.model.loading", "nncf", "optimum", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    t_all = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="hwnas-bench-"))
    ir_cache = work / "ir-cache" if args.cold else None
    res: dict = {"args": vars(args)}
    host = detect_host()
    res["host"] = host.to_dict()
    target = load_target(args.target)
    props = target.resolved_properties(host)
    wl = target.workload
    print(f"host: {host.describe()}  [{host.fingerprint}]")
    print(f"target {target.name}: {props}; prompt {wl.prompt_tokens}, new {wl.new_tokens}, batches {list(wl.batch_sizes)}")

    loaded = load_model("default")
    tokenizer = loaded.tokenizer

    # ---- 2. profile (first, so that --cold times a cold `hwnas profile`)
    t0 = time.perf_counter()
    prof = run_profile(loaded, target, samples=args.samples, seed=args.seed, out_dir=work / "profile",
                       host=host, cache_dir=ir_cache)
    res["profile_wall_s"] = time.perf_counter() - t0
    res["profile_timings_s"] = prof.timings_s
    res["loo_mape_pct"] = {k: prof.latency_model.error[k] for k in ("ttft_ms_mape_pct", "tpot_ms_mape_pct",
                                                                    "throughput_tok_s_mape_pct")}
    res["ranking"] = prof.ranking
    print(f"\nprofile: {res['profile_wall_s']:.0f} s wall ({prof.timings_s}); LOO MAPE {res['loo_mape_pct']}")
    print(f"Kendall tau params vs TPOT (profile subnets): {prof.ranking.get('kendall_tau_params_vs_tpot_ms')}")

    # ---- held-out subnets. Two views:
    # (a) same session: the profile's subnets and the held-out ones re-measured together (interleaved),
    #     the latency model refit on the profile's subnets only, then scored on the held-out ones, so
    #     load drift between sessions cannot bias the score;
    # (b) transfer: the profile's own model predicting the held-out measurements of (a), i.e. a
    #     profile used later on the same host (includes any drift; the full model's ratio shows it).
    from hwnas.model.supernet import Supernet

    sn = Supernet(loaded.model, space=None)  # run_profile wrapped the model already; same default space
    space = sn.space
    seen = {m.subnet_key for m in prof.measurements}
    rng = np.random.default_rng(args.seed + 1000)
    held = [c for c in choose_subnets(space, args.holdout + 4, rng)[2:] if c.key not in seen][: args.holdout]
    train_cfgs = [m.subnet for m in prof.measurements]
    from hwnas.model.space import SubnetConfig

    jobs = []
    model_id = prof.model["model_id"]
    for kind, cfg in [("subnet", SubnetConfig.from_dict(d)) for d in train_cfgs] + [("holdout", c) for c in held]:
        ir, _ = export_ir_cached(key=f"{model_id}-{cfg.key}", build=lambda: sn.extract(cfg), cache_dir=ir_cache)
        jobs.append(MeasureJob(str(ir), cfg.key, cfg.to_dict(), cfg.mlp_widths, cfg.n_params(sn.config), kind))
    ms = measure_many(jobs, target, host=host, seed=args.seed)
    train_ms = [m for m in ms if m.kind == "subnet"]
    held_ms = [m for m in ms if m.kind == "holdout"]
    subs = [(m.mlp_widths, measurement_metrics(m)) for m in train_ms]
    lm_same = fit_latency_model(subs, space.widths, wl.batch_sizes)

    def score(lm, label):
        pred = [lm.predict(m.mlp_widths) for m in held_ms]
        return {
            "model": label,
            "ttft_ms_mape_pct": mape([m.ttft_ms for m in held_ms], [p["ttft_ms"] for p in pred]),
            "tpot_ms_mape_pct": mape([m.tpot_ms for m in held_ms], [p["tpot_ms"] for p in pred]),
            "throughput_tok_s_mape_pct": mape([m.throughput_tok_s for m in held_ms], [p["throughput_tok_s"] for p in pred]),
            "pred_tpot_ms": [p["tpot_ms"] for p in pred],
        }

    ho = {"n": len(held_ms), "same_session": score(lm_same, "linear, refit in the same session"),
          "transfer": score(prof.latency_model, "the profile's model (earlier session)"),
          "full_model_tpot_now_vs_profile": train_ms[0].tpot_ms / prof.measurements[0].tpot_ms,
          "same_session_loo": {k: lm_same.error[k] for k in ("ttft_ms_mape_pct", "tpot_ms_mape_pct", "throughput_tok_s_mape_pct")},
          "subnets": [{"key": m.subnet_key, "layers": len(m.mlp_widths), "n_params": m.n_params,
                       "ttft_ms": m.ttft_ms, "tpot_ms": m.tpot_ms} for m in held_ms]}
    try:
        pw = fit_latency_model(subs, space.widths, wl.batch_sizes, form="per_width")
        ho["same_session_per_width_form"] = score(pw, "per_width, same session")
    except Exception as e:  # noqa: BLE001 - report, do not fail the bench
        ho["per_width_form_error"] = str(e)
    x = np.array([m.n_params for m in train_ms], float)
    y = np.array([m.tpot_ms for m in train_ms])
    a, b = np.polyfit(x, y, 1)
    ho["params_baseline_tpot_mape_pct"] = mape([m.tpot_ms for m in held_ms], [a * m.n_params + b for m in held_ms])
    from scipy.stats import kendalltau

    all_ms = train_ms + held_ms
    ho["kendall_tau_params_vs_tpot_same_session"] = float(kendalltau([m.n_params for m in all_ms], [m.tpot_ms for m in all_ms])[0])
    res["holdout"] = ho
    ss, tr = ho["same_session"], ho["transfer"]
    print(f"held-out ({ho['n']} subnets, same session): MAPE TTFT {ss['ttft_ms_mape_pct']:.1f}%, TPOT {ss['tpot_ms_mape_pct']:.1f}%, "
          f"throughput {ss['throughput_tok_s_mape_pct']:.1f}%; per-width form TPOT "
          f"{ho.get('same_session_per_width_form', {}).get('tpot_ms_mape_pct', float('nan')):.1f}%; parameter-count "
          f"baseline TPOT {ho['params_baseline_tpot_mape_pct']:.1f}%")
    print(f"held-out, the profile's model from the earlier session: TTFT {tr['ttft_ms_mape_pct']:.1f}%, TPOT "
          f"{tr['tpot_ms_mape_pct']:.1f}% (full-model TPOT now / then = {ho['full_model_tpot_now_vs_profile']:.3f})")
    print(f"Kendall tau params vs TPOT over {len(all_ms)} subnets: {ho['kendall_tau_params_vs_tpot_same_session']:.3f}")
    full = space.largest()
    jobs = [j for j in jobs if j.subnet_key == full.key]

    # ---- 1. full model: PyTorch eager vs OpenVINO f32 vs target precision (+ genai check)
    full_ir = Path(jobs[0].ir)
    f32_target = dataclasses.replace(target, openvino={**target.openvino, "INFERENCE_PRECISION_HINT": "f32"})
    ov_f32 = measure_ir(full_ir, f32_target, host=host, subnet_key="full-f32")
    ov_tgt = measure_ir(full_ir, target, host=host, subnet_key="full-target")
    sn.reset()
    full_model = sn.extract(full)
    import torch

    torch.set_num_threads(int(props["INFERENCE_NUM_THREADS"]))
    row = measure_torch(full_model, target)  # the same timing loop `hwnas bench` uses
    pt = {"ttft_ms": row.ttft_ms, "tpot_ms": row.tpot_ms, "tpot_samples_ms": row.extra["tpot_samples_ms"]}
    try:
        ga = genai_metrics(full_ir, tokenizer, props, wl.prompt_tokens, wl.new_tokens, target.measure.repeats)
    except Exception as e:  # noqa: BLE001
        ga = {"error": f"{type(e).__name__}: {e}"}
    prec = props.get("INFERENCE_PRECISION_HINT")
    res["full_model"] = {
        "pytorch_fp32_eager": pt,
        "openvino_f32": {"ttft_ms": ov_f32.ttft_ms, "tpot_ms": ov_f32.tpot_ms},
        f"openvino_{prec}": {"ttft_ms": ov_tgt.ttft_ms, "tpot_ms": ov_tgt.tpot_ms, "throughput_tok_s": ov_tgt.throughput_tok_s},
        "openvino_genai_perfmetrics": ga,
        "ratios": {
            "tpot_pytorch_over_ov_f32": pt["tpot_ms"] / ov_f32.tpot_ms,
            f"tpot_pytorch_over_ov_{prec}": pt["tpot_ms"] / ov_tgt.tpot_ms,
            f"tpot_ov_f32_over_ov_{prec}": ov_f32.tpot_ms / ov_tgt.tpot_ms,
            "ttft_pytorch_over_ov_f32": pt["ttft_ms"] / ov_f32.ttft_ms,
            f"ttft_pytorch_over_ov_{prec}": pt["ttft_ms"] / ov_tgt.ttft_ms,
            f"ttft_ov_f32_over_ov_{prec}": ov_f32.ttft_ms / ov_tgt.ttft_ms,
        },
    }
    fm = res["full_model"]
    print(f"\nfull model, batch 1, prompt {wl.prompt_tokens}, {wl.new_tokens} new tokens:")
    print(f"  PyTorch fp32 eager : TTFT {pt['ttft_ms']:8.2f} ms  TPOT {pt['tpot_ms']:7.2f} ms")
    print(f"  OpenVINO f32       : TTFT {ov_f32.ttft_ms:8.2f} ms  TPOT {ov_f32.tpot_ms:7.2f} ms")
    print(f"  OpenVINO {prec:<10}: TTFT {ov_tgt.ttft_ms:8.2f} ms  TPOT {ov_tgt.tpot_ms:7.2f} ms")
    if "ttft_ms" in ga:
        print(f"  genai PerfMetrics  : TTFT {ga['ttft_ms']:8.2f} ms  TPOT {ga['tpot_ms']:7.2f} ms  (same IR, {prec})")
    print("  ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in fm["ratios"].items()))

    # ---- 4. benchmark_app sanity check
    res["benchmark_app"] = benchmark_app_check(full_model, props, wl.prompt_tokens, work)
    ba = res["benchmark_app"]
    print(f"\nprefill of the full model, stateless IR [1, {wl.prompt_tokens}]: hwnas median {ba['hwnas_median_ms']:.2f} ms, "
          f"benchmark_app median {ba['benchmark_app_median_ms']:.2f} ms ({ba['relative_difference_pct']:+.1f}%)")
    res["bench_wall_s"] = time.perf_counter() - t_all
    print(f"\nbench took {res['bench_wall_s']:.0f} s")
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(res, indent=2, default=str))
        print(f"wrote {args.json_out}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
