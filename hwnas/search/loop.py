"""LINAS search: NSGA-II over scikit-learn predictors, retrained each iteration on real measurements.

The outer loop is pymoo's ask/tell pattern with the expensive step outside pymoo::

    while budget left:
        proposals = strategy.ask(n, validated, iteration)   # what to measure next
        records   = [validate(p.cfg) for p in proposals]     # real accuracy + target latency
        strategy.tell(records)                               # learn from them

Strategies (same budget accounting: one evaluation = one distinct subnet validated for real):

- ``linas``: fit one predictor per objective on every validated subnet, run NSGA-II for many
  generations on the predictors alone, propose the best-predicted unvalidated subnets;
- ``nsga2``: plain NSGA-II whose every offspring is validated for real (pymoo ask/tell);
- ``random``: uniform samples from the search space.

Every strategy starts from the same initial population, which always holds the largest subnet
(the full model) and the smallest. Only validated subnets are ever reported as Pareto-optimal.

`validate(cfg) -> dict` is any callable returning measured objectives (``accuracy``, ``tpot_ms``,
...), so the loop runs on a synthetic objective in tests and on the real evaluator in the CLI.
Randomness derives from (seed, iteration), so `--resume` replays finished iterations from
``candidates.jsonl`` without re-validating anything and ends exactly where a straight run ends.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from hwnas.errors import SearchError
from hwnas.model.space import SearchSpace, SubnetConfig
from hwnas.search.config import Proposal, SearchConfig, Validator
from hwnas.search.objectives import OBJECTIVES
from hwnas.search.pareto import HypervolumeReference, pareto_front
from hwnas.search.picking import compare_to_full, evaluate_reports
from hwnas.search.result import SearchResult, SearchState
from hwnas.search.store import CONFIG_FILE, IDENTITY_KEYS, SearchStore
from hwnas.search.strategies import PoolSnapper, make_strategy

log = logging.getLogger(__name__)


SCHEMA_VERSION = 1
STALL_LIMIT = 25    # iterations in a row without a new subnet before the loop gives up
# ---------------------------------------------------------------------------- the loop
def _check_measured(measured: Mapping[str, Any], metrics: Sequence[str], cfg: SubnetConfig) -> None:
    for m in metrics:
        v = measured.get(m)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(float(v)):
            raise SearchError(f"validation of subnet {cfg.key} returned no finite {m!r} (got {v!r})")


def run_search(
    space: SearchSpace,
    validate: Validator | Callable[[SubnetConfig], dict[str, Any]],
    config: SearchConfig,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    identity: Mapping[str, Any] | None = None,
    run_info: Mapping[str, Any] | None = None,
    report: Callable[[SubnetConfig], dict[str, Any]] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    on_update: Callable[[SearchState], None] | None = None,
    hv_reference: HypervolumeReference | None = None,
    pool: Sequence[SubnetConfig] | None = None,
    remeasure: Callable[[list[SubnetConfig]], dict[str, dict[str, Any]]] | None = None,
) -> SearchResult:
    """Run (or resume) a search; with `out`, write candidates/history/config/pareto/summary there.

    `identity` holds what must match on --resume (model hash, space, tasks, ...); `run_info` is
    more provenance for config.json. `report(cfg)` (optional) measures the report split of each
    Pareto subnet and the full model after the search. `pool` restricts the search to a finite set
    of subnets (benchmarks on a table of real measurements): proposals snap to the nearest
    unvalidated member; it must hold the largest and the smallest subnet. `remeasure(cfgs)`
    (optional) times the Pareto subnets and the full model again in one interleaved session, so
    the reported speed-ups compare like with like even when the machine's load drifted.
    """
    t_start = time.monotonic()
    ident = {"space": space.to_dict(), **{k: v for k, v in config.to_dict().items() if k in IDENTITY_KEYS},
             **dict(identity or {})}
    store = SearchStore.prepare(out, ident, resume) if out is not None else None
    known: dict[str, dict[str, Any]] = {}
    old_history: list[dict[str, Any]] = []
    old_report: dict[str, Any] = {}
    if store is not None:
        store.out.mkdir(parents=True, exist_ok=True)
        if resume and (store.out / CONFIG_FILE).exists():
            doc = store.read_config()
            known = {r["key"]: r for r in store.load_records()}
            old_history = store.load_history()
            old_report = store.load_reports()
            doc.setdefault("resumed", []).append({"time": _now(), "validated_before": len(known)})
            doc["search"] = config.to_dict()
        else:
            doc = {"schema_version": SCHEMA_VERSION, "command": "search", "created": _now()}
            doc.update({"identity": ident, "search": config.to_dict(), "space": space.to_dict()})
        doc.update({k: v for k, v in dict(run_info or {}).items() if k not in ("identity", "resumed")})
        doc.setdefault("versions", tool_versions())
        store.write_config(doc)
    if len(known) > config.evaluations:
        raise SearchError(
            f"--resume: {out} already holds {len(known)} validated subnets, more than --evaluations {config.evaluations}"
        )

    metrics = config.metrics
    snap = None
    if pool is not None:
        snap = PoolSnapper(space, pool)
        missing = {space.largest().key, space.smallest().key} - set(snap.keys)
        if missing:
            raise SearchError(f"the subnet pool must hold the largest and the smallest subnet; missing {sorted(missing)}")
    strategy = make_strategy(space, config, snap.pool if snap else None)
    seen: dict[str, dict[str, Any]] = {}
    history: list[dict[str, Any]] = []
    done_iters = {h["iteration"] for h in old_history}
    full_key = space.largest().key
    hv_ref = hv_reference
    iteration, stall, new_total = 0, 0, 0
    budget = config.evaluations

    def state(phase: str, last: dict[str, Any] | None) -> SearchState:
        recs = list(seen.values())
        front = pareto_front(recs, config.objectives, config.constraints)
        hv = hv_ref.hypervolume(recs, config.constraints) if hv_ref else None
        return SearchState(iteration, len(seen), budget, front, hv, last, time.monotonic() - t_start, phase)

    while len(seen) < budget:
        t0 = time.monotonic()
        n = min(config.population, budget - len(seen))
        if on_update:
            on_update(state("propose", None))
        proposals = strategy.ask(n, list(seen.values()), iteration)
        t_propose = time.monotonic() - t0
        batch: list[dict[str, Any]] = []
        added, budget_hit, t_validate = 0, False, 0.0
        for p in proposals:
            if snap is not None:
                c = snap(p.cfg, seen)
                if c is None:
                    budget_hit = True  # the pool is exhausted
                    break
                if c.key != p.cfg.key:
                    p = Proposal(c, p.predicted, p.origin + "+snap")
            key = p.cfg.key
            if key in seen:
                batch.append(seen[key])
                continue
            if len(seen) >= budget:
                budget_hit = True
                break
            if key in known:
                rec = known[key]
            elif len(known) >= budget:
                budget_hit = True
                break
            else:
                if progress:
                    progress(len(seen), budget, f"iteration {iteration}: validating {p.cfg.describe()}")
                tv = time.monotonic()
                measured = dict(validate(p.cfg))
                _check_measured(measured, metrics, p.cfg)
                dt = time.monotonic() - tv
                t_validate += dt
                rec = {
                    "key": key,
                    "subnet": p.cfg.to_dict(),
                    "description": p.cfg.describe(),
                    "num_layers": p.cfg.num_layers,
                    "full_model": key == full_key,
                    **measured,
                    "predicted": p.predicted,
                    "origin": p.origin,
                    "iteration": iteration,
                    "strategy": config.strategy,
                    "index": len(known),
                    "validate_s": round(dt, 3),
                }
                if store is not None:
                    store.append_record(rec)
                known[key] = rec
                new_total += 1
            seen[key] = rec
            batch.append(rec)
            added += 1
            if progress:
                progress(len(seen), budget, f"iteration {iteration}")
            if on_update:
                on_update(state("validate", rec))
        strategy.tell(batch, complete=not budget_hit)
        if hv_ref is None and full_key in seen:
            ext = [seen[full_key]] + [r for r in seen.values() if r["key"] == space.smallest().key]
            if len(ext) == 2:
                hv_ref = HypervolumeReference.from_extremes(config.objectives, ext)
        recs = list(seen.values())
        front = pareto_front(recs, config.objectives, config.constraints)
        line = {
            "iteration": iteration,
            "strategy": config.strategy,
            "validated": len(seen),
            "new": added,
            "hypervolume": hv_ref.hypervolume(recs, config.constraints) if hv_ref else None,
            "front_size": len(front),
            "front": [r["key"] for r in front],
            "predictors": strategy.last_predictors if iteration > 0 else {},
            "seconds": {"propose": round(t_propose, 3), "validate": round(t_validate, 3),
                        "total": round(time.monotonic() - t0, 3)},
        }
        if hv_ref is not None:
            line["hv_reference"] = hv_ref.to_dict()["reference_point"]
        history.append(line)
        if store is not None and iteration not in done_iters:
            store.append_history(line)
        stall = stall + 1 if added == 0 else 0
        if stall >= STALL_LIMIT:
            log.warning("no new subnet in %d iterations; stopping at %d of %d evaluations", stall, len(seen), budget)
            break
        iteration += 1
        if budget_hit:
            break

    # ------------------------------------------------------------------ results
    records = sorted(known.values(), key=lambda r: r.get("index", 0))
    full = known.get(full_key)
    if hv_ref is None and full is not None:
        small = known.get(space.smallest().key)
        if small is not None:
            hv_ref = HypervolumeReference.from_extremes(config.objectives, [full, small])
    front = pareto_front(records, config.objectives, config.constraints)
    speed = next((o for o in config.objectives if o != "accuracy"), "tpot_ms")
    front.sort(key=lambda r: OBJECTIVES[speed].sign * float(r[speed]))
    for r in front:
        r["pareto"] = True
    if remeasure is not None and front and full is not None:
        want = [r["key"] for r in front] + ([full_key] if full_key not in {r["key"] for r in front} else [])
        cached = store.load_remeasured() if store is not None else {}
        if sorted(cached) != sorted(want):
            if progress:
                progress(0, len(want), "re-measuring the front and the full model (interleaved)")
            cfgs = [SubnetConfig.from_dict(known[k]["subnet"]) for k in want]
            cached = remeasure(cfgs) or {}
            if store is not None and cached:
                store.write_remeasured(cached)
        if cached:
            full = dict(full, remeasured=cached.get(full_key))
            for r in front:
                r["remeasured"] = cached.get(r["key"])
    if report is not None:
        full = dict(full) if full is not None else None
        evaluate_reports(front, full, report, known=old_report,
                         save=store.append_report if store is not None else None, progress=progress, speed=speed)
    for r in front:
        r["vs_full"] = compare_to_full(r, full)
    result = SearchResult(config, records, front, old_history + [h for h in history if h["iteration"] not in done_iters],
                          full, hv_ref, store.out if store else None, new_total)
    if store is not None:
        store.write_pareto(front)
        from hwnas.search.report import write_report

        write_report(result, store.out)
    log.info("search done: %d validated (%d new), front of %d", len(records), new_total, len(front))
    return result


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def tool_versions() -> dict[str, str]:
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for pkg in ("hwnas", "numpy", "scikit-learn", "pymoo", "torch", "transformers", "openvino"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


