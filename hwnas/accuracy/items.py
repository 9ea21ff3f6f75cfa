"""Per-item results of a multiple-choice task, and what each metric makes of them.

This module sits below both `evaluate` (which scores items) and `paired` (which compares two
models item by item), so neither has to import the other.

A task's ``scoring`` says how an item's choice log-likelihoods become a score in [0, 1]:

- ``choice`` (ARC, MMLU, PIQA, BoolQ): ``acc`` = 1 when the highest log-likelihood is the gold
  choice; ``acc_norm`` the same after dividing each by the UTF-8 byte length of its choice text.
- ``acc`` (WinoGrande, TruthfulQA MC1): lm-evaluation-harness reports ``acc`` only; ``acc_norm``
  is set equal to ``acc`` so that a pick rule pairing ``acc_norm`` pairs lm-eval's metric.
  (On WinoGrande every option is followed by the same scored text, so the two coincide anyway.)
- ``mc2`` (TruthfulQA MC2): the probability mass on the true answers, exp(ll) normalised over all
  choices and summed over the true ones (lm-eval's ``process_results_mc2``). It is a probability,
  not a 0/1 hit; ``acc`` and ``acc_norm`` both name it (lm-eval calls it ``acc`` too), and paired
  comparisons pair these per-item masses.

``chance()`` is each item's expected score under a model that knows nothing: 1 / number of choices
for ``choice`` and ``acc``; (true answers) / (choices) for ``mc2`` (uniform probability).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

SCORINGS = ("choice", "acc", "mc2")


@dataclass
class TaskItems:
    """One task's per-item results: choice log-likelihoods, gold answers, choice byte lengths."""

    ids: list[str]
    golds: list[int]
    lls: list[np.ndarray]
    choice_bytes: list[np.ndarray]
    scoring: str = "choice"
    true_sets: list[tuple[int, ...]] | None = None  # mc2: the indices of every true choice, per item

    def _trues(self) -> list[tuple[int, ...]]:
        return self.true_sets if self.true_sets is not None else [(g,) for g in self.golds]

    def correct(self, metric: str = "acc_norm") -> np.ndarray:
        """Per-item score under `metric` (0/1 hits, or the true-answer probability mass for mc2)."""
        if self.scoring == "mc2":
            out = []
            for ll, true in zip(self.lls, self._trues()):
                p = np.exp(np.asarray(ll, dtype=float) - float(np.max(ll)))
                out.append(float(p[list(true)].sum() / p.sum()))
            return np.array(out)
        if metric == "acc" or self.scoring == "acc":
            return np.array([float(int(np.argmax(ll)) == g) for ll, g in zip(self.lls, self.golds)])
        return np.array([float(int(np.argmax(ll / b)) == g) for ll, g, b in zip(self.lls, self.golds, self.choice_bytes)])

    scores = correct

    def chance(self) -> np.ndarray:
        """Per-item score of a model that picks (or spreads its probability) uniformly at random."""
        return np.array([len(t) / len(ll) for ll, t in zip(self.lls, self._trues())], dtype=float)

    def probs(self) -> list[np.ndarray]:
        out = []
        for ll in self.lls:
            z = ll - ll.max()
            p = np.exp(z)
            out.append(p / p.sum())
        return out


def merge_every(first: TaskItems, rest: TaskItems, n: int) -> TaskItems:
    """Per-item results of a task scored in two parts back in the task's order: `first` holds items
    0, n, 2n, ... and `rest` the others (`TaskSuite.every`)."""
    total = len(first.ids) + len(rest.ids)
    a, b = iter(range(len(first.ids))), iter(range(len(rest.ids)))
    src = [(first, next(a)) if i % n == 0 else (rest, next(b)) for i in range(total)]
    trues = None
    if first.true_sets is not None or rest.true_sets is not None:
        trues = [p._trues()[k] for p, k in src]
    return TaskItems([p.ids[k] for p, k in src], [p.golds[k] for p, k in src], [p.lls[k] for p, k in src],
                     [p.choice_bytes[k] for p, k in src], first.scoring, trues)


def _mean_stderr(x: np.ndarray) -> float | None:
    n = len(x)
    return float(np.std(x, ddof=1) / math.sqrt(n)) if n > 1 else None


def mc_metrics(lls: Sequence[np.ndarray], golds: Sequence[int], choice_bytes: Sequence[np.ndarray], *,
               scoring: str = "choice", true_sets: Sequence[tuple[int, ...]] | None = None) -> dict:
    """acc, acc_norm and their standard errors (see the module docstring for each scoring)."""
    if not len(lls):
        return {"acc": None, "acc_norm": None, "acc_stderr": None, "acc_norm_stderr": None, "n": 0}
    it = TaskItems([str(i) for i in range(len(lls))], list(golds), list(lls), list(choice_bytes), scoring,
                   None if true_sets is None else list(true_sets))
    acc, accn = it.correct("acc"), it.correct("acc_norm")
    return {"acc": float(acc.mean()), "acc_norm": float(accn.mean()), "acc_stderr": _mean_stderr(acc),
            "acc_norm_stderr": _mean_stderr(accn), "n": int(len(acc))}
