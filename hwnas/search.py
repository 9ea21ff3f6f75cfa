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

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Protocol, Sequence

import numpy as np

from .errors import SearchError
from .space import SearchSpace, SubnetConfig

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
STRATEGIES = ("linas", "nsga2", "random")
MAX_OBJECTIVES = 3
HV_REFERENCE = 1.1  # in normalised units: 0 = best of (largest, smallest), 1 = worst of them
STALL_LIMIT = 25    # iterations in a row without a new subnet before the loop gives up


# ---------------------------------------------------------------------------- objectives
@dataclass(frozen=True)
class Objective:
    name: str
    maximize: bool
    label: str

    @property
    def sign(self) -> float:
        """Multiply a value by this to get the minimisation form pymoo works with."""
        return -1.0 if self.maximize else 1.0


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective("accuracy", True, "mean accuracy"),
        Objective("tpot_ms", False, "TPOT (ms/token)"),
        Objective("ttft_ms", False, "TTFT (ms)"),
        Objective("throughput_tok_s", True, "throughput (tokens/s)"),
        Objective("n_params", False, "parameters"),
        Objective("weight_bytes", False, "weight bytes"),
    )
}
ALIASES = {"acc": "accuracy", "tpot": "tpot_ms", "ttft": "ttft_ms", "throughput": "throughput_tok_s",
           "params": "n_params", "size": "weight_bytes"}
DEFAULT_OBJECTIVES = ("accuracy", "tpot_ms")


def parse_objectives(spec: str | Sequence[str]) -> tuple[str, ...]:
    """'accuracy,tpot_ms' -> ('accuracy', 'tpot_ms'); 2..3 distinct known objectives."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    out: list[str] = []
    for s in items:
        name = ALIASES.get(s, s)
        if name not in OBJECTIVES:
            raise SearchError(f"unknown objective {s!r}; accepted: {', '.join(OBJECTIVES)}")
        if name in out:
            raise SearchError(f"objective {name!r} is given twice")
        out.append(name)
    if not 2 <= len(out) <= MAX_OBJECTIVES:
        raise SearchError(f"give 2 to {MAX_OBJECTIVES} objectives (comma-separated), got {len(out)}: {spec!r}")
    return tuple(out)


@dataclass(frozen=True)
class Constraint:
    """`metric <= bound` (upper=True) or `metric >= bound`."""

    metric: str
    bound: float
    upper: bool

    def __post_init__(self) -> None:
        if self.metric not in OBJECTIVES:
            raise SearchError(f"unknown constraint metric {self.metric!r}; accepted: {', '.join(OBJECTIVES)}")
        if not math.isfinite(self.bound):
            raise SearchError(f"constraint bound for {self.metric} must be a finite number, got {self.bound}")

    def violation(self, value: float) -> float:
        """Positive when violated (pymoo's G <= 0 convention)."""
        return (value - self.bound) if self.upper else (self.bound - value)

    def describe(self) -> str:
        return f"{self.metric} {'<=' if self.upper else '>='} {self.bound:g}"

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "max" if self.upper else "min": self.bound}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Constraint":
        upper = "max" in d
        return cls(d["metric"], float(d["max"] if upper else d["min"]), upper)


def constraints_from_options(max_tpot_ms: float | None = None, min_accuracy: float | None = None) -> tuple[Constraint, ...]:
    """The CLI's --max-tpot-ms / --min-accuracy as constraints (accuracy as a fraction 0..1)."""
    out = []
    if max_tpot_ms is not None:
        if max_tpot_ms <= 0:
            raise SearchError(f"--max-tpot-ms must be > 0, got {max_tpot_ms}")
        out.append(Constraint("tpot_ms", float(max_tpot_ms), True))
    if min_accuracy is not None:
        if not 0 <= min_accuracy <= 1:
            raise SearchError(f"--min-accuracy is a fraction between 0 and 1 (e.g. 0.45), got {min_accuracy}")
        out.append(Constraint("accuracy", float(min_accuracy), False))
    return tuple(out)


# ---------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class SearchConfig:
    """How to search (not what is measured: that is the validator's business)."""

    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES
    constraints: tuple[Constraint, ...] = ()
    strategy: str = "linas"
    evaluations: int = 24
    population: int = 8
    seed: int = 0
    surrogate_generations: int = 60
    surrogate_population: int = 48
    cv_folds: int = 5
    predictors: tuple[str, ...] = ("ridge", "svr", "gbr")

    def __post_init__(self) -> None:
        object.__setattr__(self, "objectives", parse_objectives(self.objectives))
        object.__setattr__(self, "constraints", tuple(self.constraints))
        if self.strategy not in STRATEGIES:
            raise SearchError(f"unknown strategy {self.strategy!r}; accepted: {', '.join(STRATEGIES)}")
        if self.population < 2:
            raise SearchError(f"--population must be >= 2 (it holds the largest and the smallest subnet), got {self.population}")
        if self.evaluations < self.population:
            raise SearchError(
                f"--evaluations {self.evaluations} is smaller than --population {self.population}; "
                "the budget must cover at least the initial population"
            )
        if self.surrogate_generations < 1 or self.surrogate_population < 4:
            raise SearchError("surrogate NSGA-II needs >= 1 generation and a population >= 4")

    @property
    def metrics(self) -> tuple[str, ...]:
        """Everything the loop models: objectives, then constraint metrics that are not objectives."""
        extra = [c.metric for c in self.constraints if c.metric not in self.objectives]
        return self.objectives + tuple(dict.fromkeys(extra))

    def to_dict(self) -> dict[str, Any]:
        return {
            "objectives": list(self.objectives),
            "constraints": [c.to_dict() for c in self.constraints],
            "strategy": self.strategy,
            "evaluations": self.evaluations,
            "population": self.population,
            "seed": self.seed,
            "surrogate_generations": self.surrogate_generations,
            "surrogate_population": self.surrogate_population,
            "cv_folds": self.cv_folds,
            "predictors": list(self.predictors),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SearchConfig":
        d = dict(d)
        d["objectives"] = tuple(d.get("objectives", DEFAULT_OBJECTIVES))
        d["constraints"] = tuple(Constraint.from_dict(c) for c in d.get("constraints", ()))
        if "predictors" in d:
            d["predictors"] = tuple(d["predictors"])
        return cls(**d)


class Validator(Protocol):
    """Measures one subnet for real: at least every metric the search models, as floats."""

    def __call__(self, cfg: SubnetConfig) -> dict[str, Any]: ...


class Proposal(NamedTuple):
    cfg: SubnetConfig
    predicted: dict[str, float] | None = None
    origin: str = ""


# ---------------------------------------------------------------------------- Pareto helpers
def objective_matrix(records: Sequence[Mapping[str, Any]], objectives: Sequence[str]) -> np.ndarray:
    """Records -> (n, k) array in minimisation form."""
    return np.array([[OBJECTIVES[o].sign * float(r[o]) for o in objectives] for r in records], dtype=float).reshape(
        len(records), len(objectives)
    )


def is_feasible(record: Mapping[str, Any], constraints: Iterable[Constraint]) -> bool:
    return all(c.violation(float(record[c.metric])) <= 0 for c in constraints)


def pareto_front(
    records: Sequence[Mapping[str, Any]], objectives: Sequence[str], constraints: Iterable[Constraint] = ()
) -> list[dict[str, Any]]:
    """Non-dominated feasible records (ties kept once), in input order."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    cons = tuple(constraints)
    feas = [dict(r) for r in records if is_feasible(r, cons)]
    if not feas:
        return []
    F = objective_matrix(feas, objectives)
    idx = NonDominatedSorting().do(F, only_non_dominated_front=True)
    keep, seen_f = [], set()
    for i in sorted(int(i) for i in idx):
        t = tuple(F[i])
        if t not in seen_f:
            seen_f.add(t)
            keep.append(feas[i])
    return keep


@dataclass(frozen=True)
class HypervolumeReference:
    """Fixed normalisation for hypervolume: per objective, 0 = the better and 1 = the worse of
    the largest and the smallest subnet; the reference point sits at 1.1 in every objective."""

    objectives: tuple[str, ...]
    lo: tuple[float, ...]   # minimisation form
    hi: tuple[float, ...]

    @classmethod
    def from_extremes(cls, objectives: Sequence[str], records: Sequence[Mapping[str, Any]]) -> "HypervolumeReference":
        F = objective_matrix(records, objectives)
        lo, hi = F.min(axis=0), F.max(axis=0)
        span = np.where(hi - lo > 1e-12, hi - lo, np.maximum(np.abs(hi), 1.0))
        return cls(tuple(objectives), tuple(float(v) for v in lo), tuple(float(v) for v in lo + span))

    def normalise(self, F: np.ndarray) -> np.ndarray:
        lo, hi = np.array(self.lo), np.array(self.hi)
        return (F - lo) / (hi - lo)

    def hypervolume(self, records: Sequence[Mapping[str, Any]], constraints: Iterable[Constraint] = ()) -> float:
        from pymoo.indicators.hv import HV

        cons = tuple(constraints)
        feas = [r for r in records if is_feasible(r, cons)]
        if not feas:
            return 0.0
        F = self.normalise(objective_matrix(feas, self.objectives))
        ref = np.full(len(self.objectives), HV_REFERENCE)
        F = F[np.all(F < ref, axis=1)]
        if len(F) == 0:
            return 0.0
        return float(HV(ref_point=ref)(F))

    def to_dict(self) -> dict[str, Any]:
        """Reference point in natural units (what a reader can check)."""
        point = {}
        for o, lo, hi in zip(self.objectives, self.lo, self.hi):
            v = lo + HV_REFERENCE * (hi - lo)
            point[o] = OBJECTIVES[o].sign * v
        return {"objectives": list(self.objectives), "lo": list(self.lo), "hi": list(self.hi),
                "reference_point": point, "normalised_reference": HV_REFERENCE}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "HypervolumeReference":
        return cls(tuple(d["objectives"]), tuple(d["lo"]), tuple(d["hi"]))


def greedy_hypervolume_batch(
    F: np.ndarray, base: np.ndarray, n: int, *, candidates: Iterable[int] | None = None, ref: float = HV_REFERENCE
) -> list[int]:
    """Indices of up to n rows of F (normalised, minimisation form) chosen one at a time, each the one
    adding the most hypervolume to `base` plus the rows chosen before it; stops when nothing adds any."""
    from pymoo.indicators.hv import HV

    k = F.shape[1]
    ind = HV(ref_point=np.full(k, ref))

    def hv(P: np.ndarray) -> float:
        P = P[np.all(P < ref, axis=1)] if len(P) else P
        return float(ind(P)) if len(P) else 0.0

    cand = [int(i) for i in (range(len(F)) if candidates is None else candidates) if np.all(F[int(i)] < ref)]
    current = base.reshape(-1, k)
    best_hv = hv(current)
    chosen: list[int] = []
    for _ in range(n):
        gains = [(hv(np.vstack([current, F[i]])) - best_hv, -j, i) for j, i in enumerate(cand) if i not in chosen]
        if not gains:
            break
        g, _, i = max(gains)
        if g <= 1e-12:
            break
        chosen.append(i)
        current = np.vstack([current, F[i]])
        best_hv += g
    return chosen


# ---------------------------------------------------------------------------- picking candidates
def pick_fastest_within(
    records: Sequence[Mapping[str, Any]], points: float, *, speed: str = "tpot_ms", full_accuracy: float | None = None,
    full_report_accuracy: float | None = None,
) -> dict[str, Any] | None:
    """The record with the lowest `speed` whose accuracy is at most `points` percentage points
    below the full model's. The full model's accuracy is taken from `full_accuracy`, else from a
    record flagged ``full_model``, else from each record's ``vs_full`` (pareto.json carries it).

    With `full_report_accuracy` (or a ``full_model`` record that carries a report) a record must
    also be within `points` on the report split, where it has a report: the search picks the
    best of many noisy search-split estimates, so the winner's search-split accuracy is biased
    upwards, and items it never saw are the check. Returns None when no record qualifies."""
    if points < 0:
        raise SearchError(f"--pick fastest-within needs a non-negative number of points, got {points}")
    full = [r for r in records if r.get("full_model")]
    if full_accuracy is None and full:
        full_accuracy = float(full[0]["accuracy"])
    if full_report_accuracy is None and full and (full[0].get("report") or {}).get("accuracy") is not None:
        full_report_accuracy = float(full[0]["report"]["accuracy"])
    ok: list[Mapping[str, Any]] = []
    for r in records:
        if full_accuracy is not None:
            drop = 100.0 * (full_accuracy - float(r["accuracy"]))
        elif r.get("vs_full") and r["vs_full"].get("accuracy_points") is not None:
            drop = -float(r["vs_full"]["accuracy_points"])
        else:
            raise SearchError("cannot pick 'fastest-within': the records hold no full-model accuracy")
        rep = (r.get("report") or {}).get("accuracy")
        if full_report_accuracy is not None and rep is not None:
            drop = max(drop, 100.0 * (full_report_accuracy - float(rep)))
        if drop <= points + 1e-9 and speed_of(r, speed) is not None:
            ok.append(r)
    if not ok:
        return None
    best = min(ok, key=lambda r: (float(speed_of(r, speed)), -float(r["accuracy"])))
    return dict(best)


def pick_from_front(front: Sequence[Mapping[str, Any]], full: Mapping[str, Any] | None, points: float, *,
                    speed: str = "tpot_ms") -> dict[str, Any] | None:
    """`--pick 'fastest-within POINTS'`: the fastest front record within POINTS of the full model on
    the search split and, where both carry a ``report``, on the report split; the full model itself
    (always within 0 points of itself) when no subnet is."""
    keys = {r["key"] for r in front}
    cands = list(front) + ([dict(full)] if full is not None and full["key"] not in keys else [])
    rep = ((full or {}).get("report") or {}).get("accuracy")
    return pick_fastest_within(cands, points, speed=speed,
                               full_accuracy=None if full is None else float(full["accuracy"]),
                               full_report_accuracy=None if rep is None else float(rep))


def speed_of(record: Mapping[str, Any], metric: str = "tpot_ms") -> float | None:
    """A latency figure of a record: the final interleaved re-measurement when there is one."""
    again = record.get("remeasured") or {}
    v = again.get(metric, record.get(metric))
    return None if v is None else float(v)


def compare_to_full(record: Mapping[str, Any], full: Mapping[str, Any] | None) -> dict[str, float | None]:
    """Accuracy change in points and speed-ups relative to the full model's record."""
    if not full:
        return {}
    out: dict[str, Any] = {"accuracy_points": round(100.0 * (float(record["accuracy"]) - float(full["accuracy"])), 3)}
    if record.get("report") and full.get("report"):
        out["report_accuracy_points"] = round(100.0 * (float(record["report"]["accuracy"]) - float(full["report"]["accuracy"])), 3)
    both = bool(record.get("remeasured")) and bool(full.get("remeasured"))
    for m in ("tpot_ms", "ttft_ms"):
        a, b = (speed_of(record, m), speed_of(full, m)) if both else (record.get(m), full.get(m))
        if a and b:
            out[m.replace("_ms", "_speedup")] = round(float(b) / float(a), 4)
    a, b = ((record["remeasured"].get("throughput_tok_s"), full["remeasured"].get("throughput_tok_s")) if both
            else (record.get("throughput_tok_s"), full.get("throughput_tok_s")))
    if a and b:
        out["throughput_ratio"] = round(float(a) / float(b), 4)
    out["speed_basis"] = "final interleaved re-measurement" if both else "search-time measurement"
    return out


# ---------------------------------------------------------------------------- pymoo pieces
def _pymoo_parts(space: SearchSpace):
    """Problem base, repair and key-based duplicate elimination (imported lazily)."""
    from pymoo.core.duplicate import HashDuplicateElimination
    from pymoo.core.problem import Problem
    from pymoo.core.repair import Repair

    class SpaceRepair(Repair):
        """Round, clip and fix the kept-layer count (space.repair) so every vector decodes."""

        def _do(self, problem, X, random_state=None, **kwargs):
            rng = random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(0)
            return np.array([space.repair(np.rint(x).astype(int), rng) for x in X], dtype=int)

    n = space.num_layers
    off = space.n_var - n

    def key_of(item):
        """Which subnet a (repaired) vector encodes: kept layers and their width genes (cheap)."""
        if isinstance(item, tuple):
            return item
        x = np.rint(item.X).astype(int)
        if space.layer_mode == "skip":
            kept = np.flatnonzero(x[:n] >= 1)
        elif space.layer_mode == "prefix":
            kept = np.arange(int(x[0]))
        else:
            kept = np.array(sorted(space.layer_order[: int(x[0])]), dtype=int)
        return (tuple(kept.tolist()), tuple(x[off + kept].tolist()))

    class EncodedProblem(Problem):
        def __init__(self, n_obj: int, n_ieq: int):
            xl, xu = space.bounds()
            super().__init__(n_var=space.n_var, n_obj=n_obj, n_ieq_constr=n_ieq, xl=xl, xu=xu, vtype=int)

    return SpaceRepair, HashDuplicateElimination(func=key_of), EncodedProblem


def _integer_operators():
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair

    return (SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
            PM(eta=20, vtype=float, repair=RoundingRepair()))


def initial_population(
    space: SearchSpace, n: int, rng: np.random.Generator, pool: Sequence[SubnetConfig] | None = None
) -> list[SubnetConfig]:
    """Largest, smallest, then distinct uniform samples (from `pool` when the search is restricted to one)."""
    out: dict[str, SubnetConfig] = {}
    for cfg in (space.largest(), space.smallest()):
        out.setdefault(cfg.key, cfg)
    if pool is not None:
        rest = [c for c in pool if c.key not in out]
        for i in rng.permutation(len(rest))[: max(0, n - len(out))]:
            out.setdefault(rest[int(i)].key, rest[int(i)])
        return list(out.values())[:n]
    tries = 0
    while len(out) < n and tries < 200 * n:
        cfg = space.sample(rng)
        out.setdefault(cfg.key, cfg)
        tries += 1
    return list(out.values())[:n]


class PoolSnapper:
    """Restrict a search to a finite set of subnets (a table of real measurements): any proposal is
    replaced by the nearest (L1 over `space.features`) member that has not been validated yet."""

    def __init__(self, space: SearchSpace, pool: Sequence[SubnetConfig]):
        self.space = space
        self.pool = list({c.key: c for c in pool}.values())
        self.keys = [c.key for c in self.pool]
        self.index = {k: i for i, k in enumerate(self.keys)}
        self.F = np.array([space.features(c) for c in self.pool])

    def __call__(self, cfg: SubnetConfig, seen: Iterable[str]) -> SubnetConfig | None:
        seen = set(seen)
        if cfg.key in self.index or cfg.key in seen:
            return cfg  # a member itself (validated already: reused for free)
        free = [i for i, k in enumerate(self.keys) if k not in seen]
        if not free:
            return None
        d = np.abs(self.F[free] - self.space.features(cfg)).sum(axis=1)
        return self.pool[free[int(np.argmin(d))]]


# ---------------------------------------------------------------------------- strategies
class Strategy:
    """ask(n, validated, iteration) -> proposals; tell(records) after they are validated."""

    name = ""

    def __init__(self, space: SearchSpace, config: SearchConfig, pool: Sequence[SubnetConfig] | None = None):
        self.space = space
        self.config = config
        self.pool = list(pool) if pool is not None else None
        self.last_predictors: dict[str, dict[str, Any]] = {}

    def rng(self, iteration: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, iteration])

    def ask(self, n: int, validated: Sequence[Mapping[str, Any]], iteration: int) -> list[Proposal]:
        raise NotImplementedError

    def tell(self, records: Sequence[Mapping[str, Any]], complete: bool = True) -> None:
        pass

    def _fill_random(self, props: list[Proposal], n: int, seen: set[str], rng: np.random.Generator) -> list[Proposal]:
        keys = seen | {p.cfg.key for p in props}
        if self.pool is not None:
            rest = [c for c in self.pool if c.key not in keys]
            for i in rng.permutation(len(rest))[: max(0, n - len(props))]:
                props.append(Proposal(rest[int(i)], None, "random"))
            return props
        tries = 0
        while len(props) < n and tries < 200 * n:
            cfg = self.space.sample(rng)
            tries += 1
            if cfg.key not in keys:
                keys.add(cfg.key)
                props.append(Proposal(cfg, None, "random"))
        return props


class RandomStrategy(Strategy):
    name = "random"

    def ask(self, n, validated, iteration):
        rng = self.rng(iteration)
        if iteration == 0:
            return [Proposal(c, None, "init") for c in initial_population(self.space, n, rng, self.pool)]
        return self._fill_random([], n, {r["key"] for r in validated}, rng)


class LinasStrategy(Strategy):
    """Predictors fitted on all validated subnets; NSGA-II on the predictors proposes the next batch."""

    name = "linas"

    def fit(self, validated: Sequence[Mapping[str, Any]]):
        from .predictors import fit_predictor

        X = np.array([self.space.features(SubnetConfig.from_dict(r["subnet"])) for r in validated])
        fits = {}
        for m in self.config.metrics:
            y = np.array([float(r[m]) for r in validated])
            fits[m] = fit_predictor(X, y, objective=m, candidates=self.config.predictors,
                                    folds=self.config.cv_folds, seed=self.config.seed)
        self.last_predictors = {m: f.to_dict() for m, f in fits.items()}
        return fits

    def surrogate_problem(self, fits):
        SpaceRepair, dedup, EncodedProblem = _pymoo_parts(self.space)
        space, objectives, cons = self.space, self.config.objectives, self.config.constraints

        class SurrogateProblem(EncodedProblem):
            def _evaluate(self, X, out, *args, **kwargs):
                cfgs = [space.decode(np.rint(x).astype(int)) for x in X]
                feats = np.array([space.features(c) for c in cfgs])
                pred = {m: f.predict(feats) for m, f in fits.items()}
                out["F"] = np.column_stack([OBJECTIVES[o].sign * pred[o] for o in objectives])
                if cons:
                    out["G"] = np.column_stack([c.violation(pred[c.metric]) for c in cons])

        return SurrogateProblem(len(objectives), len(cons)), SpaceRepair, dedup

    def select(self, items, preds, validated, n, problem, rng) -> list[int]:
        """Pick n of the surrogate's candidates: greedily by predicted hypervolume improvement over
        the validated front (feasible by prediction), then by rank and crowding for any slots left."""
        from pymoo.core.population import Population
        from pymoo.operators.survival.rank_and_crowding import RankAndCrowding

        objs, cons = self.config.objectives, self.config.constraints
        F = np.column_stack([OBJECTIVES[o].sign * preds[o] for o in objs])
        ok = np.ones(len(items), dtype=bool)
        for c in cons:
            ok &= c.violation(preds[c.metric]) <= 0
        by_key = {r["key"]: r for r in validated}
        ext = [by_key[k] for k in (self.space.largest().key, self.space.smallest().key) if k in by_key]
        ref = HypervolumeReference.from_extremes(objs, ext if len(ext) == 2 else list(validated))
        base = [r for r in validated if is_feasible(r, cons)]
        base_F = ref.normalise(objective_matrix(base, objs)) if base else np.empty((0, len(objs)))
        chosen = greedy_hypervolume_batch(ref.normalise(F), base_F, n, candidates=np.flatnonzero(ok))
        if len(chosen) < n:
            rest = [i for i in range(len(items)) if i not in set(chosen)]
            if rest:
                pop = Population.create(*[items[i][1] for i in rest])
                surv = RankAndCrowding().do(problem, pop, n_survive=min(n - len(chosen), len(rest)), random_state=rng)
                ids = {id(ind) for ind in surv}
                chosen += [i for i in rest if id(items[i][1]) in ids]
        return chosen[:n]

    def ask(self, n, validated, iteration):
        rng = self.rng(iteration)
        if iteration == 0 or len(validated) < 2:
            return [Proposal(c, None, "init") for c in initial_population(self.space, n, rng, self.pool)]
        from pymoo.algorithms.moo.nsga2 import NSGA2
        from pymoo.core.population import Population
        from pymoo.operators.survival.rank_and_crowding import RankAndCrowding
        from pymoo.optimize import minimize

        fits = self.fit(validated)
        problem, SpaceRepair, dedup = self.surrogate_problem(fits)
        seen = {r["key"] for r in validated}
        # Start from the real front (validated, non-dominated) plus random samples.
        front = pareto_front(validated, self.config.objectives, self.config.constraints)
        start = {r["key"]: self.space.encode(SubnetConfig.from_dict(r["subnet"])) for r in front}
        S = self.config.surrogate_population
        tries = 0
        while len(start) < S and tries < 200 * S:
            cfg = self.space.sample(rng)
            start.setdefault(cfg.key, self.space.encode(cfg))
            tries += 1
        X0 = np.array(list(start.values())[:S])
        crossover, mutation = _integer_operators()
        algo = NSGA2(pop_size=S, sampling=X0, crossover=crossover, mutation=mutation,
                     repair=SpaceRepair(), eliminate_duplicates=dedup)
        seed = int(np.random.default_rng([self.config.seed, iteration, 1]).integers(2**31 - 1))
        res = minimize(problem, algo, ("n_gen", self.config.surrogate_generations), seed=seed, verbose=False)
        pool_by_key: dict[str, Any] = {}
        for ind in res.pop:
            cfg = self.space.decode(np.rint(ind.X).astype(int))
            if cfg.key not in seen:
                pool_by_key.setdefault(cfg.key, (cfg, ind))
        props: list[Proposal] = []
        if pool_by_key:
            items = list(pool_by_key.values())
            feats = np.array([self.space.features(cfg) for cfg, _ in items])
            preds = {m: f.predict(feats) for m, f in fits.items()}
            order = self.select(items, preds, validated, n, problem, rng)
            for i in order:
                props.append(Proposal(items[i][0], {m: round(float(preds[m][i]), 6) for m in preds}, "linas"))
        if len(props) < n:
            log.info("surrogate NSGA-II proposed %d new subnets; filling %d at random", len(props), n - len(props))
            props = self._fill_random(props, n, seen, rng)
        return props


class Nsga2Strategy(Strategy):
    """NSGA-II on real evaluations only: pymoo ask/tell, every offspring validated."""

    name = "nsga2"

    def __init__(self, space, config, pool=None):
        super().__init__(space, config, pool)
        self.algorithm = None
        self.pending = None

    def _setup(self, init: list[SubnetConfig]) -> None:
        from pymoo.algorithms.moo.nsga2 import NSGA2

        SpaceRepair, dedup, EncodedProblem = _pymoo_parts(self.space)
        crossover, mutation = _integer_operators()
        X0 = np.array([self.space.encode(c) for c in init])
        self.problem = EncodedProblem(len(self.config.objectives), len(self.config.constraints))
        self.algorithm = NSGA2(pop_size=self.config.population, sampling=X0, crossover=crossover,
                               mutation=mutation, repair=SpaceRepair(), eliminate_duplicates=dedup)
        self.algorithm.setup(self.problem, termination=("n_gen", 10**9), seed=self.config.seed, verbose=False)

    def ask(self, n, validated, iteration):
        if self.algorithm is None:
            self._setup(initial_population(self.space, self.config.population, self.rng(0), self.pool))
        self.pending = self.algorithm.ask()
        cfgs = [self.space.decode(np.rint(ind.X).astype(int)) for ind in self.pending]
        return [Proposal(c, None, "init" if iteration == 0 else "nsga2") for c in cfgs]

    def tell(self, records, complete=True):
        if not complete or self.pending is None:
            return  # budget ran out mid-generation: nothing more will be asked
        from pymoo.core.evaluator import Evaluator
        from pymoo.problems.static import StaticProblem

        recs = list(records)  # positional: records[i] is what proposal i became (maybe snapped to a pool member)
        if len(recs) != len(self.pending):
            raise SearchError(f"nsga2: told {len(recs)} records for {len(self.pending)} proposals")
        for ind, r in zip(self.pending, recs):
            ind.X = self.space.encode(SubnetConfig.from_dict(r["subnet"]))
        out = {"F": objective_matrix(recs, self.config.objectives)}
        if self.config.constraints:
            out["G"] = np.array([[c.violation(float(r[c.metric])) for c in self.config.constraints] for r in recs])
        Evaluator().eval(StaticProblem(self.problem, **out), self.pending)
        self.algorithm.tell(infills=self.pending)
        self.pending = None


def make_strategy(space: SearchSpace, config: SearchConfig, pool: Sequence[SubnetConfig] | None = None) -> Strategy:
    cls = {"linas": LinasStrategy, "nsga2": Nsga2Strategy, "random": RandomStrategy}[config.strategy]
    return cls(space, config, pool)


# ---------------------------------------------------------------------------- output folder
CANDIDATES_FILE = "candidates.jsonl"
HISTORY_FILE = "history.jsonl"
CONFIG_FILE = "config.json"
PARETO_FILE = "pareto.json"
REPORT_FILE = "report.jsonl"  # report-split accuracy of the front and the full model, appended as measured
REMEASURE_FILE = "remeasured.json"  # final interleaved latency of the front and the full model
# What must match for --resume to continue a folder (evaluations may grow).
IDENTITY_KEYS = ("model_sha256", "space", "tasks", "limit", "metric", "target", "latency_source", "objectives",
                 "constraints", "strategy", "seed", "population")


class SearchStore:
    """The --out folder: checks before anything is written, appends as it goes."""

    def __init__(self, out: str | Path):
        self.out = Path(out)

    @classmethod
    def prepare(cls, out: str | Path, identity: Mapping[str, Any], resume: bool) -> "SearchStore":
        """Raise SearchError (touching nothing) unless `out` can be started or resumed with `identity`."""
        store = cls(out)
        p = store.out
        if p.exists() and not p.is_dir():
            raise SearchError(f"--out {p} exists and is not a folder")
        nonempty = p.is_dir() and any(p.iterdir())
        if not resume:
            if nonempty:
                raise SearchError(f"--out {p} is not empty; pass --resume to continue that search or choose a new folder")
            return store
        if not (p / CONFIG_FILE).is_file():
            if nonempty:
                raise SearchError(f"--resume: {p} holds no {CONFIG_FILE}, so it is not a search folder")
            return store  # nothing to resume: a fresh start
        old = store.read_config().get("identity", {})
        for k in IDENTITY_KEYS:
            if k in identity and k in old and _canon(old[k]) != _canon(identity[k]):
                raise SearchError(
                    f"--resume: {p} was searched with a different {k} "
                    f"({_short(old[k])} there, {_short(identity[k])} now); use the same settings or a new --out"
                )
        return store

    def read_config(self) -> dict[str, Any]:
        try:
            return json.loads((self.out / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise SearchError(f"cannot read {self.out / CONFIG_FILE}: {e}") from None

    def write_config(self, doc: Mapping[str, Any]) -> None:
        from .io import write_json_atomic

        write_json_atomic(self.out / CONFIG_FILE, dict(doc))

    def _load_jsonl(self, name: str) -> list[dict[str, Any]]:
        """Read a JSONL file and drop a torn last line for good, so later appends start clean."""
        from .io import read_jsonl, write_text_atomic

        path = self.out / name
        if not path.exists():
            return []
        try:
            recs = read_jsonl(path)
        except json.JSONDecodeError as e:
            raise SearchError(f"{path} is corrupt (line {e.lineno}): {e.msg}") from None
        text = path.read_text(encoding="utf-8")
        clean = "".join(json.dumps(r) + "\n" for r in recs)
        if text != clean and not text.endswith("\n"):
            write_text_atomic(path, clean)
        return recs

    def load_records(self) -> list[dict[str, Any]]:
        recs, seen = [], set()
        for r in self._load_jsonl(CANDIDATES_FILE):
            if r["key"] not in seen:  # defensive: never count a subnet twice
                seen.add(r["key"])
                recs.append(r)
        return recs

    def load_history(self) -> list[dict[str, Any]]:
        return self._load_jsonl(HISTORY_FILE)

    def load_reports(self) -> dict[str, dict[str, Any]]:
        return {r["key"]: r["report"] for r in self._load_jsonl(REPORT_FILE)}

    def load_remeasured(self) -> dict[str, dict[str, Any]]:
        try:
            return json.loads((self.out / REMEASURE_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}

    def write_remeasured(self, data: Mapping[str, Any]) -> None:
        from .io import write_json_atomic

        write_json_atomic(self.out / REMEASURE_FILE, dict(data))

    def append_report(self, key: str, report: Mapping[str, Any]) -> None:
        from .io import append_jsonl

        append_jsonl(self.out / REPORT_FILE, {"key": key, "report": dict(report)})

    def append_record(self, rec: Mapping[str, Any]) -> None:
        from .io import append_jsonl

        append_jsonl(self.out / CANDIDATES_FILE, dict(rec))

    def append_history(self, line: Mapping[str, Any]) -> None:
        from .io import append_jsonl

        append_jsonl(self.out / HISTORY_FILE, dict(line))

    def write_pareto(self, front: Sequence[Mapping[str, Any]]) -> None:
        from .io import write_json_atomic

        write_json_atomic(self.out / PARETO_FILE, [dict(r) for r in front])


def _canon(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def _short(v: Any) -> str:
    s = json.dumps(v, sort_keys=True, default=str)
    return s if len(s) <= 40 else s[:37] + "..."


# ---------------------------------------------------------------------------- the loop
@dataclass
class SearchState:
    """A snapshot for live displays (passed to `on_update`)."""

    iteration: int
    validated: int
    budget: int
    front: list[dict[str, Any]]
    hypervolume: float | None
    last: dict[str, Any] | None
    elapsed_s: float
    phase: str = "validate"


@dataclass
class SearchResult:
    config: SearchConfig
    records: list[dict[str, Any]]          # every validated subnet, in validation order
    pareto: list[dict[str, Any]]           # validated, feasible, non-dominated; with vs_full
    history: list[dict[str, Any]]
    full_model: dict[str, Any] | None
    hv_reference: HypervolumeReference | None
    out: Path | None = None
    new_evaluations: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def pick_fastest_within(self, points: float) -> dict[str, Any] | None:
        """What `hwnas export --pick 'fastest-within POINTS'` takes: the fastest front subnet within
        POINTS of the full model on the search split and (where measured) the report split; the
        full model itself when no subnet is."""
        if not self.full_model:
            return None
        return pick_from_front(self.pareto, self.full_model, points)


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
        todo = front + ([dict(full)] if full is not None and full_key not in {r["key"] for r in front} else [])
        for i, r in enumerate(todo):
            if r["key"] in old_report:
                r["report"] = old_report[r["key"]]
                continue
            if progress:
                progress(i, len(todo), "report split")
            r["report"] = report(SubnetConfig.from_dict(r["subnet"]))
            if store is not None:
                store.append_report(r["key"], r["report"])
        if full is not None:
            full = dict(full)
            full["report"] = next(r["report"] for r in todo if r["key"] == full_key)
    for r in front:
        r["vs_full"] = compare_to_full(r, full)
    result = SearchResult(config, records, front, old_history + [h for h in history if h["iteration"] not in done_iters],
                          full, hv_ref, store.out if store else None, new_total)
    if store is not None:
        store.write_pareto(front)
        from .search_report import write_report

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


# ---------------------------------------------------------------------------- synthetic objective
class SyntheticValidator:
    """A cheap stand-in for real validation (tests, benchmarks of the search itself).

    Latency is additive over kept layers (fixed cost per layer plus a width-proportional MLP
    cost); accuracy rises with the importance of the kept layers and their MLP width, with a
    deterministic per-subnet noise term. No model is involved; ``calls`` counts validations.
    """

    def __init__(self, space: SearchSpace, seed: int = 0, noise: float = 0.004):
        rng = np.random.default_rng(seed)
        n = space.num_layers
        self.space = space
        self.importance = rng.uniform(0.2, 1.0, n) * np.linspace(1.4, 0.6, n)
        if space.layer_order is not None:  # importance follows the measured ranking, roughly
            imp = np.sort(self.importance)[::-1] * rng.uniform(0.8, 1.2, n)
            self.importance = np.empty(n)
            self.importance[list(space.layer_order)] = imp
        self.layer_ms = 0.45 + rng.uniform(0, 0.05, n)
        self.mlp_ms = 0.25
        self.noise = noise
        self.calls = 0

    def __call__(self, cfg: SubnetConfig) -> dict[str, Any]:
        self.calls += 1
        kept = np.array(cfg.layers)
        wf = np.array(cfg.mlp_widths, dtype=float) / self.space.full_width
        tpot = 2.0 + float(np.sum(self.layer_ms[kept] + self.mlp_ms * wf))
        score = float(np.sum(self.importance[kept] * (0.35 + 0.65 * np.sqrt(wf)))) / float(np.sum(self.importance))
        h = int(cfg.key.split("-")[1], 16) / 0xFFFFFFFF - 0.5
        acc = 0.25 + 0.3 * score**3 + self.noise * h
        n_params = int(1e6 * (10 + sum(2 + 3 * f for f in wf)))
        return {
            "accuracy": round(acc, 6),
            "tasks": {"synthetic": round(acc, 6)},
            "tpot_ms": round(tpot, 4),
            "ttft_ms": round(tpot * 12, 4),
            "throughput_tok_s": round(8000.0 / tpot, 4),
            "n_params": n_params,
            "weight_bytes": 2 * n_params,
            "latency_source": "synthetic",
        }
