"""Search efficiency: LINAS vs NSGA-II (real evaluations only) vs random, at the same budget.

Hypervolume (accuracy vs TPOT, fixed reference from the full model and the smallest subnet) as a
function of the number of real evaluations, over several seeds, on a **cached table of real
measurements**: every subnet in the table was validated once for real (accuracy on the tasks'
search split through the supernet; TPOT measured with OpenVINO on this machine, or, with
--profile, predicted by a profile's latency model fit on such measurements, which keeps the
latency axis consistent when the machine is too busy for stable timings). A search run on
the table may only validate table members: a proposal outside it is replaced by the nearest
(L1 over `SearchSpace.features`) unvalidated member, and random search draws members uniformly;
the same rule applies to all three strategies (`run_search(..., pool=...)`).

    # build (or grow) a table: N random subnets + the full model + the smallest, validated for real
    python bench/search_efficiency.py --table runs/table --build 40 [--limit 20] [--target xeon]
    # add the validated subnets of earlier `hwnas search` runs made with the same settings
    python bench/search_efficiency.py --table runs/table --add /tmp/mainjob
    # compare strategies on the table
    python bench/search_efficiency.py --table runs/table --seeds 5 --evaluations 16 --population 4 --out runs/eff
    # or on the synthetic objective (a surrogate: additive latency, importance-weighted accuracy; no model)
    python bench/search_efficiency.py --synthetic --seeds 5 --evaluations 24 --population 6 --out runs/eff-syn

Prints a table (median and spread of hypervolume per strategy at each evaluation count) and the
ratio LINAS / other at each budget; writes efficiency.json and efficiency.png into --out.

The committed results (bench/results/search_efficiency_*.json/png) were made with:

    python bench/search_efficiency.py --table runs/search-table-l50 --build 46 --limit 50 \
        --profile runs/search-table-l50/profile.json --add /tmp/mainjob-l50 --no-compare
    python bench/search_efficiency.py --table bench/results/search_table --seeds 10 --evaluations 24 --population 8
    python bench/search_efficiency.py --table bench/results/search_table --seeds 10 --evaluations 16 --population 4
    python bench/search_efficiency.py --synthetic --seeds 5 --evaluations 24 --population 8

The table (bench/results/search_table: 48 subnets = full model, smallest, 46 random; accuracy on
50 search-split items per task of arc_easy, arc_challenge, mmlu, piqa; TPOT from the latency model
of a profile made on this host) is committed, so the comparison reruns in about a minute.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hwnas.io import append_jsonl, read_jsonl, write_json_atomic  # noqa: E402
from hwnas.model.space import SearchSpace, SubnetConfig
from hwnas.search.config import STRATEGIES, SearchConfig
from hwnas.search.loop import run_search
from hwnas.search.pareto import HypervolumeReference
from hwnas.search.synthetic import SyntheticValidator

log = logging.getLogger("search_efficiency")
OBJECTIVES = ("accuracy", "tpot_ms")
MEASURED_FIELDS = ("accuracy", "tasks", "tpot_ms", "ttft_ms", "throughput_tok_s", "n_params", "weight_bytes",
                   "latency_source")


# ---------------------------------------------------------------------------- the table
def load_table(folder: Path) -> tuple[SearchSpace, dict, dict[str, dict]]:
    cfg = json.loads((folder / "config.json").read_text())
    space = SearchSpace.from_dict(cfg["space"])
    recs = {r["key"]: r for r in read_jsonl(folder / "candidates.jsonl")}
    return space, cfg, recs


def build_table(folder: Path, n: int, args) -> None:
    """Validate the full model, the smallest subnet and `n` random subnets for real (resumable)."""
    from hwnas.cli.search_cmd import build_validation, prepare_search

    setup = prepare_search(args.target, args.model, args.tasks, "acc_norm", args.limit, args.profile, args.data_dir)
    identity = setup["identity"]
    space, validator, _, run_info = build_validation(setup, None, 0, args.seed, lambda m: log.info("%s", m))
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "config.json").exists():
        old = json.loads((folder / "config.json").read_text())
        if old["identity"] != identity or old["space"] != space.to_dict():
            raise SystemExit(f"{folder} holds a table made with other settings: {old['identity']}")
    else:
        write_json_atomic(folder / "config.json", {**run_info, "identity": identity, "space": space.to_dict()})
    have = {r["key"] for r in read_jsonl(folder / "candidates.jsonl")}
    rng = np.random.default_rng(args.seed)
    todo = [space.largest(), space.smallest()]
    while len({c.key for c in todo}) < n + 2:
        todo.append(space.sample(rng))
    todo = list({c.key: c for c in todo}.values())
    for i, cfg in enumerate(todo):
        if cfg.key in have:
            continue
        t0 = time.perf_counter()
        rec = {"key": cfg.key, "subnet": cfg.to_dict(), "description": cfg.describe(), **validator(cfg)}
        rec["validate_s"] = round(time.perf_counter() - t0, 2)
        append_jsonl(folder / "candidates.jsonl", rec)
        have.add(cfg.key)
        print(f"[{i + 1}/{len(todo)}] {cfg.key} {cfg.describe()}: acc {rec['accuracy']:.3f} "
              f"TPOT {rec['tpot_ms']:.2f} ms ({rec['validate_s']:.0f} s)", flush=True)


def add_runs(folder: Path, runs: list[Path], iterations: set[int] | None = None) -> None:
    """Merge validated subnets of `hwnas search` folders made with the table's accuracy settings
    (model, tasks, limit, metric, target). Only `iterations` (e.g. {0}: the random initial population,
    so the table stays an unbiased sample) are taken. When the table's latency comes from a profile,
    the added subnets' latency is re-predicted by it (the measured figures are kept as measured_*)."""
    cfg = json.loads((folder / "config.json").read_text())
    keys = ("model_sha256", "tasks", "limit", "metric", "target")
    lm = None
    if cfg.get("profile"):
        from hwnas.hardware.profile import load_profile

        lm = load_profile(cfg["profile"]).latency_model
    have = {r["key"] for r in read_jsonl(folder / "candidates.jsonl")}
    for run in runs:
        rc = json.loads((run / "config.json").read_text())
        same = all(rc["identity"].get(k) == cfg["identity"].get(k) for k in keys) and rc["space"] == cfg["space"]
        if not same:
            raise SystemExit(f"{run} was searched with other settings than the table ({rc['identity']})")
        added = 0
        for r in read_jsonl(run / "candidates.jsonl"):
            if r["key"] in have or (iterations is not None and r.get("iteration") not in iterations):
                continue
            rec = {"key": r["key"], "subnet": r["subnet"], "description": r.get("description"),
                   **{k: r[k] for k in MEASURED_FIELDS if k in r}, "from": str(run)}
            if lm is not None:
                rec.update({f"measured_{k}": r.get(k) for k in ("tpot_ms", "ttft_ms", "throughput_tok_s")})
                rec.update({k: round(float(v), 4) for k, v in lm.predict(SubnetConfig.from_dict(r["subnet"])).items()})
                rec["latency_source"] = cfg["identity"]["latency_source"]
            append_jsonl(folder / "candidates.jsonl", rec)
            have.add(r["key"])
            added += 1
        print(f"added {added} subnets from {run}")


class TableValidator:
    """Looks measured values up instead of measuring; counts lookups (= real evaluations)."""

    def __init__(self, table: dict[str, dict]):
        self.table = table
        self.calls = 0

    def __call__(self, cfg: SubnetConfig) -> dict:
        self.calls += 1
        r = self.table[cfg.key]
        return {k: r[k] for k in MEASURED_FIELDS if k in r}


# ---------------------------------------------------------------------------- the comparison
def hv_curve(records: list[dict], ref: HypervolumeReference, points: list[int]) -> list[float]:
    recs = sorted(records, key=lambda r: r["index"])
    return [ref.hypervolume(recs[:k]) for k in points]


def compare(space: SearchSpace, make_validator, pool, args) -> dict:
    points = list(range(args.population, args.evaluations + 1, args.population))
    if points[-1] != args.evaluations:
        points.append(args.evaluations)
    ref_v = make_validator()
    ext = [dict(ref_v(space.largest()), key="full"), dict(ref_v(space.smallest()), key="small")]
    ref = HypervolumeReference.from_extremes(OBJECTIVES, ext)
    curves: dict[str, list[list[float]]] = {s: [] for s in args.strategies}
    seconds: dict[str, list[float]] = {s: [] for s in args.strategies}
    for seed in range(args.seeds):
        for strat in args.strategies:
            v = make_validator()
            cfg = SearchConfig(objectives=OBJECTIVES, strategy=strat, evaluations=args.evaluations,
                               population=args.population, seed=seed)
            t0 = time.perf_counter()
            res = run_search(space, v, cfg, pool=pool, hv_reference=ref)
            dt = time.perf_counter() - t0
            assert len(res.records) == args.evaluations, (strat, seed, len(res.records))
            curves[strat].append(hv_curve(res.records, ref, points))
            seconds[strat].append(dt)
            print(f"seed {seed} {strat:6s}: HV {curves[strat][-1][-1]:.4f} after {args.evaluations} evaluations "
                  f"({dt:.1f} s)", flush=True)
    optimum = ref.hypervolume(list(pool_records(pool, make_validator))) if pool is not None else None
    return {"points": points, "curves": curves, "seconds": seconds, "reference": ref.to_dict(),
            "optimum_hv": optimum}


def pool_records(pool, make_validator):
    v = make_validator()
    for c in pool:
        yield dict(v(c), key=c.key)


def summarise(result: dict, strategies: list[str]) -> tuple[str, dict]:
    pts = result["points"]
    med = {s: np.median(np.array(result["curves"][s]), axis=0) for s in strategies}
    q1 = {s: np.percentile(np.array(result["curves"][s]), 25, axis=0) for s in strategies}
    q3 = {s: np.percentile(np.array(result["curves"][s]), 75, axis=0) for s in strategies}
    lines = ["| evaluations | " + " | ".join(f"{s} HV (median [IQR])" for s in strategies)
             + "".join(f" | linas/{s}" for s in strategies if s != "linas") + " |",
             "|---" * (1 + len(strategies) + sum(s != "linas" for s in strategies)) + "|"]
    ratios: dict[str, list[float]] = {s: [] for s in strategies if s != "linas"}
    for i, k in enumerate(pts):
        cells = [f"{med[s][i]:.4f} [{q1[s][i]:.4f}-{q3[s][i]:.4f}]" for s in strategies]
        for s in ratios:
            r = med["linas"][i] / med[s][i] if med[s][i] > 0 else float("nan")
            ratios[s].append(r)
            cells.append(f"{r:.3f}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    if result.get("optimum_hv"):
        lines.append("")
        lines.append(f"hypervolume of the whole table (every member validated): {result['optimum_hv']:.4f}")
    wins = {s: int(sum(a[-1] >= b[-1] - 1e-12 for a, b in zip(result["curves"]["linas"], result["curves"][s])))
            for s in ratios}
    lines.append("")
    lines.append("seeds where LINAS's final hypervolume >= the other's: "
                 + ", ".join(f"vs {s}: {w}/{len(result['curves']['linas'])}" for s, w in wins.items()))
    med_s = {s: float(np.median(result["seconds"][s])) for s in strategies}
    lines.append("search overhead per run (median s, lookups excluded): "
                 + ", ".join(f"{s} {v:.1f}" for s, v in med_s.items()))
    return "\n".join(lines), {"ratios": ratios, "wins": wins, "median_hv": {s: med[s].tolist() for s in strategies}}


def plot(result: dict, strategies: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = result["points"]
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=110)
    for s, c in zip(strategies, ("#1f77b4", "#ff7f0e", "#7f7f7f")):
        arr = np.array(result["curves"][s])
        ax.plot(pts, np.median(arr, axis=0), marker="o", c=c, label=s)
        ax.fill_between(pts, np.percentile(arr, 25, axis=0), np.percentile(arr, 75, axis=0), color=c, alpha=0.15)
    if result.get("optimum_hv"):
        ax.axhline(result["optimum_hv"], ls="--", c="k", lw=0.8, label="whole table")
    ax.set_xlabel("real evaluations")
    ax.set_ylabel("hypervolume (accuracy vs TPOT, normalised)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", type=Path, help="table folder (config.json + candidates.jsonl)")
    ap.add_argument("--build", type=int, default=0, help="validate this many random subnets into --table first")
    ap.add_argument("--add", type=Path, nargs="*", default=[], help="hwnas search folders to merge into --table")
    ap.add_argument("--add-iterations", default="0",
                    help="which iterations of --add runs to take (comma-separated; 'all'); 0 = random initial population")
    ap.add_argument("--profile", default=None,
                    help="with --build: latency from this profile's latency model (consistent on a busy machine)")
    ap.add_argument("--synthetic", action="store_true", help="use the synthetic objective instead of a table")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--evaluations", type=int, default=16)
    ap.add_argument("--population", type=int, default=4)
    ap.add_argument("--strategies", default="linas,nsga2,random")
    ap.add_argument("--out", type=Path, default=Path("runs/search-efficiency"))
    ap.add_argument("--target", default="xeon")
    ap.add_argument("--model", default="default")
    ap.add_argument("--tasks", default="arc_easy,arc_challenge,mmlu,piqa")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-compare", action="store_true", help="only build/add")
    args = ap.parse_args()
    args.strategies = [s.strip() for s in args.strategies.split(",")]
    assert args.strategies[0] == "linas" and all(s in STRATEGIES for s in args.strategies)
    logging.basicConfig(level=logging.WARNING)
    if args.build:
        build_table(args.table, args.build, args)
    if args.add:
        its = None if args.add_iterations == "all" else {int(i) for i in args.add_iterations.split(",")}
        add_runs(args.table, args.add, its)
    if args.no_compare:
        return
    if args.synthetic:
        # the default model's space: ranked layer mode with its measured layer order
        cfg = {"num_layers": 30, "full_width": 1536, "widths": [384, 576, 768, 960, 1152, 1344, 1536],
               "min_layers": 15, "always_keep": [0, 29], "layer_mode": "ranked",
               "layer_order": [0, 29, 1, 24, 23, 20, 28, 22, 27, 21, 8, 19, 18, 10, 4, 2, 7, 11, 6, 5, 9, 3, 16, 15,
                               26, 12, 25, 13, 17, 14]}
        space = SearchSpace.from_dict(cfg)
        make = lambda: SyntheticValidator(space, seed=0)  # noqa: E731
        pool, title = None, "synthetic objective (surrogate), default-model space (ranked)"
    else:
        space, tcfg, table = load_table(args.table)
        make = lambda: TableValidator(table)  # noqa: E731
        pool = [SubnetConfig.from_dict(r["subnet"]) for r in table.values()]
        title = f"table of {len(pool)} real measurements ({tcfg['identity'].get('target')}, limit {tcfg['identity'].get('limit')})"
    print(f"{title}; budget {args.evaluations}, population {args.population}, seeds {args.seeds}")
    t0 = time.perf_counter()
    result = compare(space, make, pool, args)
    text, extra = summarise(result, args.strategies)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(result, args.strategies, args.out / "efficiency.png", title)
    write_json_atomic(args.out / "efficiency.json", {
        "title": title, "evaluations": args.evaluations, "population": args.population, "seeds": args.seeds,
        **result, **extra, "table_size": len(pool) if pool else None, "seconds": round(time.perf_counter() - t0, 1),
    })
    print(f"wrote {args.out}/efficiency.json and efficiency.png")


if __name__ == "__main__":
    main()
