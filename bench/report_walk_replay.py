"""Replays the report walk (`hwnas.search.picking.evaluate_reports`) of a finished search on its own
records with the current code: which front records it would screen for generation and score on the report
split, from the screens and report scorings the run saved (nothing is scored again), and the screen seconds
that saves. It shows what a change to the walk's rules does on a real run without running the search again.

    .venv/bin/python bench/report_walk_replay.py [--search bench/results/demo_cold_screen_epyc] \\
        [--out bench/results/report_walk_replay.json]

The folder needs pareto.json, candidates.jsonl, report.jsonl, generation_screen.jsonl and config.json
(bench/demo_bench.sh keeps them). A record the current rules would screen or score but the run did not
is an error: the replay cannot invent its result.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--search", type=Path, default=ROOT / "bench" / "results" / "demo_cold_screen_epyc")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "report_walk_replay.json")
    args = ap.parse_args()
    from hwnas.io import read_jsonl, write_json_atomic
    from hwnas.search.picking import evaluate_reports, pick_from_front

    d = args.search
    metric = json.loads((d / "config.json").read_text())["metric"]
    front = json.loads((d / "pareto.json").read_text())
    was = {r["key"]: ("scored" if r.get("report") else "skipped") for r in front}
    for r in front:
        for k in ("report", "report_skipped", "generation_screen", "vs_full"):
            r.pop(k, None)
    full = next(r for r in read_jsonl(d / "candidates.jsonl") if r.get("full_model"))
    reports = {x["key"]: x["report"] for x in read_jsonl(d / "report.jsonl")}
    screens = {x["key"]: x["screen"] for x in read_jsonl(d / "generation_screen.jsonl")}
    screened, scored = [], []

    def screen(cfg):
        if cfg.key not in screens:
            raise SystemExit(f"the current walk screens {cfg.key}, which the run did not: cannot replay")
        screened.append(cfg.key)
        return screens[cfg.key]

    def report(cfg):
        if cfg.key not in reports:
            raise SystemExit(f"the current walk scores {cfg.key}, which the run did not: cannot replay")
        scored.append(cfg.key)
        return reports[cfg.key]

    full = dict(full)
    evaluate_reports(front, full, report, known={}, metric=metric, screen=screen)
    pick = pick_from_front(front, full, 1.0)
    doc = {
        "search": str(d.relative_to(ROOT)) if d.is_relative_to(ROOT) else str(d), "metric": metric,
        "run": {"screened": sorted(screens), "scored": sorted(reports),
                "screen_s": round(sum(float(s.get("seconds") or 0) for s in screens.values()), 1)},
        "replay": {"screened": screened, "scored": scored,
                   "screen_s": round(sum(float(screens[k].get("seconds") or 0) for k in screened), 1)},
        "pick_fastest_within_1": pick["key"] if pick else None,
        "skipped_now": {r["key"]: r["report_skipped"] for r in front if r.get("report_skipped")},
        "run_outcome": was,
    }
    write_json_atomic(args.out, doc)
    print(json.dumps({k: doc[k] for k in ("run", "replay", "pick_fastest_within_1")}, indent=1))


if __name__ == "__main__":
    main()
