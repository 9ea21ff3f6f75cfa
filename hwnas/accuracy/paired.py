"""Paired comparison of a subnet with the full model on the same items.

Two accuracies measured on different items differ by noise of about sqrt(2) x 3.4 points at
50 items; on the *same* items most of that noise cancels, because both models get the easy items
right and the hard ones wrong. So every comparison here is per item: d_i = score_sub(i) -
score_full(i), reported as points = 100 * mean(d) with the standard error of that mean and a
95% interval (normal approximation), per task and overall. "Overall" is the mean over tasks (the
search's accuracy objective), with stderr = sqrt(sum stderr_t^2) / T.

Besides 0/1 accuracy, the choice distributions are compared: KL(full || subnet) of the softmax
over each item's choice log-likelihoods. It is continuous, so it sees damage that does not (yet)
flip an answer, also on tasks where both models sit near chance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from hwnas.accuracy.chance import at_chance, chance_tests
from hwnas.accuracy.items import TaskItems

__all__ = ["PairedDiff", "TaskItems", "paired_diff", "combine", "choice_kl", "compare_items", "comparison_verdict",
           "overall_diff", "full_model_items"]

Z95 = 1.959964


@dataclass(frozen=True)
class PairedDiff:
    """Subnet minus full model, in points (percent), over `items` paired items."""

    points: float
    stderr: float
    items: int

    @property
    def ci95(self) -> tuple[float, float]:
        return (self.points - Z95 * self.stderr, self.points + Z95 * self.stderr)

    @property
    def drop(self) -> float:
        """Points lost (positive = the subnet is worse)."""
        return -self.points

    def upper_drop(self, z: float = 1.644854) -> float:
        """One-sided 95% upper bound on the drop."""
        return self.drop + z * self.stderr

    def within(self, points: float) -> bool:
        """The point estimate of the drop is at most `points`."""
        return self.drop <= points + 1e-9

    def shown_within(self, points: float) -> bool:
        """The data show the drop is at most `points` (one-sided 95% upper bound)."""
        return self.upper_drop() <= points + 1e-9

    def verdict(self, points: float) -> str:
        """A plain sentence about the claim 'within POINTS of the full model'."""
        d = f"drop {self.drop:.2f} ± {self.stderr:.2f} points ({self.items} items)"
        if self.shown_within(points):
            return f"within {points:g} point(s): shown; {d}"
        if self.within(points):
            return f"within {points:g} point(s): likely but not shown at 95%; {d}"
        return f"within {points:g} point(s): not shown; {d}"

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.ci95
        return {"points": round(self.points, 3), "stderr": round(self.stderr, 3),
                "ci95": [round(lo, 3), round(hi, 3)], "items": self.items}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PairedDiff":
        return cls(float(d["points"]), float(d["stderr"]), int(d["items"]))

    def __str__(self) -> str:
        return f"{self.points:+.2f} ± {self.stderr:.2f} pts (n={self.items})"


def paired_diff(sub: Sequence[float], full: Sequence[float]) -> PairedDiff:
    """Mean paired difference of two per-item score vectors (0/1 or any), in points."""
    a = np.asarray(sub, dtype=float)
    b = np.asarray(full, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same items: {a.shape} vs {b.shape}")
    n = len(a)
    if n == 0:
        return PairedDiff(0.0, float("nan"), 0)
    d = 100.0 * (a - b)
    se = float(np.std(d, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return PairedDiff(float(d.mean()), se, n)


def combine(diffs: Sequence[PairedDiff]) -> PairedDiff:
    """Mean over tasks (each task weighs the same), stderr of that mean of independent estimates."""
    diffs = [d for d in diffs if d.items]
    if not diffs:
        return PairedDiff(0.0, float("nan"), 0)
    t = len(diffs)
    return PairedDiff(sum(d.points for d in diffs) / t, math.sqrt(sum(d.stderr ** 2 for d in diffs)) / t,
                      sum(d.items for d in diffs))


# ---------------------------------------------------------------------------- per-item scores
# TaskItems lives in hwnas.accuracy.items (below evaluate and paired); re-exported here.
def choice_kl(sub: TaskItems, full: TaskItems) -> np.ndarray:
    """Per item KL(full || subnet) of the softmax over choice log-likelihoods, in nats."""
    out = []
    for p, q in zip(full.probs(), sub.probs()):
        out.append(float(np.sum(p * (np.log(np.maximum(p, 1e-300)) - np.log(np.maximum(q, 1e-300))))))
    return np.array(out)


def compare_items(sub: Mapping[str, TaskItems], full: Mapping[str, TaskItems], metric: str = "acc_norm", *,
                  chance_tasks: Sequence[str] | None = None, include_chance: bool = False) -> dict[str, Any]:
    """Paired accuracy difference and choice KL per task and overall (mean over tasks).

    ``overall`` leaves out the tasks on which the full model is not above chance (`chance_tasks`,
    else tested on these items by `hwnas.accuracy.chance`) unless `include_chance`: agreeing with
    a model that guesses says nothing. When no task is above chance, ``overall`` is the mean over
    all tasks and ``no_task_above_chance`` says so."""
    tasks: dict[str, Any] = {}
    diffs: dict[str, PairedDiff] = {}
    kls = []
    tests = chance_tests({n: full[n] for n in sub}, metric)
    for name, s in sub.items():
        f = full[name]
        if s.ids != f.ids:
            raise ValueError(f"task {name}: subnet and full model were scored on different items")
        d = paired_diff(s.correct(metric), f.correct(metric))
        kl = choice_kl(s, f)
        kl_se = float(np.std(kl, ddof=1) / math.sqrt(len(kl))) if len(kl) > 1 else float("nan")
        tasks[name] = {**d.to_dict(), "metric": metric,
                       "subnet": round(100 * float(s.correct(metric).mean()), 3) if s.ids else None,
                       "full": round(100 * float(f.correct(metric).mean()), 3) if f.ids else None,
                       "choice_kl": round(float(kl.mean()), 5) if len(kl) else None,
                       "choice_kl_stderr": round(kl_se, 5),
                       "chance": tests[name].to_dict()}
        diffs[name] = d
        kls.append(kl)
    chance = [n for n in (at_chance(tests) if chance_tasks is None else chance_tasks) if n in tasks]
    counted = [n for n in tasks if include_chance or n not in chance]
    none_above = not counted
    overall = combine([diffs[n] for n in (counted or list(tasks))])
    allkl = np.concatenate(kls) if kls else np.zeros(0)
    return {"metric": metric, "tasks": tasks, "overall": overall.to_dict(),
            "overall_tasks": counted or list(tasks), "chance_tasks": chance, "include_chance": include_chance,
            "no_task_above_chance": bool(none_above and tasks),
            "choice_kl": round(float(np.mean([k.mean() for k in kls])), 5) if kls else None,
            "choice_kl_items": int(len(allkl))}


def comparison_verdict(comparison: Mapping[str, Any], points: float) -> str:
    """The 'within POINTS' sentence of a `compare_items` result, honest about chance-level tasks:
    none is claimed when the full model is above chance on no task, and the tasks left out are named."""
    chance = list(comparison.get("chance_tasks") or [])
    if comparison.get("no_task_above_chance") and not comparison.get("include_chance"):
        return (f"within {points:g} point(s): no claim; the full model is not above chance on "
                f"{', '.join(chance) or 'any task'}, so agreeing with it says nothing about accuracy")
    v = overall_diff(comparison).verdict(points)
    left_out = [t for t in chance if t not in (comparison.get("overall_tasks") or [])]
    if left_out:
        v += f"; left out (full model not above chance): {', '.join(left_out)}"
    return v


def overall_diff(comparison: Mapping[str, Any]) -> PairedDiff:
    """The overall PairedDiff of a `compare_items` result (or a stored copy of one)."""
    return PairedDiff.from_dict(comparison["overall"])


# ---------------------------------------------------------------------------- full-model cache
def full_model_items(suite: Any, model_or_supernet: Any, model_key: str, *, precision: str = "auto",
                     cache_dir: Any = None, progress: Any = None,
                     scored: Mapping[str, TaskItems] | None = None) -> dict[str, TaskItems]:
    """The full model's per-item results on `suite`, computed once per (model, precision, task, item).

    Stored per task as JSON {item id: [choice log-likelihoods]} under the hwnas cache; items
    missing from the cache trigger one scoring of the suite, whose results are merged in.
    `scored`: the full model's results on this suite when the caller has just computed them.
    """
    import json

    from hwnas.errors import OutputError
    from hwnas.io import write_json_atomic
    from hwnas.model.loading import cache_dir as default_cache
    from hwnas.precision import resolve_precision

    prec = resolve_precision(precision)
    root = (cache_dir or default_cache()) / "full-model-items" / f"{model_key}-{prec}-v1"
    tasks = {name: d for name, d in suite.data.items() if d.requests is not None}
    stored: dict[str, dict[str, list[float]]] = {}
    for name in tasks:
        f = root / f"{name}.json"
        try:
            stored[name] = json.loads(f.read_text()) if f.is_file() else {}
        except (OSError, json.JSONDecodeError):
            stored[name] = {}
    if any(r.id not in stored[name] for name, d in tasks.items() for r in d.requests):
        fresh = scored or suite.items(model_or_supernet, subnet=None, precision=prec, progress=progress)
        for name, it in fresh.items():
            stored[name].update({i: [float(x) for x in ll] for i, ll in zip(it.ids, it.lls)})
            try:
                write_json_atomic(root / f"{name}.json", stored[name])
            except (OSError, OutputError):  # a cache is an optimisation only
                pass
    lls = {name: [np.array(stored[name][r.id]) for r in d.requests] for name, d in tasks.items()}
    return suite._task_items(lls)
