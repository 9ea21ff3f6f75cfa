"""Compare the fronts of several `hwnas search` output folders in one plot and one table.

Made for "search on the trained supernet vs on the untrained one at the same budget" (issue 7),
but works for any folders: each is read from its own files (candidates.jsonl, pareto.json,
report.jsonl), nothing is re-measured. Hypervolumes use the search's own normalisation
(`hwnas.search.pareto.HypervolumeReference`), fitted once over the records of all runs, so they can be
compared across runs; each run's own history.jsonl uses its own reference and cannot.

Usage:
  .venv/bin/python bench/compare_searches.py DIR[=LABEL] DIR[=LABEL] ... [--out bench/results/trained_vs_untrained]
Writes OUT.png, OUT.md and OUT.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hwnas.io import read_jsonl, write_json_atomic, write_text_atomic  # noqa: E402

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]


def load_run(folder: Path, label: str) -> dict:
    """Validated records, the Pareto front (with report-split accuracy where the search wrote it), the full model."""
    recs = list(read_jsonl(folder / "candidates.jsonl"))
    front_keys = [r["key"] for r in json.loads((folder / "pareto.json").read_text())]
    report = {r["key"]: r["report"]["accuracy"] for r in read_jsonl(folder / "report.jsonl")} \
        if (folder / "report.jsonl").is_file() else {}
    by_key = {r["key"]: r for r in recs}
    front = sorted((by_key[k] for k in front_keys), key=lambda r: r["tpot_ms"])
    full = next((r for r in recs if r.get("full_model")), None)
    config = json.loads((folder / "config.json").read_text())
    return {"label": label, "folder": str(folder), "records": recs, "front": front, "full": full, "report": report,
            "model": config.get("model"), "evaluations": len(recs)}


def export_pick(run: dict, points: float) -> dict | None:
    """What `hwnas export --pick 'fastest-within POINTS'` would take from this run (both splits)."""
    from hwnas.search.picking import pick_from_front

    def with_report(r: dict) -> dict:
        return dict(r, report={"accuracy": run["report"][r["key"]]}) if r["key"] in run["report"] else dict(r)

    full = with_report(run["full"]) if run["full"] else None
    return pick_from_front([with_report(r) for r in run["front"]], full, points)


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=110)
    for run, c in zip(runs, COLORS):
        recs = run["records"]
        ax.scatter([r["tpot_ms"] for r in recs], [100 * r["accuracy"] for r in recs], s=14, c=c, alpha=0.25)
        f = run["front"]
        ax.step([r["tpot_ms"] for r in f], [100 * r["accuracy"] for r in f], where="post", c=c, lw=1.3)
        ax.scatter([r["tpot_ms"] for r in f], [100 * r["accuracy"] for r in f], s=34, c=c,
                   label=f"{run['label']}: front ({len(f)} of {len(recs)} validated)")
        if run["full"]:
            ax.scatter([run["full"]["tpot_ms"]], [100 * run["full"]["accuracy"]], marker="*", s=220, c=c,
                       edgecolors="k", zorder=5, label=f"{run['label']}: full model")
    ax.set_xlabel("TPOT ms (OpenVINO, measured)")
    ax.set_ylabel("mean accuracy % (search split)")
    ax.set_title("hwnas search: fronts compared at the same budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="search output folder, optionally =LABEL")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "trained_vs_untrained"))
    args = ap.parse_args()
    runs = []
    for spec in args.runs:
        folder, _, label = spec.partition("=")
        runs.append(load_run(Path(folder), label or Path(folder).name))
    from hwnas.search.pareto import HypervolumeReference

    # one normalisation for all runs (the search's own: 0 = best, 1 = worst over every record here)
    ref = HypervolumeReference.from_extremes(("accuracy", "tpot_ms"), [r for run in runs for r in run["records"]])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    point = ref.to_dict()["reference_point"]
    lines = [f"# Search fronts compared (common hypervolume reference: accuracy {100 * point['accuracy']:.1f}%, "
             f"TPOT {point['tpot_ms']:.2f} ms)", ""]
    summary = []
    for run in runs:
        hv = ref.hypervolume(run["front"])
        # the same front scored on the report split (items the search never saw): an unbiased view
        rep_front = [dict(r, accuracy=run["report"][r["key"]]) for r in run["front"] if r["key"] in run["report"]]
        hv_rep = ref.hypervolume(rep_front) if rep_front else None
        full = run["full"] or {}
        picks = {pts: export_pick(run, pts) for pts in (1.0, 2.0)}
        summary.append({"label": run["label"], "folder": run["folder"], "evaluations": run["evaluations"],
                        "hypervolume": hv, "hypervolume_report_split": hv_rep, "full_model": {k: full.get(k) for k in ("accuracy", "tpot_ms")},
                        "full_model_report_accuracy": run["report"].get(full.get("key")),
                        "export_pick": {f"fastest-within {pts:g}": p and p["key"] for pts, p in picks.items()},
                        "front": [{"key": r["key"], "layers": r["num_layers"], "accuracy": r["accuracy"],
                                   "report_accuracy": run["report"].get(r["key"]), "tpot_ms": r["tpot_ms"]}
                                  for r in run["front"]]})
        lines += [f"## {run['label']} ({run['folder']})", "",
                  f"{run['evaluations']} subnets validated; hypervolume {hv:.4f} (search split), "
                  + (f"{hv_rep:.4f} (the same front on the report split)" if hv_rep is not None else "no report split")
                  + "; full model "
                  f"{100 * full.get('accuracy', float('nan')):.1f}% search split, TPOT {full.get('tpot_ms', float('nan')):.2f} ms.",
                  "", "| subnet | layers | search acc % | report acc % | TPOT ms |", "|---|---|---|---|---|"]
        for r in run["front"]:
            rep = run["report"].get(r["key"])
            lines.append(f"| {r['key']} | {r['num_layers']} | {100 * r['accuracy']:.1f} | "
                         f"{'-' if rep is None else f'{100 * rep:.1f}'} | {r['tpot_ms']:.2f} |")
        for pts, p in picks.items():
            if p and not p.get("full_model"):
                lines.append(f"\n`--pick 'fastest-within {pts:g}'` (search and report split): `{p['key']}`, "
                             f"{full['tpot_ms'] / p['tpot_ms']:.2f}x TPOT (search-time measurements).")
            elif p:
                lines.append(f"\n`--pick 'fastest-within {pts:g}'`: no subnet qualifies on both splits; the full model.")
        lines.append("")
    plot(runs, out.with_suffix(".png"))
    write_json_atomic(out.with_suffix(".json"), {"hypervolume_reference": ref.to_dict(), "runs": summary})
    write_text_atomic(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
