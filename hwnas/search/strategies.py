"""Search strategies behind one ask/tell interface: LINAS (predictors + NSGA-II), plain NSGA-II, random."""
from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from hwnas.errors import SearchError
from hwnas.model.space import SearchSpace, SubnetConfig
from hwnas.search.config import Proposal, SearchConfig
from hwnas.search.objectives import OBJECTIVES
from hwnas.search.pareto import (
    HypervolumeReference,
    greedy_hypervolume_batch,
    is_feasible,
    objective_matrix,
    pareto_front,
)

log = logging.getLogger(__name__)


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

    def key_of(item):
        """Which subnet a (repaired) vector encodes: kept layers, their width genes and, with deployment
        genes, their format genes, the head and runtime genes (cheap; genes of dropped layers do not count)."""
        if isinstance(item, tuple):
            return item
        return space.genes.identity(np.rint(item.X).astype(int))

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
        from hwnas.search.predictors import fit_predictor

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
        space, objectives, cons = self.space, self.config.ranked, self.config.constraints

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

        objs, cons = self.config.ranked, self.config.constraints
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
        from pymoo.optimize import minimize

        fits = self.fit(validated)
        problem, SpaceRepair, dedup = self.surrogate_problem(fits)
        seen = {r["key"] for r in validated}
        # Start from the real front (validated, non-dominated) plus random samples.
        front = pareto_front(validated, self.config.ranked, self.config.constraints)
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
        self.problem = EncodedProblem(len(self.config.ranked), len(self.config.constraints))
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
        out = {"F": objective_matrix(recs, self.config.ranked)}
        if self.config.constraints:
            out["G"] = np.array([[c.violation(float(r[c.metric])) for c in self.config.constraints] for r in recs])
        Evaluator().eval(StaticProblem(self.problem, **out), self.pending)
        self.algorithm.tell(infills=self.pending)
        self.pending = None


def make_strategy(space: SearchSpace, config: SearchConfig, pool: Sequence[SubnetConfig] | None = None) -> Strategy:
    cls = {"linas": LinasStrategy, "nsga2": Nsga2Strategy, "random": RandomStrategy}[config.strategy]
    return cls(space, config, pool)


