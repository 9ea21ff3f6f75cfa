"""Rewrite summary.md and pareto.png of committed search folders with the current report code.

Nothing is measured again: records, front, report-split accuracy and re-measured timings are
read from the folder's own files, so only the presentation (e.g. the pick rule the summary
applies) changes. Other files are left as they are.

    python bench/regenerate_summaries.py bench/results/search_untrained bench/results/search_trained ...
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from hwnas.model.space import SearchSpace
from hwnas.search.config import SearchConfig
from hwnas.search.pareto import HypervolumeReference
from hwnas.search.report import write_report
from hwnas.search.result import SearchResult
from hwnas.search.store import SearchStore


def regenerate(folder: Path) -> None:
    store = SearchStore(folder)
    doc = store.read_config()
    config = SearchConfig.from_dict(doc["search"])
    records = store.load_records()
    front = json.loads((folder / "pareto.json").read_text(encoding="utf-8"))
    history = store.load_history()
    reports, remeasured = store.load_reports(), store.load_remeasured()
    full = next((dict(r) for r in records if r.get("full_model")), None)
    if full is not None:
        if full["key"] in remeasured:
            full["remeasured"] = remeasured[full["key"]]
        if full["key"] in reports:
            full["report"] = reports[full["key"]]
    space = SearchSpace.from_dict(doc["space"])
    small = next((r for r in records if r["key"] == space.smallest().key), None)
    hv = HypervolumeReference.from_extremes(config.ranked, [full, small]) if full and small else None  # as the loop
    write_report(SearchResult(config, records, front, history, full, hv, folder), folder)
    print(f"rewrote {folder}/summary.md and pareto.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    for f in ap.parse_args().folders:
        regenerate(f)


if __name__ == "__main__":
    main()
