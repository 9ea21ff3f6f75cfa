"""Search objectives and constraints: names, directions, parsing."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from hwnas.errors import SearchError

MAX_OBJECTIVES = 3

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
        # Not named by users: what the accuracy objective is ranked by under a fidelity metric (below).
        Objective("signal", True, "fidelity signal, -ln(1 + KL) (higher is better)"),
    )
}
SIGNAL = "signal"
SEARCH_OBJECTIVES = tuple(o for o in OBJECTIVES if o != SIGNAL)  # what --objectives accepts
ALIASES = {"acc": "accuracy", "tpot": "tpot_ms", "ttft": "ttft_ms", "throughput": "throughput_tok_s",
           "params": "n_params", "size": "weight_bytes"}
DEFAULT_OBJECTIVES = ("accuracy", "tpot_ms")

# What ranks the accuracy objective (`hwnas search --metric`). Accuracy metrics rank it by the record's
# ``accuracy`` (mean 0/1 accuracy over the tasks); fidelity metrics by its ``signal``, -ln(1 + KL) to the
# full model (continuous in the damage a subnet does; higher is better), while ``accuracy`` stays the
# task accuracy for display, constraints and the pick rule.
ACCURACY_METRICS = ("acc_norm", "acc")
FIDELITY_METRICS = ("choice_kl", "token_kl")
SEARCH_METRICS = ACCURACY_METRICS + FIDELITY_METRICS


def check_metric(metric: str) -> str:
    if metric not in SEARCH_METRICS:
        raise SearchError(f"unknown --metric {metric!r}; accepted: {', '.join(SEARCH_METRICS)}")
    return metric


def ranked_objectives(objectives: Sequence[str], metric: str) -> tuple[str, ...]:
    """The record fields the optimiser reads: `objectives`, with ``accuracy`` read from ``signal``
    when a fidelity metric ranks it."""
    check_metric(metric)
    if metric not in FIDELITY_METRICS:
        return tuple(objectives)
    return tuple(SIGNAL if o == "accuracy" else o for o in objectives)


def fidelity_signal(kl: float) -> float:
    """-ln(1 + KL): 0 for the full model, lower the more a subnet diverges; the log tames the heavy
    tail of badly damaged subnets so the predictors and the hypervolume see the range that matters."""
    return 0.0 - math.log1p(max(float(kl), 0.0))  # 0.0 - : no -0.0 in the files


def parse_objectives(spec: str | Sequence[str]) -> tuple[str, ...]:
    """'accuracy,tpot_ms' -> ('accuracy', 'tpot_ms'); 2..3 distinct known objectives."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    out: list[str] = []
    for s in items:
        name = ALIASES.get(s, s)
        if name not in SEARCH_OBJECTIVES:
            raise SearchError(f"unknown objective {s!r}; accepted: {', '.join(SEARCH_OBJECTIVES)}")
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


