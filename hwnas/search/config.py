"""SearchConfig: what one search run is asked to do (resolved, validated, round-tripped to JSON)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple, Protocol

from hwnas.errors import SearchError
from hwnas.model.space import SubnetConfig
from hwnas.search.objectives import DEFAULT_OBJECTIVES, Constraint, check_metric, parse_objectives, ranked_objectives

STRATEGIES = ("linas", "nsga2", "random")
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
    metric: str = "acc_norm"  # what ranks the accuracy objective (objectives.SEARCH_METRICS); the CLI's default is choice_kl

    def __post_init__(self) -> None:
        object.__setattr__(self, "objectives", parse_objectives(self.objectives))
        check_metric(self.metric)
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
    def ranked(self) -> tuple[str, ...]:
        """The record fields the optimiser ranks by, one per objective: the objectives, except that a
        fidelity --metric ranks ``accuracy`` by the record's ``signal``. Fronts, hypervolume and
        predictors use these; displays, constraints and the pick rule keep ``accuracy``."""
        return ranked_objectives(self.objectives, self.metric)

    @property
    def metrics(self) -> tuple[str, ...]:
        """Everything the loop models: ranked objectives, then constraint metrics that are not among them."""
        extra = [c.metric for c in self.constraints if c.metric not in self.ranked]
        return self.ranked + tuple(dict.fromkeys(extra))

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
            "metric": self.metric,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SearchConfig":
        d = dict(d)
        d["objectives"] = tuple(d.get("objectives", DEFAULT_OBJECTIVES))
        d.setdefault("metric", "acc_norm")  # folders written before --metric existed ranked by acc_norm
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


