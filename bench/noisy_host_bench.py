"""Latency figures on a busy host: which estimator holds when a CPU hog is added (issue 14).

The same subnets of the default model (the profile's choice of subnets plus held-out ones) are
measured in one interleaved session per condition, with the same number of rounds:
- ``quiet``: nothing of ours besides the measurement (the host may be shared with others: the
  load average before and after is recorded; there is no truly quiet baseline here);
- ``loaded``: a busy-loop process pinned to one core, started by this script and stopped in a
  finally block.
Sessions keep every round (nothing set aside) and time the reference kernel around each round,
so every estimator of hwnas.hardware.robust, and the reference kernel's set-aside rule, can be
computed afterwards from the *same* raw samples. Per estimator and condition it reports:
- how far TTFT and TPOT move when the hog is added (per subnet, loaded / quiet - 1);
- the latency model's leave-one-out MAPE on the profile's subnets, its MAPE on the held-out subnets
  (never fit on), and the measurements' own noise (median half-width of their 95% bootstrap CI);
- the speed-up of a mid-size "pick" over the full model as a paired ratio with its bootstrap CI,
  and how far it moves under the hog.

With ``--profile``, instead: `hwnas profile`'s own `run_profile` with the target's default settings
(every batch size, its rounds, set-aside rule and budget) under the hog, written to
``bench/results/noisy_host_profile.json`` (wall time, latency-model error and its noise split,
flagged figures, rounds set aside).

Usage: python bench/noisy_host_bench.py [--samples 12] [--holdout 4] [--rounds 8] [--batch-sizes 1]
       [--conditions quiet,loaded] [--json-out bench/results/noisy_host_bench.json]
       python bench/noisy_host_bench.py --profile [--samples 12] [--holdout 4]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hwnas.hardware import robust  # noqa: E402
from hwnas.hardware.host import detect_host  # noqa: E402
from hwnas.hardware.interference import baseline_of, classify_rounds, load_snapshot  # noqa: E402
from hwnas.hardware.irexport import export_ir_cached  # noqa: E402
from hwnas.hardware.latency_model import fit_latency_model, mape  # noqa: E402
from hwnas.hardware.measure import MeasureJob, measure_many  # noqa: E402
from hwnas.hardware.profile import choose_subnets  # noqa: E402
from hwnas.hardware.targets import load_target  # noqa: E402

log = logging.getLogger("noisy_host_bench")
HOG = "import os\ntry:\n    os.sched_setaffinity(0, {%d})\nexcept OSError:\n    pass\nwhile True:\n    pass\n"
TOL = 0.25  # the reference kernel's set-aside rule (hwnas default)


def start_hog(core: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOG % core])


def stop_hog(p: subprocess.Popen) -> None:
    p.terminate()
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


# ---------------------------------------------------------------------------- estimators on raw rounds
def estimate(rounds: dict, estimator: str, keep: list[int]) -> tuple[float, float, float, float]:
    """(ttft, tpot, ttft CI rel. half-width, tpot CI rel. half-width) from the kept rounds."""
    ttfts = [rounds["ttft"][i] for i in keep]
    steps = [rounds["steps"][i] for i in keep]
    t, p = robust.ttft_estimate(ttfts, estimator), robust.tpot_estimate(steps, estimator)
    return (t, p, robust.relative_halfwidth(robust.ttft_ci(ttfts, estimator, n_boot=400), t),
            robust.relative_halfwidth(robust.tpot_ci(steps, estimator, n_boot=400), p))


VARIANTS = [  # (label, robust estimator, use only rounds the reference kernel found clean)
    ("mean (openvino-genai)", "mean", False),
    ("median (hwnas before)", "median", False),
    ("median, clean rounds", "median", True),
    ("round_min", "round_min", False),
    ("round_min, clean rounds", "round_min", True),
    ("low_quantile (p10)", "low_quantile", False),
    ("min", "min", False),
]


def analyse(raw: dict, readings: dict, meta: dict, widths, batch: int, pick: str, full: str, host_best) -> dict:
    conds = list(raw)
    all_readings = [tuple(r) for c in conds for r in readings[c]]
    base = baseline_of(all_readings, host_best)
    clean = {c: [i for i, ok in enumerate(classify_rounds([tuple(r) for r in readings[c]], base, TOL)) if ok]
             for c in conds}
    out: dict = {"reference_baseline_ms": base, "clean_rounds": {c: len(clean[c]) for c in conds},
                 "rounds": {c: len(readings[c]) for c in conds}, "estimators": {}}
    train = [k for k in meta if meta[k]["kind"] == "subnet"]
    held = [k for k in meta if meta[k]["kind"] == "holdout"]
    for label, est, only_clean in VARIANTS:
        res: dict = {"estimator": est, "clean_rounds_only": only_clean}
        figs = {}
        for c in conds:
            n = len(readings[c])
            keep = clean[c] if only_clean and len(clean[c]) >= 2 else list(range(n))
            figs[c] = {k: estimate(raw[c][k], est, keep) for k in raw[c]}
            samples = [(meta[k]["widths"], {f"ttft_ms@{batch}": figs[c][k][0], f"tpot_ms@{batch}": figs[c][k][1]})
                       for k in train]
            lm = fit_latency_model(samples, widths, (batch,))
            pred = {k: lm.predict(meta[k]["widths"]) for k in held}
            rb, rf = raw[c][full], raw[c][pick]
            sp = robust.paired_ratio([rb["steps"][i] for i in keep], [rf["steps"][i] for i in keep], "tpot", est)
            spt = robust.paired_ratio([rb["ttft"][i] for i in keep], [rf["ttft"][i] for i in keep], "ttft", est)
            res[c] = {
                "rounds_used": len(keep),
                "loo_mape_pct": {"ttft": lm.error.get("ttft_ms_mape_pct"), "tpot": lm.error.get("tpot_ms_mape_pct")},
                "holdout_mape_pct": {"ttft": mape([figs[c][k][0] for k in held], [pred[k]["ttft_ms"] for k in held]),
                                     "tpot": mape([figs[c][k][1] for k in held], [pred[k]["tpot_ms"] for k in held])},
                "noise_ci_halfwidth_pct": {"ttft": 100 * float(np.median([figs[c][k][2] for k in figs[c]])),
                                           "tpot": 100 * float(np.median([figs[c][k][3] for k in figs[c]]))},
                "pick_tpot_speedup": sp, "pick_ttft_speedup": spt,
                "tpot_ms": {k: round(figs[c][k][1], 3) for k in figs[c]},
                "ttft_ms": {k: round(figs[c][k][0], 3) for k in figs[c]},
            }
        if "quiet" in figs and "loaded" in figs:
            keys = list(figs["quiet"])
            sh_t = [100 * (figs["loaded"][k][0] / figs["quiet"][k][0] - 1) for k in keys]
            sh_p = [100 * (figs["loaded"][k][1] / figs["quiet"][k][1] - 1) for k in keys]
            res["shift_under_hog_pct"] = {
                "ttft_median": float(np.median(sh_t)), "ttft_max_abs": float(np.max(np.abs(sh_t))),
                "tpot_median": float(np.median(sh_p)), "tpot_max_abs": float(np.max(np.abs(sh_p))),
                "pick_tpot_speedup": 100 * (res["loaded"]["pick_tpot_speedup"]["value"]
                                            / res["quiet"]["pick_tpot_speedup"]["value"] - 1),
                "pick_ttft_speedup": 100 * (res["loaded"]["pick_ttft_speedup"]["value"]
                                            / res["quiet"]["pick_ttft_speedup"]["value"] - 1),
            }
        out["estimators"][label] = res
    return out


def table(an: dict, conds: list[str]) -> str:
    head = ("| estimator | TPOT shift | TTFT shift | pick TPOT speed-up shift | " +
            " | ".join(f"{c}: LOO MAPE TPOT / TTFT | {c}: held-out MAPE TPOT / TTFT | {c}: noise TPOT / TTFT | "
                       f"{c}: pick speed-up [95% CI]" for c in conds) + " |")
    lines = [head, "|" + "---|" * (4 + 4 * len(conds))]
    for label, r in an["estimators"].items():
        sh = r.get("shift_under_hog_pct", {})
        cells = [label, f"{sh.get('tpot_median', float('nan')):+.1f}% (max {sh.get('tpot_max_abs', float('nan')):.1f})",
                 f"{sh.get('ttft_median', float('nan')):+.1f}% (max {sh.get('ttft_max_abs', float('nan')):.1f})",
                 f"{sh.get('pick_tpot_speedup', float('nan')):+.1f}%"]
        for c in conds:
            x = r[c]
            s = x["pick_tpot_speedup"]
            cells += [f"{x['loo_mape_pct']['tpot']:.1f}% / {x['loo_mape_pct']['ttft']:.1f}%",
                      f"{x['holdout_mape_pct']['tpot']:.1f}% / {x['holdout_mape_pct']['ttft']:.1f}%",
                      f"±{x['noise_ci_halfwidth_pct']['tpot']:.1f}% / ±{x['noise_ci_halfwidth_pct']['ttft']:.1f}%",
                      f"{s['value']:.3f}x [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def profile_under_hog(args) -> None:
    """`run_profile` with the target's defaults while a busy loop holds one core (warm IR cache)."""
    import tempfile

    from hwnas.hardware.profile import run_profile
    from hwnas.model.loading import load_model

    host = detect_host()
    target = load_target(args.target)
    loaded = load_model("default")
    out = Path(tempfile.mkdtemp(prefix="noisy-profile-")) / "prof"
    before = load_snapshot()
    hog = start_hog(args.hog_core)
    try:
        time.sleep(1.0)
        t = time.perf_counter()
        prof = run_profile(loaded, target, samples=args.samples, seed=args.seed, out_dir=out, host=host,
                           holdout=args.holdout)
        wall = time.perf_counter() - t
    finally:
        stop_hog(hog)
    after = load_snapshot()
    err = prof.latency_model.error
    keys = ("ttft_ms_mape_pct", "tpot_ms_mape_pct", "throughput_tok_s_mape_pct", "ttft_ms_model_error_pct",
            "tpot_ms_model_error_pct", "ttft_ms_measurement_noise_pct", "tpot_ms_measurement_noise_pct")
    res = {
        "args": vars(args), "host": host.to_dict(), "target": target.to_dict(), "wall_s": round(wall, 1),
        "timings_s": prof.timings_s, "loadavg_before": before["loadavg"], "loadavg_after": after["loadavg"],
        "hog_core": args.hog_core, "latency_model_error": {k: err.get(k) for k in keys},
        "noise_split": err.get("noise_split"), "holdout": err.get("holdout"),
        "session": prof.measurements[0].session if prof.measurements else {},
        "measurements": [{"key": m.subnet_key, "layers": len(m.mlp_widths), "ttft_ms": m.ttft_ms, "tpot_ms": m.tpot_ms,
                          "ttft_ci_ms": m.batches[0].ttft_ci_ms, "tpot_ci_ms": m.batches[0].tpot_ci_ms,
                          "stable": m.stable, "note": m.note} for m in prof.measurements + prof.holdout],
        "note": ("Host possibly shared with others' jobs (see the load averages before and after); our own busy "
                 "loop held core %d throughout." % args.hog_core),
    }
    path = ROOT / "bench" / "results" / "noisy_host_profile.json"
    path.write_text(json.dumps(res, indent=1, default=float))
    print(json.dumps({k: res[k] for k in ("wall_s", "timings_s", "loadavg_before", "loadavg_after", "latency_model_error")},
                     indent=1))
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="xeon")
    ap.add_argument("--samples", type=int, default=12)
    ap.add_argument("--holdout", type=int, default=4)
    ap.add_argument("--holdout-pool", type=int, default=4, help="held-out subnets drawn as a profile with --holdout N would")
    ap.add_argument("--profile-subnets", type=int, default=0,
                    help="use only N of the profile's subnets (full, smallest, the rest spread evenly); 0: all")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--batch-sizes", default="1")
    ap.add_argument("--new-tokens", type=int, default=0, help="override the target's tokens generated (0: keep)")
    ap.add_argument("--conditions", default="quiet,loaded")
    ap.add_argument("--hog-core", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", default=str(ROOT / "bench" / "results" / "noisy_host_bench.json"))
    ap.add_argument("--profile", action="store_true", help="run_profile with the target's defaults under the hog")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("hwnas.hardware.irexport", "hwnas.model.loading", "nncf", "optimum", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.profile:
        profile_under_hog(args)
        return
    from hwnas.hardware.interference import ReferenceKernel, host_best
    from hwnas.model.loading import load_model
    from hwnas.model.supernet import Supernet

    t_all = time.perf_counter()
    host = detect_host(measure_bandwidth=False)
    bs = tuple(int(b) for b in args.batch_sizes.split(","))
    t0 = load_target(args.target)
    # every round kept (the reference kernel is timed, nothing is set aside), a fixed number of rounds
    target = dataclasses.replace(
        t0, workload=dataclasses.replace(t0.workload, batch_sizes=bs, new_tokens=args.new_tokens or t0.workload.new_tokens),
        measure=dataclasses.replace(t0.measure, repeats=args.rounds, max_remeasure=0, interference_tol=1e9,
                                    max_rel_ci=0.0, max_cv=0.99, estimator="median"))
    loaded = load_model("default")
    sn = Supernet.from_loaded(loaded, order=False)
    space = sn.space
    model_id = loaded.source.sha256()[:12]
    subs = choose_subnets(space, args.samples, np.random.default_rng(args.seed))
    seen = {c.key for c in subs}
    held = [c for c in choose_subnets(space, args.holdout_pool + 4, np.random.default_rng(args.seed + 1000))[2:]
            if c.key not in seen][: args.holdout]
    if args.profile_subnets and args.profile_subnets < len(subs):  # full, smallest, then spread over the rest
        rest = subs[2:]
        pick_idx = np.linspace(0, len(rest) - 1, args.profile_subnets - 2).round().astype(int)
        subs = subs[:2] + [rest[i] for i in sorted(set(pick_idx.tolist()))]
    jobs, meta = [], {}
    for kind, cfg in [("subnet", c) for c in subs] + [("holdout", c) for c in held]:
        ir, _ = export_ir_cached(key=f"{model_id}-{cfg.key}", build=lambda cfg=cfg: sn.extract(cfg))
        jobs.append(MeasureJob(str(ir), cfg.key, cfg.to_dict(), cfg.mlp_widths, cfg.n_params(sn.config), kind))
        meta[cfg.key] = {"kind": kind, "widths": list(cfg.mlp_widths), "layers": len(cfg.layers),
                         "n_params": cfg.n_params(sn.config)}
    full = space.largest().key
    pick = min((c for c in subs[2:]), key=lambda c: abs(len(c.layers) - 20)).key
    props = target.resolved_properties(host)
    hb = host_best(host.fingerprint, ReferenceKernel(props).properties_key)
    res: dict = {"args": vars(args), "host": host.to_dict(), "target": target.to_dict(), "properties": props,
                 "subnets": meta, "full": full, "pick": pick, "sessions": {},
                 "note": ("'quiet' means 'without our hog', not idle: the host may be shared with others' jobs; "
                          "see the load averages per session.")}
    raw, readings = {}, {}
    for cond in args.conditions.split(","):
        hog = None
        before = load_snapshot()
        try:
            if cond.startswith("loaded"):
                hog = start_hog(args.hog_core)
                time.sleep(1.0)
            t = time.perf_counter()
            ms = measure_many(jobs, target, host=host, seed=args.seed)
            wall = time.perf_counter() - t
        finally:
            if hog is not None:
                stop_hog(hog)
        after = load_snapshot()
        b0 = ms[0].batches[0]
        raw[cond] = {m.subnet_key: {"ttft": list(m.batches[0].ttft_samples_ms), "steps": [list(s) for s in m.batches[0].step_ms]}
                     for m in ms}
        readings[cond] = ms[0].session.get("reference", {}).get("readings_ms", [])
        res["sessions"][cond] = {"wall_s": round(wall, 1), "hog_core": args.hog_core if hog else None,
                                 "loadavg_before": before["loadavg"], "loadavg_after": after["loadavg"],
                                 "session": {k: v for k, v in ms[0].session.items() if k != "reference"},
                                 "reference": {k: v for k, v in ms[0].session.get("reference", {}).items()},
                                 "rounds": b0.repeats}
        print(f"{cond}: {len(jobs)} models x {b0.repeats} rounds in {wall:.0f} s; load {before['loadavg']} -> {after['loadavg']}",
              flush=True)
        partial = Path(args.json_out).with_suffix(".partial.json")  # survives an interrupted run
        partial.write_text(json.dumps({**res, "raw": raw, "readings": readings}, default=float))
    res["raw"] = raw
    res["readings"] = readings
    an = analyse(raw, readings, meta, space.widths, bs[0], pick, full, hb)
    res["analysis"] = an
    res["total_s"] = round(time.perf_counter() - t_all, 1)
    out = Path(args.json_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=float))
    md = table(an, list(raw))
    out.with_suffix(".md").write_text(
        f"# noisy_host_bench ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n{res['note']}\n\n"
        f"{len(subs)} profile subnets + {len(held)} held-out, {args.rounds} rounds per session, batch {bs[0]}, "
        f"pick {pick} vs full {full}. Sessions: " +
        "; ".join(f"{c}: {s['wall_s']} s, load {s['loadavg_before']} -> {s['loadavg_after']}" for c, s in res["sessions"].items())
        + f"\n\nReference-kernel clean rounds (tol {TOL}): {an['clean_rounds']} of {an['rounds']}.\n\n{md}\n")
    print(md)
    Path(args.json_out).with_suffix(".partial.json").unlink(missing_ok=True)
    print(f"wrote {out} ({res['total_s']} s)")


if __name__ == "__main__":
    main()
