"""Human-readable search results: pareto.png (accuracy vs latency) and summary.md."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from hwnas.search.result import SearchResult

log = logging.getLogger(__name__)

PICK_POINTS = (0.5, 1.0, 2.0)


def _axes(objectives: Sequence[str]) -> tuple[str, str]:
    """(x, y): y is accuracy when searched, x the first other objective."""
    y = "accuracy" if "accuracy" in objectives else objectives[0]
    x = next(o for o in objectives if o != y)
    return x, y


def plot_pareto(result: "SearchResult", path: str | Path) -> Path:
    """All validated subnets in grey, the Pareto front as a step line, the full model as a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hwnas.search.objectives import OBJECTIVES

    x, y = _axes(result.config.objectives)
    fig, ax = plt.subplots(figsize=(7, 4.8), dpi=110)
    recs = result.records
    ax.scatter([r[x] for r in recs], [r[y] for r in recs], s=18, c="#b0b0b0", label=f"validated ({len(recs)})", zorder=2)
    front = sorted(result.pareto, key=lambda r: r[x])
    if front:
        fx, fy = [r[x] for r in front], [r[y] for r in front]
        ax.step(fx, fy, where="post" if OBJECTIVES[x].maximize == OBJECTIVES[y].maximize else "pre",
                c="#1f77b4", lw=1.2, zorder=3)
        ax.scatter(fx, fy, s=36, c="#1f77b4", label=f"Pareto front ({len(front)})", zorder=4)
    if result.full_model:
        f = result.full_model
        ax.scatter([f[x]], [f[y]], marker="*", s=220, c="#d62728", edgecolors="k", label="full model", zorder=5)
    pick = result.pick_fastest_within(1.0) if y == "accuracy" else None
    if pick and result.full_model and pick["key"] != result.full_model["key"]:
        ax.annotate("fastest within 1 pt", (pick[x], pick[y]), xytext=(10, -18), textcoords="offset points",
                    arrowprops={"arrowstyle": "->", "lw": 0.8}, fontsize=8)
    ax.set_xlabel(OBJECTIVES[x].label)
    ax.set_ylabel(OBJECTIVES[y].label + (" (search split)" if y == "accuracy" else ""))
    ax.set_title(f"hwnas search ({result.config.strategy}): {len(recs)} subnets validated")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def _fmt(v: Any, metric: str) -> str:
    if v is None:
        return "-"
    if metric == "accuracy":
        return f"{100 * float(v):.1f}"
    if metric in ("n_params", "weight_bytes"):
        return f"{float(v) / 1e6:.1f}M"
    return f"{float(v):.2f}"


def summary_markdown(result: "SearchResult", info: Mapping[str, Any] | None = None) -> str:
    from hwnas.search.picking import pick_fastest_within, speed_of

    cfg = result.config
    info = dict(info or {})
    cols = list(dict.fromkeys(["accuracy", *cfg.objectives, "tpot_ms", "ttft_ms"]))
    cols = [c for c in cols if any(r.get(c) is not None for r in result.records)]
    has_report = any(r.get("report") for r in result.pareto)
    lines = ["# hwnas search", ""]
    lines.append(f"- strategy: **{cfg.strategy}**, objectives: {', '.join(cfg.objectives)}"
                 + (f", constraints: {', '.join(c.describe() for c in cfg.constraints)}" if cfg.constraints else ""))
    lines.append(f"- validated subnets: {len(result.records)} (budget {cfg.evaluations}, population {cfg.population}, seed {cfg.seed})")
    for k in ("model", "target", "host", "tasks", "limit", "latency_source"):
        if info.get(k) is not None:
            v = info[k]
            if isinstance(v, Mapping) and k == "host":
                v = f"{v.get('cpu_model', '?')}, {v.get('physical_cores', '?')} cores (host {v.get('fingerprint', '?')})"
            elif isinstance(v, Mapping):
                v = v.get("name") or v.get("spec") or v
            elif isinstance(v, (list, tuple)):
                v = ", ".join(map(str, v))
            lines.append(f"- {k}: {v}")
    if result.history:
        last = result.history[-1]
        hv = last.get("hypervolume")
        lines.append(f"- iterations: {len(result.history)}, final hypervolume: {hv:.4f}" if hv is not None
                     else f"- iterations: {len(result.history)}")
    lines += ["", "Accuracy in % (search split" + (", report split in brackets" if has_report else "") + ").", ""]
    remeasured = any(r.get("remeasured") for r in result.pareto)
    head = ["subnet", "layers", "MLP widths"] + cols + (["TPOT final"] if remeasured else []) + ["Δacc (pts)", "TPOT speed-up"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    rows = list(result.pareto)
    full = result.full_model
    if full and full["key"] not in {r["key"] for r in rows}:
        rows.append(dict(full))
    for r in rows:
        w = r["subnet"]["mlp_widths"]
        widths = f"{min(w)}-{max(w)}" if min(w) != max(w) else str(w[0])
        cells = [r["key"] + (" (full model)" if r.get("full_model") else ""), str(len(w)), widths]
        for c in cols:
            s = _fmt(r.get(c), c)
            if c == "accuracy" and r.get("report"):
                s += f" [{_fmt(r['report'].get('accuracy'), c)}]"
            cells.append(s)
        if remeasured:
            cells.append(f"{r['remeasured']['tpot_ms']:.2f}" if r.get("remeasured") else "-")
        vs = r.get("vs_full") or {}
        cells.append(f"{vs['accuracy_points']:+.1f}" if vs.get("accuracy_points") is not None else "-")
        ci = vs.get("tpot_speedup_ci95")
        cells.append((f"{vs['tpot_speedup']:.2f}x" + (f" [{ci[0]:.2f}-{ci[1]:.2f}]" if ci else "")
                      + (" !" if vs.get("speed_unstable") else "")) if vs.get("tpot_speedup") else "-")
        lines.append("| " + " | ".join(cells) + " |")
    if full and "accuracy" in full:
        both = (full.get("report") or {}).get("accuracy") is not None
        lines += ["", "## Picks", "",
                  "What `hwnas export --pick 'fastest-within X'` takes: the fastest subnet within X points of the "
                  "full model on the search split" + (" and on the report split" if both else "")
                  + "; the full model when none is.", ""]
        for pts in PICK_POINTS:
            p = result.pick_fastest_within(pts)
            if p is None:
                lines.append(f"- fastest within {pts:g} pt of the full model: none")
                continue
            if p.get("full_model"):
                lines.append(f"- fastest within {pts:g} pt of the full model: no subnet qualifies; the full model")
                continue
            vs = p.get("vs_full") or {}
            sp = f", TPOT {speed_of(p):.2f} ms ({vs.get('tpot_speedup', 1):.2f}x)" if speed_of(p) else ""
            lines.append(f"- fastest within {pts:g} pt of the full model: `{p['key']}` ({p['description']}), "
                         f"accuracy {100 * p['accuracy']:.1f}% ({vs.get('accuracy_points', 0):+.1f} pts){sp}")
        full_rep = (full.get("report") or {}).get("accuracy")
        rep_recs = [dict(r, accuracy=r["report"]["accuracy"]) for r in result.pareto if (r.get("report") or {}).get("accuracy") is not None]
        if full_rep is not None and rep_recs:
            lines.append("")
            lines.append("The same rule on the report split (items the search never saw), among the Pareto subnets:")
            lines.append("")
            for pts in PICK_POINTS:
                p = pick_fastest_within(rep_recs, pts, full_accuracy=float(full_rep))
                if p is None:
                    lines.append(f"- within {pts:g} pt (report split): none")
                else:
                    lines.append(f"- within {pts:g} pt (report split): `{p['key']}` ({p['description']}), report accuracy "
                                 f"{100 * p['accuracy']:.1f}% ({100 * (p['accuracy'] - full_rep):+.1f} pts), TPOT {speed_of(p):.2f} ms")
        lines.append("")
        lines.append("Export one with `hwnas export --from DIR --pick 'fastest-within 1.0'`.")
    if result.history:
        lines += ["", "## Iterations", "", "| iteration | validated | hypervolume | front | predictors (chosen, CV MAE) | seconds |",
                  "|---|---|---|---|---|---|"]
        for h in result.history:
            preds = "; ".join(
                f"{m}: {p['chosen']} {p['cv_mae']:.4g}" if p.get("cv_mae") is not None else f"{m}: {p['chosen']}"
                for m, p in (h.get("predictors") or {}).items()
            ) or "-"
            hv = h.get("hypervolume")
            lines.append(f"| {h['iteration']} | {h['validated']} | {hv:.4f} | {h['front_size']} | {preds} | "
                         f"{h['seconds']['total']:.1f} |" if hv is not None else
                         f"| {h['iteration']} | {h['validated']} | - | {h['front_size']} | {preds} | {h['seconds']['total']:.1f} |")
    if remeasured:
        lines += ["", "TPOT final: the Pareto subnets and the full model timed again in one session with interleaved "
                  "repeats; speed-ups use these (paired ratios; 95% bootstrap interval over rounds in brackets; "
                  "! = a figure stayed uncertain, e.g. the host was busy)."]
    if any(str(r.get("latency_source", "")).startswith("predicted") for r in result.records):
        lines += ["", "Latency figures are **predicted** by the profile's latency model (not measured on this host)."]
    return "\n".join(lines) + "\n"


def write_report(result: "SearchResult", out: str | Path, info: Mapping[str, Any] | None = None) -> None:
    """pareto.png and summary.md in `out` (atomic writes)."""
    from hwnas.io import write_text_atomic

    out = Path(out)
    if info is None:
        import json

        try:
            info = json.loads((out / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            info = {}
    if result.records:
        plot_pareto(result, out / "pareto.png")
    write_text_atomic(out / "summary.md", summary_markdown(result, info))
