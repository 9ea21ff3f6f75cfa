"""The paper's per-task table on the default model: for each task, the fastest subnet with no
significant accuracy drop, picked on the select split and quoted on the holdout split (paired).

The paper (LLaMA-NAS / LINAS) reports ARC, MMLU, TruthfulQA and WinoGrande, each with its own
best subnet. This bench reuses one search's validated subnets and their measured latency (default:
bench/results/search_main_job, 24 subnets measured on this host; its Pareto front and the full
model were re-measured there in one interleaved session) instead of searching once per task:

1. candidates: the search's Pareto front plus the full model, with their re-measured TPOT
   (search-time TPOT where there is no re-measurement), parameter count and weight bytes;
2. every candidate is scored (as `hwnas search` scores it: through the supernet, with training-
   free recovery) on each task's **select** split (`--select-limit` items per task) and its
   **holdout** split (`--holdout-limit` items per task), paired with the full model on the same items;
3. per task: is the full model above chance there (one-sided 95%, `hwnas.accuracy.chance`, on the
   select split)? If not, no subnet can be shown to keep its accuracy: the row says so, the full
   model is kept, and the candidates are not scored on that task at all (saves most of the time on
   a 135M model); else the pick is the fastest candidate whose select-split paired drop is at most `--points`
   (the `fastest-within` rule of `hwnas export`, point estimate), and the holdout split, which took
   no part in the pick, gives the figure quoted with ± stderr and the item count;
4. a last row does the same on the mean over the tasks above chance (today's multi-task pick).

The metric per task is the one lm-eval reports: acc_norm for ARC and MMLU, acc for WinoGrande and
TruthfulQA MC1, the true-answer probability mass for TruthfulQA MC2 (`hwnas.accuracy.items`).

    flock /tmp/hwnas-heavy.lock .venv/bin/python bench/paper_tasks_bench.py \\
        [--search bench/results/search_main_job] [--select-limit 150] [--holdout-limit 150] \\
        [--out bench/results/paper_tasks.json]   (also writes the .md next to it)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TASKS = ("arc_easy", "arc_challenge", "mmlu", "truthfulqa_mc1", "truthfulqa_mc2", "winogrande")
METRIC = "acc_norm"  # acc_norm is acc on WinoGrande / MC1 and the probability mass on MC2 (items.py)


def load_candidates(search: Path) -> tuple[dict, list[dict]]:
    """(full model record, Pareto front records), each with the TPOT to rank by (re-measured where available)."""
    records = [json.loads(line) for line in (search / "candidates.jsonl").read_text().splitlines() if line.strip()]
    front_keys = [r["key"] for r in json.loads((search / "pareto.json").read_text())]
    remeasured = json.loads((search / "remeasured.json").read_text()) if (search / "remeasured.json").is_file() else {}
    full = next(r for r in records if r.get("full_model"))
    front = [r for r in records if r["key"] in front_keys and not r.get("full_model")]
    for r in [full, *front]:
        again = remeasured.get(r["key"]) or {}
        r["tpot_final_ms"] = again.get("tpot_ms", r["tpot_ms"])
        r["tpot_basis"] = "re-measured (interleaved session)" if again else "search-time measurement"
    return full, sorted(front, key=lambda r: r["tpot_final_ms"])


def score(supernet, suite, cfg, reference_key: str) -> dict:
    """Per task: `TaskItems` of `cfg` on `suite` (None = the full model, from its per-item cache)."""
    from hwnas.accuracy.paired import full_model_items

    return full_model_items(suite, supernet, reference_key) if cfg is None else suite.items(supernet, subnet=cfg)


def pick_for_task(task: str, full: dict, cands: list[dict], items: dict, points: float, include_chance: bool) -> dict:
    """The per-task pick on the select split (its holdout quote is added by `quote_row`)."""
    from hwnas.accuracy.chance import chance_test
    from hwnas.accuracy.paired import paired_diff

    f_sel = items[full["key"]]["select"][task]
    chance = chance_test(task, f_sel.correct(METRIC), f_sel.chance(), METRIC)
    row = {"task": task, "select_items": len(f_sel.ids),
           "full_select": round(100 * float(f_sel.correct(METRIC).mean()), 2),
           "chance": chance.to_dict(), "candidates": []}
    for c in cands:
        s = paired_diff(items[c["key"]]["select"][task].correct(METRIC), f_sel.correct(METRIC))
        row["candidates"].append({"key": c["key"], "select": s.to_dict()})
    pick = None
    if chance.above or include_chance:
        for c, rc in zip(cands, row["candidates"]):  # fastest first
            if -rc["select"]["points"] <= points + 1e-9:
                pick = c
                break
    row["pick_key"] = None if pick is None else pick["key"]
    if not (chance.above or include_chance):
        row["no_claim"] = "the full model is not above chance on this task: no subnet can be shown to keep its accuracy"
    return row


def quote_row(row: dict, full: dict, cands: list[dict], items: dict) -> dict:
    """Add the pick's size, speed and holdout-split paired difference to a row."""
    key = row.pop("pick_key")
    pick = next((c for c in cands if c["key"] == key), None)
    tasks = row.get("tasks") or [row["task"]]
    if "tasks" not in row and row["task"] in items[full["key"]]["holdout"]:
        f_hold = items[full["key"]]["holdout"][row["task"]]
        row["holdout_items"] = len(f_hold.ids)
        row["full_holdout"] = round(100 * float(f_hold.correct(METRIC).mean()), 2)
    row["pick"] = _quote(pick, full, items, tasks)
    return row


def _quote(pick: dict | None, full: dict, items: dict, tasks: list[str]) -> dict:
    """The pick's size and speed relative to the full model, and its holdout-split paired difference
    (the mean over `tasks` when there are several)."""
    from hwnas.accuracy.paired import combine, paired_diff

    if pick is None:
        return {"key": full["key"], "description": "the full model (no subnet qualifies)", "full_model": True}
    hold = combine([paired_diff(items[pick["key"]]["holdout"][t].correct(METRIC),
                                items[full["key"]]["holdout"][t].correct(METRIC)) for t in tasks])
    lo, hi = hold.ci95
    return {"key": pick["key"], "description": pick["description"], "full_model": False,
            "n_params": pick["n_params"], "params_fraction": round(pick["n_params"] / full["n_params"], 4),
            "weight_bytes": pick["weight_bytes"], "tpot_ms": pick["tpot_final_ms"],
            "tpot_speedup": round(full["tpot_final_ms"] / pick["tpot_final_ms"], 3), "tpot_basis": pick["tpot_basis"],
            "holdout": hold.to_dict(), "holdout_significant_drop": bool(hi < 0)}


def mean_row(full: dict, cands: list[dict], items: dict, tasks: list[str], points: float) -> dict:
    """Today's multi-task pick: the paired mean over `tasks` (those above chance)."""
    from hwnas.accuracy.paired import combine, paired_diff

    row = {"task": "mean of tasks above chance", "tasks": tasks, "candidates": []}
    pick = None
    for c in cands:
        s = combine([paired_diff(items[c["key"]]["select"][t].correct(METRIC),
                                 items[full["key"]]["select"][t].correct(METRIC)) for t in tasks])
        row["candidates"].append({"key": c["key"], "select": s.to_dict()})
        if pick is None and tasks and -s.points <= points + 1e-9:  # no task above chance: no claim, no pick
            pick = c
    row["pick_key"] = None if pick is None else pick["key"]
    return row


def markdown(res: dict) -> str:
    lines = ["# The paper's tasks, one pick per task (default model)", "",
             f"Command: `{res['command']}`. Candidates: the Pareto front of `{res['search']}` "
             f"({len(res['candidates'])} subnets) and the full model; TPOT {res['candidates'][0]['tpot_basis'] if res['candidates'] else ''}. "
             f"Pick: the fastest candidate whose paired drop on the task's **select** split is at most {res['points']:g} "
             f"point(s); quoted on the **holdout** split (paired with the full model, ± stderr). Items per task: up to "
             f"{res['select_limit']} select, {res['holdout_limit']} holdout (counts below). Metric: "
             "acc_norm (ARC, MMLU), acc (WinoGrande, TruthfulQA MC1), true-answer probability mass (TruthfulQA MC2). "
             f"Host shared with other jobs (load average {', '.join(f'{x:.1f}' for x in res['load_average'])}).", "",
             "| task | full model (select / holdout, %; holdout only where a pick is possible) | vs chance | pick | params | TPOT speed-up | holdout Δ (pts) | items (select / holdout) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        p = r["pick"]
        ch = r.get("chance")
        vs = ("-" if ch is None else (f"{ch['points_above']:+.1f} ± {100 * ch['stderr']:.1f} pts: "
                                      + ("above" if ch["above_chance"] else "**not above chance**")))
        full_cell = (f"{r['full_select']:.1f} / " + (f"{r['full_holdout']:.1f}" if "full_holdout" in r else "-")
                     if "full_select" in r else "-")
        items_cell = (f"{r['select_items']} / {r.get('holdout_items', '-')}" if "select_items" in r else "-")
        if p["full_model"]:
            pick = "full model" + (" (no claim: at chance)" if r.get("no_claim") else " (no subnet qualifies)")
            lines.append(f"| {r['task']} | {full_cell} | {vs} | {pick} | 100% | 1.00x | - | {items_cell} |")
        else:
            h = p["holdout"]
            sig = " (significant drop)" if p["holdout_significant_drop"] else ""
            lines.append(f"| {r['task']} | {full_cell} | {vs} | `{p['key']}` ({p['description']}) | "
                         f"{100 * p['params_fraction']:.0f}% | {p['tpot_speedup']:.2f}x | "
                         f"{h['points']:+.2f} ± {h['stderr']:.2f}{sig} | {items_cell} |")
    lines += ["", "Candidates, fastest first (TPOT ms, params), and their select-split paired Δ per task:", "",
              "| subnet | TPOT ms | params | " + " | ".join(r["task"] for r in res["rows"]) + " |",
              "|---|---|---|" + "---|" * len(res["rows"])]
    for c in res["candidates"]:
        cells = []
        for r in res["rows"]:
            d = next((x["select"] for x in r["candidates"] if x["key"] == c["key"]), None)
            cells.append("not scored (at chance)" if d is None else f"{d['points']:+.1f} ± {d['stderr']:.1f}")
        lines.append(f"| `{c['key']}` ({c['description']}) | {c['tpot_ms']:.2f} | {c['n_params'] / 1e6:.1f}M | "
                     + " | ".join(cells) + " |")
    lines += ["", f"Full model: `{res['full']['key']}`, TPOT {res['full']['tpot_ms']:.2f} ms, "
              f"{res['full']['n_params'] / 1e6:.1f}M parameters. Scoring: {res['scoring']}. Took {res['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--search", default=str(ROOT / "bench/results/search_main_job"))
    ap.add_argument("--model", default="default")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--select-limit", type=int, default=150)
    ap.add_argument("--holdout-limit", type=int, default=150)
    ap.add_argument("--points", type=float, default=1.0)
    ap.add_argument("--max-candidates", type=int, default=None, help="only the N fastest front subnets (smoke tests)")
    ap.add_argument("--keys", default=None, help="comma-separated front subnet keys to use (default: the whole front)")
    ap.add_argument("--include-chance-tasks", action="store_true")
    ap.add_argument("--no-recovery", action="store_true")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(ROOT / "bench/results/paper_tasks.json"))
    args = ap.parse_args()

    from hwnas.accuracy.evaluate import TaskSuite
    from hwnas.io import write_json_atomic, write_text_atomic
    from hwnas.model.space import SubnetConfig
    from hwnas.model.supernet import load_supernet

    t0 = time.perf_counter()
    tasks = [t for t in args.tasks.split(",") if t]
    search = Path(args.search)
    full, cands = load_candidates(search)
    if args.keys:
        want = args.keys.split(",")
        missing = [k for k in want if k not in {c["key"] for c in cands}]
        if missing:
            raise SystemExit(f"--keys: {', '.join(missing)} not on the Pareto front of {search}")
        cands = [c for c in cands if c["key"] in want]
    cands = cands[: args.max_candidates] if args.max_candidates else cands
    loaded, supernet = load_supernet(args.model)
    print(f"[{time.perf_counter() - t0:.0f} s] supernet loaded", flush=True)
    if not args.no_recovery:
        from hwnas.model.recovery import make_recoverer

        supernet.recoverer = make_recoverer(supernet, loaded.tokenizer)
    suites = {split: TaskSuite(loaded.tokenizer, tasks, split=split, limit=lim, data_dir=args.data_dir)
              for split, lim in (("select", args.select_limit), ("holdout", args.holdout_limit))}
    print(f"[{time.perf_counter() - t0:.0f} s] items: " + ", ".join(f"{k} {v.describe()}" for k, v in suites.items()),
          flush=True)
    ref = loaded.source.content_sha256()[:16]
    items = {full["key"]: {"select": score(supernet, suites["select"], None, ref)}}
    print(f"[{time.perf_counter() - t0:.0f} s] full model scored on the select split", flush=True)
    # 1. chance level first: a task the full model is not above chance on gets no pick, so its
    #    candidates need not be scored (unless --include-chance-tasks)
    from hwnas.accuracy.chance import chance_test

    chance = {t: chance_test(t, f.correct(METRIC), f.chance(), METRIC) for t, f in items[full["key"]]["select"].items()}
    scored = [t for t in tasks if chance[t].above or args.include_chance_tasks]
    print(f"[{time.perf_counter() - t0:.0f} s] " + "; ".join(chance[t].describe() for t in tasks), flush=True)
    cand_suites = {split: TaskSuite(loaded.tokenizer, scored, split=split, limit=suites[split].limit,
                                    data_dir=args.data_dir) for split in suites} if scored else {}
    # the holdout split quotes picks only, so the full model is scored there on the tasks that can have one
    items[full["key"]]["holdout"] = score(supernet, cand_suites["holdout"], None, ref) if scored else {}
    timing = {}
    for c in cands:  # 2. every candidate on the select split of the tasks that can support a claim
        t1 = time.perf_counter()
        items[c["key"]] = {"select": score(supernet, cand_suites["select"], SubnetConfig.from_dict(c["subnet"]), ref)
                           if scored else {}}
        timing[c["key"]] = round(time.perf_counter() - t1, 1)
        print(f"[{time.perf_counter() - t0:.0f} s] select split: {c['key']} in {timing[c['key']]} s", flush=True)
    rows = [pick_for_task(t, full, cands if t in scored else [], items, args.points, args.include_chance_tasks)
            for t in tasks]
    above = [r["task"] for r in rows if r["chance"]["above_chance"]]
    rows.append(mean_row(full, cands, items, above, args.points))
    for c in cands:  # 3. the holdout split only for the picks: it quotes them, it never picks
        if any(r["pick_key"] == c["key"] for r in rows):
            t1 = time.perf_counter()
            items[c["key"]]["holdout"] = score(supernet, cand_suites["holdout"], SubnetConfig.from_dict(c["subnet"]), ref)
            print(f"[{time.perf_counter() - t0:.0f} s] holdout split: {c['key']} in {time.perf_counter() - t1:.0f} s",
                  flush=True)
    rows = [quote_row(r, full, cands, items) for r in rows]
    res = {
        "command": ".venv/bin/python bench/paper_tasks_bench.py " + " ".join(sys.argv[1:]),
        "search": str(search.relative_to(ROOT)) if search.is_relative_to(ROOT) else str(search),
        "model": loaded.source.to_dict(), "tasks": tasks, "metric_name": METRIC,
        "select_limit": args.select_limit, "holdout_limit": args.holdout_limit, "points": args.points,
        "include_chance_tasks": args.include_chance_tasks,
        "scoring": ("through the supernet with training-free recovery (as `hwnas search` scores)"
                    if not args.no_recovery else "through the supernet, no recovery"),
        "full": {k: full[k] for k in ("key", "description", "n_params", "weight_bytes")} | {"tpot_ms": full["tpot_final_ms"]},
        "candidates": [{k: c[k] for k in ("key", "description", "n_params", "weight_bytes", "tpot_basis")}
                       | {"tpot_ms": c["tpot_final_ms"], "score_seconds": timing[c["key"]]} for c in cands],
        "rows": rows, "seconds": round(time.perf_counter() - t0, 1), "load_average": list(os.getloadavg()),
    }
    out = Path(args.out)
    write_json_atomic(out, res)
    write_text_atomic(out.with_suffix(".md"), markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
