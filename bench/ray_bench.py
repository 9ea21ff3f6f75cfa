"""The same search locally and on a local two-node Ray cluster: wall time, Ray's overhead per evaluation,
and a short model of how the time scales with N accuracy actors and M target nodes.

Runs `hwnas search` (the CLI, in a subprocess each) on the default model three times, each with a cold IR
cache (a bench cache folder whose ir/ is emptied before each run; the converted model and supernet are
linked from ~/.cache/hwnas so they are not redone):

1. local: one process, as without --ray;
2. ray N=1: a cluster of two nodes on this machine (ray.cluster_utils): a head with 1 CPU that runs one
   accuracy actor, a node with 1 CPU advertising ``hwnas-target-xeon`` that times the IRs;
3. ray N=2: the head with 2 CPUs and two accuracy actors (--ray-actors 2), same target node.

Every search: --evaluations P --population P (one iteration: all P subnets are submitted at once),
few items per task, no select split, no re-measurement of the front, so the iteration's wall time
is the makespan of P evaluations. Per-task costs come from the cluster run's records (``cluster_s``:
accuracy-actor seconds, latency-task seconds per candidate). The model is a two-stage flow shop::

    T(N, M) = s1 + s2 + (P - 1) * max(s1 / N, s2 / M) + o * P

s1 = mean accuracy-actor time per candidate (scoring with recovery, then the IR export; ``cluster_s``), s2 = mean latency-task
time (IR into the node's cache + timing), o = Ray's overhead per evaluation, estimated from the N=1
run as (measured makespan - T without o) / P. Checked against the measured N=2 run. Also measured
directly: the round trip of an empty actor call and of an empty task on the target resource, and
moving one full-model IR through the object store.

Usage: flock /tmp/hwnas-heavy.lock .venv/bin/python bench/ray_bench.py [--evaluations 4] [--limit 8]
Results: bench/results/ray_bench.json and .md. ``--tiny`` runs the same on a tiny random LLaMA (the tests'
model, a generated 3-choice task and a small target; bench/results/ray_bench_tiny.*): Ray's fixed costs
without the model's. The host has 2 cores and was shared with other jobs:
read ratios within this run, not absolute times.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MB = 1024 ** 2


def bench_cache(root: Path) -> Path:
    """A cache folder whose models/ and supernets/ link to the real cache (converted once), ir/ private."""
    real = Path(os.environ.get("HWNAS_REAL_CACHE", Path.home() / ".cache" / "hwnas"))
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("models", "supernets", "host", "full-model-items"):
        link = root / sub
        if (real / sub).is_dir() and not link.exists():
            link.symlink_to(real / sub)
    return root


def run_cli(args: list[str], env: dict[str, str], cache: Path) -> dict:
    shutil.rmtree(cache / "ir", ignore_errors=True)          # cold IR cache for every run
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "hwnas", *args], env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"hwnas {' '.join(args)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    out = Path(args[args.index("--out") + 1])
    recs = [json.loads(x) for x in (out / "candidates.jsonl").read_text().splitlines() if x.strip()]
    hist = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines() if x.strip()]
    return {"wall_s": round(wall, 2), "makespan_s": round(sum(h["seconds"]["total"] for h in hist), 2),
            "iterations": len(hist), "records": recs, "setup_s": round(wall - sum(h["seconds"]["total"] for h in hist), 2)}


def costs(recs: list[dict]) -> dict:
    s1 = [r["cluster_s"]["accuracy_actor"] for r in recs]
    s2 = [r["cluster_s"]["latency_task"] for r in recs]
    return {"s1_accuracy_actor_s": round(statistics.mean(s1), 3), "s2_latency_task_s": round(statistics.mean(s2), 3),
            "eval_s": round(statistics.mean(r["eval_s"] for r in recs), 3),
            "export_s": round(statistics.mean(r["export_s"] for r in recs), 3),
            "measure_s": round(statistics.mean(r["measure_s"] for r in recs), 3)}


def flow_shop(s1: float, s2: float, p: int, n: int, m: int, o: float = 0.0) -> float:
    return s1 + s2 + (p - 1) * max(s1 / n, s2 / m) + o * p


def micro(address: str, target: str, ir_bytes: int) -> dict:
    """Round trips of empty Ray calls, and one IR-sized payload through the object store to the target node."""
    import ray

    ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    try:
        @ray.remote(num_cpus=1)
        class Empty:
            def call(self):
                return 0

        @ray.remote(num_cpus=0)
        def empty_task(x=None):
            return 0 if x is None else len(x)

        a = Empty.remote()
        ray.get(a.call.remote())
        res = {f"hwnas-target-{target}": 1}
        actor_rt, task_rt = [], []
        for _ in range(20):
            t = time.perf_counter(); ray.get(a.call.remote()); actor_rt.append(time.perf_counter() - t)
            t = time.perf_counter(); ray.get(empty_task.options(resources=res).remote()); task_rt.append(time.perf_counter() - t)
        blob = os.urandom(ir_bytes)
        ship = []
        for _ in range(3):
            t = time.perf_counter()
            ref = ray.put(blob)
            ray.get(empty_task.options(resources=res).remote(ref))
            ship.append(time.perf_counter() - t)
            del ref
        return {"actor_call_roundtrip_ms": round(1000 * statistics.median(actor_rt), 2),
                "target_task_roundtrip_ms": round(1000 * statistics.median(task_rt), 2),
                "ir_bytes": ir_bytes, "ir_through_object_store_s": round(statistics.median(ship), 3)}
    finally:
        ray.shutdown()


def tiny_inputs(work: Path) -> tuple[list[str], str, str]:
    """The tests' tiny random LLaMA, a generated 3-choice task and a small target (fast workload)."""
    from tests.conftest import TINY_TARGET, make_tiny_llama, make_tiny_tokenizer

    d = work / "tiny-llama"
    if not (d / "config.json").is_file():
        make_tiny_llama().save_pretrained(d)
        make_tiny_tokenizer().save_pretrained(d)
    task = work / "tinyqa.jsonl"
    task.write_text("".join(json.dumps({"id": str(i), "question": f"what is {i} plus one?",
                                        "choices": [str(i + 1), str(i + 7), "blue"], "answer": 0}) + "\n"
                            for i in range(40)))
    target = work / "tiny.toml"
    target.write_text(TINY_TARGET)
    return ["--model", str(d), "--data-dir", str(work)], str(task), str(target)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--evaluations", type=int, default=4)
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--tasks", default="arc_easy,piqa")
    ap.add_argument("--target", default="xeon")
    ap.add_argument("--work", default="/tmp/hwnas-ray-bench")
    ap.add_argument("--out", default=None)
    ap.add_argument("--tiny", action="store_true", help="a tiny random LLaMA instead of the default model")
    ap.add_argument("--shared-note", default="unknown: read the load average",
                    help="what else ran on the host during the bench (recorded as given)")
    ap.add_argument("--no-warmup", action="store_true",
                    help="skip the discarded warm-up run (the default model's caches are already warm)")
    a = ap.parse_args()
    a.out = a.out or str(ROOT / "bench" / "results" / ("ray_bench_tiny" if a.tiny else "ray_bench"))
    from ray.cluster_utils import Cluster

    work = Path(a.work)
    shutil.rmtree(work / "runs", ignore_errors=True)
    cache = bench_cache(work / "cache")
    env = {**os.environ, "HWNAS_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    os.environ["HWNAS_CACHE_DIR"] = str(cache)   # the clusters' nodes inherit it too
    p = a.evaluations
    model = ["--model", "default"]
    if a.tiny:
        model, a.tasks, a.target = tiny_inputs(work)
    base = ["search", "--target", a.target, "--tasks", a.tasks, "--limit", str(a.limit), "--report-limit", "0",
            "--evaluations", str(p), "--population", str(p), "--seed", "0", "--no-progress", *model]
    load = [os.getloadavg()[0]]
    runs = {}
    # warm-up (discarded): the converted model, channel order and the full model's per-item scores are cached
    # after it, so no measured run pays them and the first run measured has no advantage or handicap
    warmup = {"wall_s": None}
    if not a.no_warmup:
        print("warm-up ...", flush=True)
        warm = [x if x != str(p) else "2" for x in base]
        warmup = run_cli(warm + ["--out", str(work / "runs" / "warmup")], env, cache)
    print("local run ...", flush=True)
    runs["local"] = run_cli(base + ["--out", str(work / "runs" / "local")], env, cache)
    load.append(os.getloadavg()[0])
    for n in (1, 2):
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": n, "object_store_memory": 1500 * MB,
                                                          "include_dashboard": False})
        c.add_node(num_cpus=1, resources={f"hwnas-target-{Path(a.target).stem}": 1}, object_store_memory=1500 * MB)
        c.wait_for_nodes()
        try:
            print(f"ray run N={n} ...", flush=True)
            runs[f"ray_n{n}"] = run_cli(base + ["--out", str(work / "runs" / f"ray{n}"), "--ray", c.address,
                                                "--ray-actors", str(n)], env, cache)
            load.append(os.getloadavg()[0])
            if n == 1:
                ir_bytes = max(r["weight_bytes"] for r in runs["ray_n1"]["records"])
                runs["micro"] = micro(c.address, Path(a.target).stem, ir_bytes)
        finally:
            c.shutdown()
    # same subnets everywhere (one iteration from the same seed); latency differs only by measurement
    keys = {k: sorted(r["key"] for r in v["records"]) for k, v in runs.items() if k != "micro"}
    c1 = costs(runs["ray_n1"]["records"])
    s1, s2 = c1["s1_accuracy_actor_s"], c1["s2_latency_task_s"]
    o_raw = (runs["ray_n1"]["makespan_s"] - flow_shop(s1, s2, p, 1, 1)) / p
    o = max(0.0, o_raw)
    model = {f"N{n}_M{m}": round(flow_shop(s1, s2, p, n, m, o), 1) for n in (1, 2, 4, 8) for m in (1, 2, 4)}
    check = {f"N{n}": {"predicted_s": round(flow_shop(s1, s2, p, n, 1, o), 1), "measured_s": runs[f"ray_n{n}"]["makespan_s"]}
             for n in (1, 2)}
    for n in (1, 2):
        ch = check[f"N{n}"]
        ch["error_pct"] = round(100 * (ch["predicted_s"] - ch["measured_s"]) / ch["measured_s"], 1)
    local_per_eval = runs["local"]["makespan_s"] / p
    result = {
        "command": ".venv/bin/python bench/ray_bench.py " + " ".join(sys.argv[1:]),
        "heavy_lock_held": bool(os.environ.get("HWNAS_BENCH_LOCKED")),
        "model": "tiny random LLaMA (4 layers, hidden 64)" if a.tiny else "default", "target": Path(a.target).stem, "tasks": a.tasks, "limit_items_per_task": a.limit, "evaluations": p,
        "host": {"cpus": os.cpu_count(), "shared": a.shared_note,
                 "loadavg_1min_before_and_after_each_run": [round(x, 2) for x in load]},
        "same_subnets_in_every_run": len({tuple(v) for v in keys.values()}) == 1, "subnets": keys,
        "runs": {k: {kk: vv for kk, vv in v.items() if kk != "records"} for k, v in runs.items() if k != "micro"},
        "per_task_costs_n1": c1, "per_task_costs_n2": costs(runs["ray_n2"]["records"]),
        "local_seconds_per_evaluation": round(local_per_eval, 2),
        "ray_overhead_per_evaluation_s": round(o, 2), "ray_overhead_per_evaluation_raw_s": round(o_raw, 2),
        "warmup_wall_s": warmup["wall_s"], "micro": runs["micro"],
        "scaling_model": {"formula": "T(N,M) = s1 + s2 + (P-1)*max(s1/N, s2/M) + o*P", "s1": s1, "s2": s2, "o": round(o, 3),
                          "P": p, "predicted_makespan_s": model, "check": check},
        "per_candidate": {k: [{f: r.get(f) for f in ("key", "eval_s", "export_s", "measure_s", "tpot_ms", "cluster_s",
                                                     "scored_on", "measured_on", "host_fingerprint")}
                              for r in v["records"]] for k, v in runs.items() if k != "micro"},
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def markdown(r: dict) -> str:
    runs, m = r["runs"], r["scaling_model"]
    lines = [f"# Ray bench: the same search locally and on a 2-node local cluster ({r['evaluations']} evaluations, "
             f"{r['model']} model, {Path(r['tasks']).stem if '/' in r['tasks'] else r['tasks']} x {r['limit_items_per_task']} items, target {r['target']})", "",
             f"Command: `{r['command']}`. Host: {r['host']['cpus']} cores, shared ({r['host']['shared']}); load "
             f"average {r['host']['loadavg_1min_before_and_after_each_run']}. Same subnets in every run: "
             f"{r['same_subnets_in_every_run']}. One run each"
             + (", after a discarded warm-up run (caches of the model, channel order and the full model's item scores "
                "filled)" if r.get("warmup_wall_s") else " (the model's caches were warm)")
             + "; every run starts with an empty IR cache. "
             "Wall includes the re-measurement of the front.", "",
             "| run | wall s (CLI) | setup s (load, connect, actors) | search makespan s |", "|---|---|---|---|"]
    for k, v in runs.items():
        lines.append(f"| {k} | {v['wall_s']} | {v['setup_s']} | {v['makespan_s']} |")
    c = r["per_task_costs_n1"]
    lines += ["", f"Per candidate (N=1): accuracy actor {c['s1_accuracy_actor_s']} s (scoring {c['eval_s']} s, IR export "
              f"{c['export_s']} s), latency task {c['s2_latency_task_s']} s (timing {c['measure_s']} s); local: "
              f"{r['local_seconds_per_evaluation']} s per evaluation.",
              f"Ray's overhead per evaluation (N=1 makespan minus the flow-shop time of its measured tasks, per "
              f"evaluation, floored at 0): {r['ray_overhead_per_evaluation_s']} s (raw "
              f"{r['ray_overhead_per_evaluation_raw_s']} s). Directly: empty actor call "
              f"{r['micro']['actor_call_roundtrip_ms']} ms, empty task on the target resource "
              f"{r['micro']['target_task_roundtrip_ms']} ms, one {r['micro']['ir_bytes'] / MB:.0f} MB IR through the "
              f"object store {r['micro']['ir_through_object_store_s']} s.", "",
              f"Model: `{m['formula']}` with s1 = {m['s1']} s, s2 = {m['s2']} s, o = {m['o']} s, P = {m['P']}.", "",
              "| check | predicted s | measured s | error % |", "|---|---|---|---|"]
    for k, v in m["check"].items():
        lines.append(f"| {k}, M1 | {v['predicted_s']} | {v['measured_s']} | {v['error_pct']} |")
    lines += ["", "Predicted makespan of the same P evaluations (s):", "",
              "| N \\ M | 1 | 2 | 4 |", "|---|---|---|---|"]
    for n in (1, 2, 4, 8):
        lines.append(f"| {n} | " + " | ".join(str(m["predicted_makespan_s"][f"N{n}_M{mm}"]) for mm in (1, 2, 4)) + " |")
    lines += ["", "N=2 shares the same 2 cores as N=1 (and the target node): on one machine a second actor adds "
              "contention, not capacity; the model assumes each actor and target node has its own machine."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
