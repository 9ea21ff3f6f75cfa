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
Under a fidelity ``metric`` (SearchConfig.ranked) the accuracy objective is ranked by the record's
``signal`` (-ln(1 + KL) to the full model) instead of its ``accuracy``; the pick rule is unchanged.
Randomness derives from (seed, iteration), so `--resume` replays finished iterations from
``candidates.jsonl`` without re-validating anything and ends exactly where a straight run ends.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from hwnas.errors import SearchError
from hwnas.model.space import SearchSpace, SubnetConfig
from hwnas.search.config import Proposal, SearchConfig, Validator
from hwnas.search.objectives import OBJECTIVES
from hwnas.search.pareto import HypervolumeReference, pareto_front
from hwnas.search.picking import compare_to_full, evaluate_reports, screened_out
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
    seeds: Sequence[SubnetConfig] = (),
    screen: Callable[[SubnetConfig], dict[str, Any]] | None = None,
) -> SearchResult:
    """Run (or resume) a search; with `out`, write candidates/history/config/pareto/summary there.

    `identity` holds what must match on --resume (model hash, space, tasks, ...); `run_info` is
    more provenance for config.json. `report(cfg)` (optional) measures the report split of each
    Pareto subnet and the full model after the search. `pool` restricts the search to a finite set
    of subnets (benchmarks on a table of real measurements): proposals snap to the nearest
    unvalidated member; it must hold the largest and the smallest subnet. `remeasure(cfgs)`
    (optional) times the Pareto subnets and the full model again in one interleaved session, so
    the reported speed-ups compare like with like even when the machine's load drifted. `seeds` join
    the initial population after the largest and smallest subnet (e.g. `hwnas.search.sensitivity`).
    `screen(cfg)` (optional) is the generation check a front record must pass before its report split
    is scored (``{"passed": bool, "summary": str, ...}``, `evaluate_reports`).
    """
    t_start = time.monotonic()
    store, prior = _open_store(space, config, out, resume, identity, run_info)
    loop = _Loop(space, validate, config, store, prior.known, _pool_snapper(space, pool),
                 hv_reference, progress, on_update, t_start, seeds)
    done_iters = {h["iteration"] for h in prior.history}
    loop.run(done_iters)
    return _finish(loop, prior, done_iters, report, remeasure, progress, screen)


# ---------------------------------------------------------------------------- steps of run_search
@dataclass
class _Prior:
    """What an earlier run of this search left in --out (all empty for a new search)."""

    known: dict[str, dict[str, Any]] = field(default_factory=dict)  # validated records by key, replayed on resume
    history: list[dict[str, Any]] = field(default_factory=list)
    reports: dict[str, Any] = field(default_factory=dict)
    screens: dict[str, Any] = field(default_factory=dict)   # generation screens by key (generation_screen.jsonl)


def _open_store(
    space: SearchSpace, config: SearchConfig, out: str | Path | None, resume: bool,
    identity: Mapping[str, Any] | None, run_info: Mapping[str, Any] | None,
) -> tuple[SearchStore | None, _Prior]:
    """Prepare --out (refusing another search's folder), read back a resumed run, write config.json."""
    ident = {"space": space.to_dict(), **{k: v for k, v in config.to_dict().items() if k in IDENTITY_KEYS},
             **dict(identity or {})}
    store = SearchStore.prepare(out, ident, resume) if out is not None else None
    prior = _Prior()
    if store is not None:
        store.out.mkdir(parents=True, exist_ok=True)
        if resume and (store.out / CONFIG_FILE).exists():
            doc = store.read_config()
            prior = _Prior({r["key"]: r for r in store.load_records()}, store.load_history(), store.load_reports(),
                           store.load_screens())
            doc.setdefault("resumed", []).append({"time": _now(), "validated_before": len(prior.known)})
            doc["search"] = config.to_dict()
        else:
            doc = {"schema_version": SCHEMA_VERSION, "command": "search", "created": _now()}
            doc.update({"identity": ident, "search": config.to_dict(), "space": space.to_dict()})
        doc.update({k: v for k, v in dict(run_info or {}).items() if k not in ("identity", "resumed")})
        doc.setdefault("versions", tool_versions())
        store.write_config(doc)
    if len(prior.known) > config.evaluations:
        raise SearchError(
            f"--resume: {out} already holds {len(prior.known)} validated subnets, more than --evaluations {config.evaluations}"
        )
    return store, prior


def _pool_snapper(space: SearchSpace, pool: Sequence[SubnetConfig] | None) -> PoolSnapper | None:
    """Snap proposals to a finite pool; it must hold both extremes, as every initial population does."""
    if pool is None:
        return None
    snap = PoolSnapper(space, pool)
    missing = {space.largest().key, space.smallest().key} - set(snap.keys)
    if missing:
        raise SearchError(f"the subnet pool must hold the largest and the smallest subnet; missing {sorted(missing)}")
    return snap


class _Loop:
    """The ask / validate / tell iterations of one search and the state they share."""

    def __init__(self, space: SearchSpace, validate: Callable[[SubnetConfig], Mapping[str, Any]],
                 config: SearchConfig, store: SearchStore | None, known: dict[str, dict[str, Any]],
                 snap: PoolSnapper | None, hv_ref: HypervolumeReference | None,
                 progress: Callable[[int, int, str], None] | None, on_update: Callable[[SearchState], None] | None,
                 t_start: float, seeds: Sequence[SubnetConfig] = ()) -> None:
        self.space, self.validate, self.config, self.store = space, validate, config, store
        self.known = known            # every validated record (this run and a resumed one), by key
        self.snap = snap
        self.strategy = make_strategy(space, config, snap.pool if snap else None, seeds)
        self.seen: dict[str, dict[str, Any]] = {}  # records this (replayed) run has reached so far
        self.history: list[dict[str, Any]] = []
        self.full_key = space.largest().key
        self.hv_ref = hv_ref
        self.progress, self.on_update, self.t_start = progress, on_update, t_start
        self.iteration = 0
        self.new_total = 0
        self.budget = config.evaluations
        # a validator with `submit(cfgs)` (a Ray cluster, hwnas.search.cluster) validates an iteration's new
        # subnets at once; records are appended as they arrive, numbered by proposal order (see _submit_ahead)
        self.ahead: dict[str, tuple[Proposal, int]] = {}
        self.arrived: dict[str, tuple[dict[str, Any], float]] = {}
        self.batch: Any = None

    def state(self, phase: str, last: dict[str, Any] | None) -> SearchState:
        """A snapshot for live displays: front and hypervolume of what has been reached so far."""
        recs = list(self.seen.values())
        front = pareto_front(recs, self.config.ranked, self.config.constraints)
        hv = self.hv_ref.hypervolume(recs, self.config.constraints) if self.hv_ref else None
        return SearchState(self.iteration, len(self.seen), self.budget, front, hv, last,
                           time.monotonic() - self.t_start, phase)

    def run(self, done_iters: set[int]) -> None:
        """Iterate until the budget is spent, the pool runs out, or STALL_LIMIT iterations add nothing."""
        stall = 0
        while len(self.seen) < self.budget:
            added, budget_hit = self.iterate(done_iters)
            stall = stall + 1 if added == 0 else 0
            if stall >= STALL_LIMIT:
                log.warning("no new subnet in %d iterations; stopping at %d of %d evaluations",
                            stall, len(self.seen), self.budget)
                break
            self.iteration += 1
            if budget_hit:
                break

    def iterate(self, done_iters: set[int]) -> tuple[int, bool]:
        """One iteration: ask, validate (or replay) each proposal, tell; returns (subnets added, budget hit)."""
        t0 = time.monotonic()
        n = min(self.config.population, self.budget - len(self.seen))
        if self.on_update:
            self.on_update(self.state("propose", None))
        proposals = self.strategy.ask(n, list(self.seen.values()), self.iteration)
        t_propose = time.monotonic() - t0
        if self.snap is None and hasattr(self.validate, "submit"):
            self._submit_ahead(proposals)
        batch: list[dict[str, Any]] = []
        added, budget_hit, t_validate = 0, False, 0.0
        for p in proposals:
            if self.snap is not None:
                p = self._snapped(p)
                if p is None:
                    budget_hit = True  # the pool is exhausted
                    break
            key = p.cfg.key
            if key in self.seen:
                batch.append(self.seen[key])
                continue
            rec, dt = self._record_for(p)
            if rec is None:
                budget_hit = True
                break
            t_validate += dt
            self.seen[key] = rec
            batch.append(rec)
            added += 1
            if self.progress:
                self.progress(len(self.seen), self.budget, f"iteration {self.iteration}")
            if self.on_update:
                self.on_update(self.state("validate", rec))
        self.strategy.tell(batch, complete=not budget_hit)
        self._fix_hv_reference()
        self._log_iteration(added, done_iters, t0, t_propose, t_validate)
        return added, budget_hit

    def _snapped(self, p: Proposal) -> Proposal | None:
        """The nearest unvalidated pool member instead of `p` (None once the pool is exhausted)."""
        assert self.snap is not None
        c = self.snap(p.cfg, self.seen)
        if c is None:
            return None
        return p if c.key == p.cfg.key else Proposal(c, p.predicted, p.origin + "+snap")

    def _record_for(self, p: Proposal) -> tuple[dict[str, Any] | None, float]:
        """A new subnet's record, replayed from a resumed run or validated now, and the seconds
        validating took; (None, 0) when the budget is spent (resumed records count against it)."""
        if len(self.seen) >= self.budget:
            return None, 0.0
        if p.cfg.key in self.known:
            return self.known[p.cfg.key], 0.0
        if len(self.known) >= self.budget:
            return None, 0.0
        return self._validate_new(p)

    def _submit_ahead(self, proposals: Sequence[Proposal]) -> None:
        """Hand every subnet this iteration will validate to `validate.submit` at once (the same walk as
        `iterate` / `_record_for`, so the same subnets, numbered by their place in the proposal order)."""
        seen, n_seen, n_known = set(self.seen), len(self.seen), len(self.known)
        plan: list[tuple[Proposal, int]] = []
        for p in proposals:
            key = p.cfg.key
            if key in seen:
                continue
            if n_seen >= self.budget:
                break
            if key not in self.known:
                if n_known >= self.budget:
                    break
                plan.append((p, n_seen))
                n_known += 1
            seen.add(key)
            n_seen += 1
        self.ahead = {p.cfg.key: (p, i) for p, i in plan}
        self.arrived = {}
        self.batch = self.validate.submit([p.cfg for p, _ in plan]) if plan else None  # type: ignore[attr-defined]

    def _collect(self, key: str) -> tuple[dict[str, Any], float]:
        """Wait for `key`'s record, appending every record that arrives meanwhile (in arrival order)."""
        while key not in self.arrived:
            i, measured, dt = self.batch.next_done()
            p, index = self.ahead[list(self.ahead)[i]]
            _check_measured(measured, self.config.metrics, p.cfg)
            rec = self._make_record(p, dict(measured), dt, index)
            if self.store is not None:
                self.store.append_record(rec)
            self.arrived[p.cfg.key] = (rec, dt)
        return self.arrived.pop(key)

    def _validate_new(self, p: Proposal) -> tuple[dict[str, Any], float]:
        """Measure one subnet for real and append its record to candidates.jsonl at once (resumable)."""
        key = p.cfg.key
        if key in self.ahead:
            rec, dt = self._collect(key)
            self.known[key] = rec
            self.new_total += 1
            return rec, dt
        if self.progress:
            self.progress(len(self.seen), self.budget, f"iteration {self.iteration}: validating {p.cfg.describe()}")
        tv = time.monotonic()
        measured = dict(self.validate(p.cfg))
        _check_measured(measured, self.config.metrics, p.cfg)
        dt = time.monotonic() - tv
        rec = self._make_record(p, measured, dt, len(self.known))
        if self.store is not None:
            self.store.append_record(rec)
        self.known[key] = rec
        self.new_total += 1
        return rec, dt

    def _make_record(self, p: Proposal, measured: dict[str, Any], dt: float, index: int) -> dict[str, Any]:
        """A validated subnet's record as candidates.jsonl holds it."""
        key = p.cfg.key
        return {
            "key": key,
            "subnet": p.cfg.to_dict(),
            "description": p.cfg.describe(),
            "num_layers": p.cfg.num_layers,
            "full_model": key == self.full_key,
            **measured,
            "predicted": p.predicted,
            "origin": p.origin,
            "iteration": self.iteration,
            "strategy": self.config.strategy,
            "index": index,
            "validate_s": round(dt, 3),
        }

    def _fix_hv_reference(self) -> None:
        """Fix the hypervolume reference once both extremes are validated, so every later value compares."""
        if self.hv_ref is None and self.full_key in self.seen:
            ext = [self.seen[self.full_key]] + [r for r in self.seen.values() if r["key"] == self.space.smallest().key]
            if len(ext) == 2:
                self.hv_ref = HypervolumeReference.from_extremes(self.config.ranked, ext)

    def _log_iteration(self, added: int, done_iters: set[int], t0: float, t_propose: float, t_validate: float) -> None:
        """Append the iteration's line to history (and history.jsonl unless a resumed run wrote it already)."""
        config, hv_ref = self.config, self.hv_ref
        recs = list(self.seen.values())
        front = pareto_front(recs, config.ranked, config.constraints)
        line = {
            "iteration": self.iteration,
            "strategy": config.strategy,
            "validated": len(self.seen),
            "new": added,
            "hypervolume": hv_ref.hypervolume(recs, config.constraints) if hv_ref else None,
            "front_size": len(front),
            "front": [r["key"] for r in front],
            "predictors": self.strategy.last_predictors if self.iteration > 0 else {},
            "seconds": {"propose": round(t_propose, 3), "validate": round(t_validate, 3),
                        "total": round(time.monotonic() - t0, 3)},
        }
        if hv_ref is not None:
            line["hv_reference"] = hv_ref.to_dict()["reference_point"]
        self.history.append(line)
        if self.store is not None and self.iteration not in done_iters:
            self.store.append_history(line)


def _finish(
    loop: _Loop, prior: _Prior, done_iters: set[int],
    report: Callable[[SubnetConfig], dict[str, Any]] | None,
    remeasure: Callable[[list[SubnetConfig]], dict[str, dict[str, Any]]] | None,
    progress: Callable[[int, int, str], None] | None,
    screen: Callable[[SubnetConfig], dict[str, Any]] | None = None,
) -> SearchResult:
    """Front of every validated subnet, re-measured and report split, compared with the full model; written out."""
    space, config, store, known, full_key = loop.space, loop.config, loop.store, loop.known, loop.full_key
    records = sorted(known.values(), key=lambda r: r.get("index", 0))
    full = known.get(full_key)
    hv_ref = loop.hv_ref
    if hv_ref is None and full is not None:
        small = known.get(space.smallest().key)
        if small is not None:
            hv_ref = HypervolumeReference.from_extremes(config.ranked, [full, small])
    front = _front_fastest_first(records, config)
    if remeasure is not None and front and full is not None:
        # timed again first, so that the report split below orders and skips by what the pick rule compares
        # (a record slower than one already within the pick's points needs no report scoring); records the
        # search split already rules out for every pick rule are not timed
        timed = [r for r in front if report is None or not screened_out(r)]
        full = _remeasure_front(timed, full, full_key, known, store, remeasure, progress)
    if report is not None:
        full = dict(full) if full is not None else None
        evaluate_reports(front, full, report, known=prior.reports,
                         save=store.append_report if store is not None else None, progress=progress,
                         speed=next((o for o in config.objectives if o != "accuracy"), "tpot_ms"),
                         metric=config.metric, screen=screen, known_screens=prior.screens,
                         save_screen=store.append_screen if store is not None else None)
    for r in front:
        r["vs_full"] = compare_to_full(r, full)
    history = prior.history + [h for h in loop.history if h["iteration"] not in done_iters]
    result = SearchResult(config, records, front, history, full, hv_ref, store.out if store else None, loop.new_total)
    if store is not None:
        store.write_pareto(front)
        from hwnas.search.report import write_report

        write_report(result, store.out)
    log.info("search done: %d validated (%d new), front of %d", len(records), loop.new_total, len(front))
    return result


def _front_fastest_first(records: list[dict[str, Any]], config: SearchConfig) -> list[dict[str, Any]]:
    """The Pareto front of validated subnets, fastest first, each flagged ``pareto``."""
    front = pareto_front(records, config.ranked, config.constraints)
    speed = next((o for o in config.objectives if o != "accuracy"), "tpot_ms")
    front.sort(key=lambda r: OBJECTIVES[speed].sign * float(r[speed]))
    for r in front:
        r["pareto"] = True
    return front


def _remeasure_front(
    front: list[dict[str, Any]], full: dict[str, Any], full_key: str, known: dict[str, dict[str, Any]],
    store: SearchStore | None, remeasure: Callable[[list[SubnetConfig]], dict[str, dict[str, Any]]],
    progress: Callable[[int, int, str], None] | None,
) -> dict[str, Any]:
    """Time `front` and the full model again in one session (cached in --out: a resumed run reuses a session
    that timed at least these); returns the full model's record."""
    want = [r["key"] for r in front] + ([full_key] if full_key not in {r["key"] for r in front} else [])
    cached = store.load_remeasured() if store is not None else {}
    if not set(want) <= set(cached):
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
    return full


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


