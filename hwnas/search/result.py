"""What a search gives back: live state snapshots and the final result (records, front, full model)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwnas.search.config import SearchConfig
from hwnas.search.pareto import HypervolumeReference
from hwnas.search.picking import pick_from_front


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
