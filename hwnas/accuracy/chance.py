"""Is the full model above chance on a task? If not, "the subnet is as accurate" says nothing.

A 135M model answers MMLU's four letters about as well as a die would. Two such models "agree"
within a point because both are guessing, so a task where the full model is not significantly
above chance cannot support an equal-accuracy claim, and the pick rule leaves it out unless the
user asks for it (``--include-chance-tasks``).

The test is paired with chance item by item: d_i = score_full(i) - chance(i) (chance(i) = 1 /
choices, or true answers / choices for TruthfulQA MC2), and the task is above chance when the
one-sided 95% lower bound mean(d) - 1.645 * stderr(d) is above 0. Per-item chance makes tasks
whose items have different numbers of choices (ARC has 3 to 5) exact.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

Z_ONE_SIDED_95 = 1.644854


@dataclass(frozen=True)
class ChanceTest:
    """The full model's score on a task against the task's chance rate (both in [0, 1])."""

    task: str
    metric: str
    score: float
    chance: float
    stderr: float
    items: int

    @property
    def points_above(self) -> float:
        """Percentage points above chance (the point estimate)."""
        return 100.0 * (self.score - self.chance)

    @property
    def lower_bound(self) -> float:
        """One-sided 95% lower bound of (score - chance), in points."""
        se = self.stderr if self.stderr == self.stderr else float("inf")
        return self.points_above - Z_ONE_SIDED_95 * 100.0 * se

    @property
    def above(self) -> bool:
        """Whether the data show the model is above chance (lower bound > 0)."""
        return self.items > 1 and self.lower_bound > 0.0

    def describe(self) -> str:
        return (f"{self.task}: full model {100 * self.score:.1f}% {self.metric} vs chance {100 * self.chance:.1f}% "
                f"({self.points_above:+.1f} ± {100 * self.stderr:.1f} points, {self.items} items): "
                + ("above chance" if self.above else "not above chance at 95%"))

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "metric": self.metric, "score": round(self.score, 6), "chance": round(self.chance, 6),
                "stderr": round(self.stderr, 6) if self.stderr == self.stderr else None, "items": self.items,
                "points_above": round(self.points_above, 3), "lower_bound_points": round(self.lower_bound, 3),
                "above_chance": self.above}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ChanceTest":
        se = d.get("stderr")
        return cls(str(d["task"]), str(d["metric"]), float(d["score"]), float(d["chance"]),
                   float("nan") if se is None else float(se), int(d["items"]))


def chance_test(task: str, scores: Sequence[float], chance: Sequence[float], metric: str = "acc_norm") -> ChanceTest:
    """Test per-item `scores` of the full model against per-item `chance` rates (paired)."""
    s = np.asarray(scores, dtype=float)
    c = np.asarray(chance, dtype=float)
    if s.shape != c.shape:
        raise ValueError(f"scores and chance rates need one value per item: {s.shape} vs {c.shape}")
    n = len(s)
    if n == 0:
        return ChanceTest(task, metric, float("nan"), float("nan"), float("nan"), 0)
    d = s - c
    se = float(np.std(d, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return ChanceTest(task, metric, float(s.mean()), float(c.mean()), se, n)


def chance_tests(full_items: Mapping[str, Any], metric: str = "acc_norm") -> dict[str, ChanceTest]:
    """A `ChanceTest` per task of the full model's per-item results (`TaskItems` by task)."""
    return {name: chance_test(name, it.correct(metric), it.chance(), metric) for name, it in full_items.items()}


def scored_tasks(names: Sequence[str], tests: Mapping[str, ChanceTest]) -> tuple[list[str], list[str]]:
    """(tasks to score, tasks left unscored) for a candidate whose full model was tested as `tests`: a task
    where the full model is not above chance supports no claim, so it is left out, unless no task is
    above chance (then all are scored and shown at chance)."""
    above = [n for n in names if n in tests and tests[n].above]
    if not above or len(above) == len(names):
        return list(names), []
    return above, [n for n in names if n not in above]


def at_chance(tests: Mapping[str, ChanceTest]) -> list[str]:
    """The tasks on which the full model is not shown to be above chance."""
    return [name for name, t in tests.items() if not t.above]
