"""Human-readable search results: pareto.png (accuracy vs latency) and summary.md."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from hwnas.search.picking import fidelity_kl  # noqa: F401  (re-exported: it lived here)

if TYPE_CHECKING:
    from hwnas.search.result import SearchResult

log = logging.getLogger(__name__)



def _axes(objectives: Sequence[str]) -> tuple[str, str]:
    """(x, y): y is accuracy (or the signal that ranked it) when searched, x the first other objective."""
    y = next((o for o in ("accuracy", "signal") if o in objectives), objectives[0])
    x = next(o for o in objectives if o != y)
    return x, y


def ranked_by(config: Any) -> str:
    """One phrase saying what ranked the search's accuracy objective."""
    from hwnas.search.objectives import FIDELITY_METRICS

    m = config.metric
    if m in FIDELITY_METRICS:
        what = ("KL of the answer-choice distributions to the full model's on the search-split items"
                if m == "choice_kl" else "next-token KL to the full model on WikiText-2 search-split text")
        return f"{m} ({what}; the optimiser maximises -ln(1 + KL))"
    return f"{m} (mean over the tasks on the search split)"


def plot_pareto(result: "SearchResult", path: str | Path) -> Path:
    """All validated subnets in grey, the Pareto front as a step line, the full model as a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hwnas.search.objectives import OBJECTIVES

    x, y = _axes(result.config.ranked)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=110)
    _plot_vs_full(ax2, result)
    recs = result.records
    ax.scatter([r[x] for r in recs], [r[y] for r in recs], s=18, c="#b0b0b0", label=f"validated ({len(recs)})", zorder=2)
    front = sorted(result.pareto, key=lambda r: r[x])
    if front:
        fx, fy = [r[x] for r in front], [r[y] for r in front]
        ax.step(fx, fy, where="post" if OBJECTIVES[x].maximize == OBJECTIVES[y].maximize else "pre",
                c="#1f77b4", lw=1.2, zorder=3)
        ax.scatter(fx, fy, s=36, c="#1f77b4", label=f"Pareto front ({len(front)})", zorder=4)
        for r in front:   # deployment genes, when searched: the share of int4 weight matrices, head, KV cache
            label = genes_label(r.get("subnet", {}))
            if label:
                ax.annotate(label, (r[x], r[y]), xytext=(4, 4), textcoords="offset points", fontsize=6, color="#1f77b4")
    if result.full_model:
        f = result.full_model
        ax.scatter([f[x]], [f[y]], marker="*", s=220, c="#d62728", edgecolors="k", label="full model", zorder=5)
    pick = result.pick_fastest_within(1.0) if y in ("accuracy", "signal") else None
    if pick and result.full_model and pick["key"] != result.full_model["key"]:
        ax.annotate("fastest within 1 pt", (pick[x], pick[y]), xytext=(10, -18), textcoords="offset points",
                    arrowprops={"arrowstyle": "->", "lw": 0.8}, fontsize=8)
    ax.set_xlabel(OBJECTIVES[x].label)
    ylabel = f"{result.config.metric}: -ln(1 + KL), higher is better" if y == "signal" else OBJECTIVES[y].label
    ax.set_ylabel(ylabel + (" (search split)" if y in ("accuracy", "signal") else ""))
    ax.set_title(f"hwnas search ({result.config.strategy}, ranked by {result.config.metric}): "
                 f"{len(recs)} subnets validated", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    note = chance_plot_note(result)
    fig.tight_layout(rect=(0, 0.05, 1, 1) if note else None)
    if note:
        fig.text(0.01, 0.012, note, fontsize=8, color="#b00000", ha="left", va="bottom")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def _plot_vs_full(ax: Any, result: "SearchResult") -> None:
    """The front against the full model: TPOT speed-up (re-measured, interleaved, where available) vs
    the paired accuracy difference in points, ± stderr, on the search and the report (select) split."""
    pts = [r for r in result.pareto if (r.get("vs_full") or {}).get("tpot_speedup")]
    for split, key, style in (("search split", "paired", dict(fmt="o", c="#1f77b4")),
                              ("report (select) split", "report", dict(fmt="s", c="#2ca02c", mfc="none"))):
        xs, ys, es = [], [], []
        for r in pts:
            p = r.get("paired") if key == "paired" else (r.get("report") or {}).get("paired")
            if p and p.get("points") is not None:
                xs.append(r["vs_full"]["tpot_speedup"])
                ys.append(p["points"])
                es.append(p.get("stderr") or 0.0)
        if xs:
            ax.errorbar(xs, ys, yerr=es, ms=6, capsize=3, lw=0, elinewidth=1, label=split, **style)
    ax.axhline(0, c="#d62728", lw=1, label="full model (0 points, 1.0x)")
    ax.axhline(-1, c="#d62728", lw=0.8, ls="--", label="1 point below")
    pick = result.pick_fastest_within(1.0)
    if pick and result.full_model and pick["key"] != result.full_model["key"] and (pick.get("vs_full") or {}).get("tpot_speedup"):
        p = (pick.get("report") or {}).get("paired") or pick.get("paired") or {}
        ax.annotate("pick (fastest within 1 pt)", (pick["vs_full"]["tpot_speedup"], p.get("points", 0)), xytext=(10, 18),
                    textcoords="offset points", arrowprops={"arrowstyle": "->", "lw": 0.8}, fontsize=8)
    ax.set_xlabel("TPOT speed-up vs the full model (re-measured, interleaved)")
    ax.set_ylabel("accuracy vs the full model (points, paired ± stderr)")
    ax.set_title("Pareto front vs the full model")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")


def _fmt(v: Any, metric: str) -> str:
    if v is None:
        return "-"
    if metric == "accuracy":
        return f"{100 * float(v):.1f}"
    if metric in ("n_params", "weight_bytes"):
        return f"{float(v) / 1e6:.1f}M"
    return f"{float(v):.2f}"


def rows_of(result: "SearchResult") -> list[dict[str, Any]]:
    """The Pareto records plus the full model (when it is not on the front)."""
    rows = [dict(r) for r in result.pareto]
    full = result.full_model
    if full and full["key"] not in {r["key"] for r in rows}:
        rows.append(dict(full))
    return rows


def _paired_cell(paired: Mapping[str, Any] | None, fallback: float | None) -> str:
    if paired and paired.get("points") is not None:
        se = paired.get("stderr")
        return f"{paired['points']:+.2f} ± {se:.2f}" if se is not None and se == se else f"{paired['points']:+.2f}"
    return f"{fallback:+.1f}" if fallback is not None else "-"


def summary_markdown(result: "SearchResult", info: Mapping[str, Any] | None = None) -> str:
    """summary.md: the run, the front with paired differences, chance-level tasks, picks, iterations, notes."""
    info = dict(info or {})
    lines = ["# hwnas search", ""]
    lines += _run_lines(result, info)
    lines += _front_table(result)
    lines += _chance_lines(result)
    lines += _pick_lines(result)
    lines += genes_lines(result)
    lines += _iteration_lines(result)
    lines += _notes(result, info)
    return "\n".join(lines) + "\n"


def _run_lines(result: "SearchResult", info: Mapping[str, Any]) -> list[str]:
    """What was searched, how, on what (model, target, host, tasks) and how far the search got."""
    from hwnas.search.pareto import HV_REFERENCE

    cfg = result.config
    lines = [f"- strategy: **{cfg.strategy}**, objectives: {', '.join(cfg.objectives)}"
             + (f", constraints: {', '.join(c.describe() for c in cfg.constraints)}" if cfg.constraints else ""),
             f"- accuracy objective ranked by: {ranked_by(cfg)}",
             f"- validated subnets: {len(result.records)} (budget {cfg.evaluations}, population {cfg.population}, seed {cfg.seed})"]
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
        if hv is not None:
            lines.append("- hypervolume: the share of objective space dominated by the validated front, with each "
                         "objective normalised so that 0 is the better and 1 the worse of (full model, smallest subnet), "
                         f"reference point {HV_REFERENCE:g} in every objective; higher is better")
    return lines


def _front_table(result: "SearchResult") -> list[str]:
    """The Pareto front and the full model: objectives, paired differences on both splits, speed-ups."""
    cfg = result.config
    cols = list(dict.fromkeys(["accuracy", *cfg.objectives, "tpot_ms", "ttft_ms"]))
    cols = [c for c in cols if any(r.get(c) is not None for r in result.records)]
    has_report = any(r.get("report") for r in result.pareto)
    metric = next((r.get("accuracy_metric") for r in result.records if r.get("accuracy_metric")), "accuracy")
    n_search = next((r.get("items") for r in result.records if r.get("items")), None)
    reps = [r.get("report") or {} for r in rows_of(result)]
    n_report = next((p["items"] for p in ((x.get("paired") or {}) for x in reps) if p.get("items")), None)
    picked = next((x.get("pick_tasks") for x in reps if x.get("pick_tasks")), None)
    lines = ["", f"Accuracy: mean {metric} over the tasks, in %, on the search split"
             + (f" ({n_search} items)" if n_search else "")
             + (f"; the report split (select part, {n_report} items the search never saw"
                + (f", mean over the pick rule's tasks {', '.join(picked)}" if picked else "") + ") in brackets"
                if has_report else "")
             + ". Δ: the subnet minus the full model **on the same items** (paired), in points ± standard error.", ""]
    remeasured = any(r.get("remeasured") for r in result.pareto)
    kl_col = cfg.metric if any(fidelity_kl(r, cfg.metric) is not None for r in result.records) else None
    if kl_col:
        lines[-2] += f" {kl_col}: the KL to the full model that ranked the search (lower is better)."
    head = (["subnet", "layers", "MLP widths"] + cols + ([kl_col] if kl_col else []) + (["TPOT final"] if remeasured else [])
            + ["Δ search (pts)", "Δ report (pts)", "TPOT speed-up"])
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for r in rows_of(result):
        lines.append("| " + " | ".join(_front_row(r, cols, kl_col, cfg.metric, remeasured)) + " |")
    return lines + _front_notes(result.pareto, cfg.metric)


def _front_notes(pareto: Sequence[Mapping[str, Any]], metric: str | None = None) -> list[str]:
    """Footnotes under the front table: why records were not scored on the report split, screens, early
    stops and shared reports."""
    lines: list[str] = []
    skipped = [r for r in pareto if r.get("report_skipped")]
    if skipped:
        from hwnas.search.objectives import FIDELITY_METRICS

        order = ("closest to the full model first (ranked by a fidelity KL)" if metric in FIDELITY_METRICS
                 else "fastest first")
        lines += ["", f"¹ The report split is scored {order}, only as far as a pick rule needs it: "
                  + "; ".join(f"`{r['key']}`: {r['report_skipped']}" for r in skipped) + "."]
    screened = [r for r in pareto if r.get("generation_screen")]
    if screened:
        bad = [r for r in screened if not r["generation_screen"].get("passed")]
        lines += ["", f"Generation check before the report split (greedy tokens of the weights in PyTorch against the "
                  f"full model's, the check export applies to a bundle): {len(screened)} record(s) checked, "
                  f"{len(bad)} failed and were not scored; a pass decides nothing, the bundle is checked as built."]
    early = [r for r in pareto if (r.get("report") or {}).get("stopped_early")]
    if early:
        lines += ["", "Stopped at the first look (every third report item; its Δ report is on those items): "
                  + "; ".join(f"`{r['key']}`: {r['report']['stopped_early']['why']}" for r in early) + "."]
    shared = [r for r in pareto if (r.get("report") or {}).get("same_weights_as")]
    if shared:
        lines += ["", "Same weights, one report-split scoring (they differ only in runtime settings, which torch "
                  "scoring does not see; the holdout at export scores the bundle through OpenVINO with its settings): "
                  + "; ".join(f"`{r['key']}` has the report of `{r['report']['same_weights_as']}`" for r in shared)
                  + "."]
    return lines


def _front_row(r: Mapping[str, Any], cols: Sequence[str], kl_col: str | None, metric: str, remeasured: bool) -> list[str]:
    w = r["subnet"]["mlp_widths"]
    widths = f"{min(w)}-{max(w)}" if min(w) != max(w) else str(w[0])
    cells = [r["key"] + (" (full model)" if r.get("full_model") else ""), str(len(w)), widths]
    for c in cols:
        s = _fmt(r.get(c), c)
        if c == "accuracy" and r.get("report"):
            rep = r["report"]
            s += f" [{_fmt(rep['pick_accuracy'] if rep.get('pick_accuracy') is not None else rep.get('accuracy'), c)}]"
        cells.append(s)
    if kl_col:
        kl = fidelity_kl(r, metric)
        cells.append("-" if kl is None else f"{kl:.4f}")
    if remeasured:
        cells.append(f"{r['remeasured']['tpot_ms']:.2f}" if r.get("remeasured") else "-")
    vs = r.get("vs_full") or {}
    cells.append(_paired_cell(r.get("paired"), vs.get("accuracy_points")))
    if r.get("report_skipped"):
        cells.append("not scored¹")
    else:
        cells.append(_paired_cell((r.get("report") or {}).get("paired"), vs.get("report_accuracy_points")))
    ci = vs.get("tpot_speedup_ci95")
    cells.append((f"{vs['tpot_speedup']:.2f}x" + (f" [{ci[0]:.2f}-{ci[1]:.2f}]" if ci else "")
                  + (" !" if vs.get("speed_unstable") else "")) if vs.get("tpot_speedup") else "-")
    return cells


def chance_note(result: "SearchResult") -> tuple[list[str], bool] | None:
    """(tasks at chance, whether they were kept in the pick rule) from the full model's record; None
    when the search recorded no chance test (folders written before it existed) or every task is above chance."""
    full = result.full_model or {}
    tests = full.get("chance") or {}
    at = [n for n, t in tests.items() if not t.get("above_chance")]
    if not at:
        return None
    return at, bool(full.get("include_chance_tasks"))


def chance_plot_note(result: "SearchResult") -> str:
    """One line under pareto.png naming the tasks the full model is not above chance on."""
    note = chance_note(result)
    if note is None:
        return ""
    at, kept = note
    tests = (result.full_model or {}).get("chance") or {}
    what = ", ".join(f"{n} ({100 * tests[n]['score']:.1f}% vs chance {100 * tests[n]['chance']:.1f}%)" for n in at)
    if kept:
        return f"Full model not above chance on {what}; kept in the pick rule (--include-chance-tasks)."
    if len(at) == len(tests):
        return f"Full model not above chance on any task ({what}): no equal-accuracy claim; picks fall back to the full model."
    return f"Full model not above chance on {what}: left out of the pick rule and of the paired Δ (right panel)."


def _chance_lines(result: "SearchResult") -> list[str]:
    """Which tasks the full model is not above chance on, and what the pick rule does with them."""
    from hwnas.accuracy.chance import ChanceTest

    note = chance_note(result)
    if note is None:
        return []
    at, kept = note
    tests = result.full_model["chance"]
    lines = ["", "## Chance level", "",
             "A task on which the full model is not significantly above chance cannot support an \"equal accuracy\" "
             "claim: a subnet that guesses agrees with a full model that guesses. Full model vs the task's chance rate "
             "(1 / choices per item; true answers / choices for TruthfulQA MC2), paired per item, one-sided 95%:", ""]
    lines += [f"- {ChanceTest.from_dict(t).describe()}" for t in tests.values()]
    lines.append("")
    if kept:
        lines.append(f"Kept in the pick rule on request (--include-chance-tasks): {', '.join(at)}.")
    elif len(at) == len(tests):
        lines.append("The full model is above chance on no task, so no subnet can be shown to keep its accuracy: "
                     "the pick rules fall back to the full model (pass --include-chance-tasks to pick on these tasks "
                     "anyway).")
    else:
        lines.append(f"Left out of the pick rule's paired mean: {', '.join(at)} (pass --include-chance-tasks to keep "
                     "them). The Δ columns above are over the other tasks.")
    return lines


def _pick_lines(result: "SearchResult") -> list[str]:
    """The fastest-within rules and what each picks."""
    from hwnas.search.picking import PICK_POINTS, pick_claim, speed_of

    full = result.full_model
    if not (full and "accuracy" in full):
        return []
    lines = ["", "## Picks", "",
             "What `hwnas export --pick 'fastest-within X'` takes: the fastest subnet whose paired drop on the "
             "report (select) split is at most X points (point estimate); the full model when none is. "
             "'Shown' means the one-sided 95% upper bound of the drop is within X too. The number to quote for "
             "a pick is its holdout-split figure (items that took no part in choosing it), which `hwnas export` "
             "measures and writes into the bundle manifest.", ""]
    for pts in PICK_POINTS:
        p = result.pick_fastest_within(pts)
        if p is None:
            lines.append(f"- fastest within {pts:g} pt of the full model: none")
            continue
        if p.get("full_model") or p["key"] == full["key"]:
            lines.append(f"- fastest within {pts:g} pt of the full model: no subnet qualifies; the full model")
            continue
        vs = p.get("vs_full") or {}
        sp = f", TPOT {speed_of(p):.2f} ms ({vs.get('tpot_speedup', 1):.2f}x)" if speed_of(p) else ""
        lines.append(f"- fastest within {pts:g} pt of the full model: `{p['key']}` ({p['description']}){sp}; "
                     f"report split: {pick_claim(p, pts)}")
    lines.append("")
    lines.append("Export one with `hwnas export --from DIR --pick 'fastest-within 1.0'`.")
    return lines


def _iteration_lines(result: "SearchResult") -> list[str]:
    if not result.history:
        return []
    lines = ["", "## Iterations", "", "| iteration | validated | hypervolume | front | predictors (chosen, CV MAE) | seconds |",
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
    return lines


def _notes(result: "SearchResult", info: Mapping[str, Any]) -> list[str]:
    """Where the speed figures come from: re-measurement, prediction, and what exactly was timed."""
    lines: list[str] = []
    if any(r.get("remeasured") for r in result.pareto):
        lines += ["", "TPOT final: the Pareto subnets and the full model timed again in one session with interleaved "
                  "repeats; speed-ups use these (paired ratios; 95% bootstrap interval over rounds in brackets; "
                  "! = a figure stayed uncertain, e.g. the host was busy)."]
    if any(str(r.get("latency_source", "")).startswith("predicted") for r in result.records):
        lines += ["", "Latency figures are **predicted** by the profile's latency model (not measured on this host)."]
    tgt = info.get("target") if isinstance(info.get("target"), Mapping) else None
    if tgt and any("weight_formats" in r.get("subnet", {}) for r in result.records):
        ov, wl = tgt.get("openvino") or {}, tgt.get("workload") or {}
        lines += ["", "What was timed (deployment genes searched): each candidate as it ships: its integer OpenVINO IR "
                  "in its per-layer weight formats and head format, compiled with the target "
                  f"`{tgt.get('name')}`'s properties overridden by the candidate's runtime settings, batch "
                  f"{(wl.get('batch_sizes') or [1])[0]}, a {wl.get('prompt_tokens', '?')}-token prompt and "
                  f"{wl.get('new_tokens', '?')} new tokens. The full model row is the space's most precise corner "
                  "(int8 weights, f16 head, the most precise runtime values), so speed-ups against it include the "
                  "runtime genes' own gains."]
        tgt = None
    if tgt:
        ov, wl = tgt.get("openvino") or {}, tgt.get("workload") or {}
        lines += ["", "What was timed: each subnet's float OpenVINO IR (not quantized) on this CPU with the target "
                  f"`{tgt.get('name')}`'s properties (precision {ov.get('INFERENCE_PRECISION_HINT', 'the CPU default')}, "
                  f"KV cache {ov.get('KV_CACHE_PRECISION', 'the CPU default')}), batch {(wl.get('batch_sizes') or [1])[0]}, "
                  f"a {wl.get('prompt_tokens', '?')}-token prompt and {wl.get('new_tokens', '?')} new tokens; TPOT = "
                  "decode ms per token. A bundle's manifest times the *quantized* bundle (int8 weights decode faster), "
                  "and `hwnas verify --measure` times it again on the machine it runs on, so the three figures differ "
                  "by design."]
    return lines


def genes_label(sub: Mapping[str, Any]) -> str:
    """A short plot label of a subnet's genes, e.g. 'int4 40/60, head int8, KV u8' ('' without genes)."""
    formats = sub.get("weight_formats")
    if not formats:
        return ""
    n4 = sum(f.split("-")[-1].startswith("int4") for pair in formats for f in pair)
    text = f"int4 {n4}/{2 * len(formats)}, head {sub.get('head_format')}"
    kv = (sub.get("runtime") or {}).get("KV_CACHE_PRECISION")
    return text + (f", KV {kv}" if kv else "")


def genes_lines(result: "SearchResult") -> list[str]:
    """A section listing each reported subnet's deployment genes (when the search chose them)."""
    rows = [r for r in rows_of(result) if "weight_formats" in r.get("subnet", {})]
    if not rows:
        return []
    out = ["", "## Deployment genes", "",
           "Weight format per kept layer (attention / MLP), embeddings/lm_head format and OpenVINO runtime settings "
           "each subnet was scored and timed with (`hwnas export --pick` ships exactly these).", "",
           "| subnet | genes | per layer (attention/MLP) |", "|---|---|---|"]
    for r in rows:
        sub = r["subnet"]
        per = " ".join(f"{i}:{a}/{m}" for i, (a, m) in zip(sub["layers"], sub["weight_formats"]))
        out.append(f"| {r['key']} | {r.get('description', '')} | {per} |")
    return out


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
