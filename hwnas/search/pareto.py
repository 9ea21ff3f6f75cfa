"""Pareto fronts and hypervolume over validated records (normalised by a fixed reference)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from hwnas.search.objectives import OBJECTIVES, Constraint

HV_REFERENCE = 1.1  # in normalised units: 0 = best of (largest, smallest), 1 = worst of them
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


