"""The pick rule: which record of a search to ship, and how it compares with the full model."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from hwnas.errors import SearchError
from hwnas.model.space import SubnetConfig

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- picking candidates
def fidelity_kl(record: Mapping[str, Any], metric: str) -> float | None:
    """The KL to the full model behind a record's fidelity signal (None under an accuracy metric)."""
    if metric == "choice_kl":
        return record.get("choice_kl")
    if metric == "token_kl":
        return (record.get("token_fidelity") or {}).get("kl")
    return None


def record_drop(record: Mapping[str, Any], full: Mapping[str, Any] | None, split: str) -> float | None:
    """Points a record is below the full model on `split` ("search" or "report"): the paired
    difference on the same items when the record has one, else the difference of the means."""
    src = record if split == "search" else (record.get("report") or {})
    if not src:
        return None
    if (src.get("paired") or {}).get("at_chance"):
        return None  # the full model is not above chance on any task: no drop can be shown small
    if src.get("paired") and src["paired"].get("points") is not None:
        return -float(src["paired"]["points"])
    fsrc = (full or {}) if split == "search" else ((full or {}).get("report") or {})
    if fsrc.get("accuracy") is not None and src.get("accuracy") is not None:
        return 100.0 * (float(fsrc["accuracy"]) - float(src["accuracy"]))
    if split == "search" and record.get("vs_full") and record["vs_full"].get("accuracy_points") is not None:
        return -float(record["vs_full"]["accuracy_points"])
    return None


def pick_fastest_within(
    records: Sequence[Mapping[str, Any]], points: float, *, speed: str = "tpot_ms", full_accuracy: float | None = None,
    full_report_accuracy: float | None = None,
) -> dict[str, Any] | None:
    """The record with the lowest `speed` whose accuracy is at most `points` percentage points
    below the full model's.

    Decided on the report split where the search measured one (``report``: the paired difference
    from the full model on the same select-split items, the split the search never optimised on;
    the search picks the best of many noisy search-split estimates, so a winner's search-split
    accuracy is biased upwards). When any record has a report, a record without one does not
    qualify; with no reports at all, the search split decides. The full model's accuracy is taken from
    `full_accuracy` / `full_report_accuracy`, else from a record flagged ``full_model``.
    The paired differences leave out tasks on which the full model is not above chance; a record
    whose paired mean is flagged ``at_chance`` (no task above chance) does not qualify.
    Returns None when no record qualifies."""
    if points < 0:
        raise SearchError(f"--pick fastest-within needs a non-negative number of points, got {points}")
    fulls = [r for r in records if r.get("full_model")]
    full: dict[str, Any] = dict(fulls[0]) if fulls else {}
    if full_accuracy is not None:
        full["accuracy"] = full_accuracy
    if full_report_accuracy is not None:
        full["report"] = dict(full.get("report") or {}, accuracy=full_report_accuracy)
    any_report = any(r.get("report") for r in records)
    ok: list[Mapping[str, Any]] = []
    for r in records:
        if r.get("full_model") or (full.get("key") and r.get("key") == full.get("key")):
            drop: float | None = 0.0
        elif r.get("report"):
            drop = record_drop(r, full, "report")
        elif any_report:
            drop = None  # the report split decides; a record without one is not shown to qualify
        else:
            drop = record_drop(r, full, "search")
            if drop is None and not (r.get("paired") or {}).get("at_chance"):  # at chance: cannot qualify
                raise SearchError("cannot pick 'fastest-within': the records hold no full-model accuracy")
        if drop is not None and drop <= points + 1e-9 and speed_of(r, speed) is not None:
            ok.append(r)
    if not ok:
        return None
    best = min(ok, key=lambda r: (float(speed_of(r, speed)), -float(r["accuracy"])))
    return dict(best)


def pick_from_front(front: Sequence[Mapping[str, Any]], full: Mapping[str, Any] | None, points: float, *,
                    speed: str = "tpot_ms") -> dict[str, Any] | None:
    """`--pick 'fastest-within POINTS'`: the fastest front record within POINTS of the full model
    (on the report split where measured, see `pick_fastest_within`); the full model itself
    (always within 0 points of itself) when no subnet is."""
    keys = {r["key"] for r in front}
    cands = [dict(r) for r in front]
    if full is not None:
        if full["key"] not in keys:
            cands.append(dict(full))
        for c in cands:
            if c["key"] == full["key"]:
                c["full_model"] = True
    rep = ((full or {}).get("report") or {}).get("accuracy")
    return pick_fastest_within(cands, points, speed=speed,
                               full_accuracy=None if full is None else float(full["accuracy"]),
                               full_report_accuracy=None if rep is None else float(rep))


def pick_claim(record: Mapping[str, Any], points: float) -> str:
    """The plain sentence about a pick's 'within POINTS' claim on the split that decided it."""
    from hwnas.accuracy.paired import PairedDiff

    src = (record.get("report") or {}).get("paired") or record.get("paired")
    if record.get("full_model"):
        return "the full model itself"
    if not src:
        return "no paired comparison recorded"
    return PairedDiff.from_dict(src).verdict(points)


def speed_of(record: Mapping[str, Any], metric: str = "tpot_ms") -> float | None:
    """A latency figure of a record: the final interleaved re-measurement when there is one."""
    again = record.get("remeasured") or {}
    v = again.get(metric, record.get(metric))
    return None if v is None else float(v)


def compare_to_full(record: Mapping[str, Any], full: Mapping[str, Any] | None) -> dict[str, float | None]:
    """Accuracy change in points and speed-ups relative to the full model's record."""
    if not full:
        return {}
    out: dict[str, Any] = {"accuracy_points": round(100.0 * (float(record["accuracy"]) - float(full["accuracy"])), 3)}
    if record.get("report") and full.get("report"):
        a, b = record["report"], full["report"]
        key = "pick_accuracy" if a.get("pick_accuracy") is not None and b.get("pick_accuracy") is not None else "accuracy"
        out["report_accuracy_points"] = round(100.0 * (float(a[key]) - float(b[key])), 3)
    if record.get("paired"):
        out["paired_search"] = record["paired"]
    if (record.get("report") or {}).get("paired"):
        out["paired_report"] = record["report"]["paired"]
    both = bool(record.get("remeasured")) and bool(full.get("remeasured"))
    for m in ("tpot_ms", "ttft_ms"):
        a, b = (speed_of(record, m), speed_of(full, m)) if both else (record.get(m), full.get(m))
        if a and b:
            out[m.replace("_ms", "_speedup")] = round(float(b) / float(a), 4)
    a, b = ((record["remeasured"].get("throughput_tok_s"), full["remeasured"].get("throughput_tok_s")) if both
            else (record.get("throughput_tok_s"), full.get("throughput_tok_s")))
    if a and b:
        out["throughput_ratio"] = round(float(a) / float(b), 4)
    out["speed_basis"] = "final interleaved re-measurement" if both else "search-time measurement"
    paired = (record.get("remeasured") or {}).get("vs_full") if both else None
    if paired:  # ratios measured interleaved in one session, with their bootstrap intervals
        for k, r in paired.items():
            out[k] = r["value"]
            out[f"{k}_ci95"] = [r["ci_low"], r["ci_high"]]
        out["speed_basis"] = "final interleaved re-measurement (paired ratio, 95% bootstrap CI over rounds)"
        if not (record["remeasured"].get("stable", True) and full["remeasured"].get("stable", True)):
            out["speed_unstable"] = True
    return out



# ----------------------------------------------------------------------------- picking a subnet from a search

@dataclass(frozen=True)
class Pick:
    subnet: Any            # SubnetConfig
    record: dict           # the search record it came from
    rule: str              # how it was chosen, for the manifest


def search_chance_skips(search_dir: str | Path) -> dict[str, str]:
    """Tasks the search's full model was not above chance on and that its pick rule left out, with why:
    no "equal accuracy" claim can rest on them, so export's holdout scores neither model on them. Read from
    the full model's record (``chance_tasks``, decided once on the report split and applied to every
    split; its ``chance`` tests where recorded). Empty when the search kept them (--include-chance-tasks)."""
    from hwnas.accuracy.chance import ChanceTest
    from hwnas.io import read_jsonl

    search_dir = Path(search_dir)
    path = search_dir / "candidates.jsonl"
    try:
        full = next((r for r in read_jsonl(path) if r.get("full_model")), None) if path.is_file() else None
        cfg = search_dir / "config.json"
        identity = (json.loads(cfg.read_text(encoding="utf-8")).get("identity") or {}) if cfg.is_file() else {}
        if not full or full.get("include_chance_tasks") or identity.get("include_chance_tasks"):
            return {}
        tests = {n: ChanceTest.from_dict(d) for n, d in (full.get("chance") or {}).items()}
        at = [n for n in full.get("chance_tasks") or []] + [n for n, t in tests.items() if not t.above]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return {}
    why = "the search's full model was not above chance on it (its chance_tasks)"
    return {n: (tests[n].describe() + " (the search's full model)" if n in tests else why)
               + "; `hwnas export` scored neither model on it" for n in dict.fromkeys(at)}


def pick_from_search(search_dir: str | Path, pick: str, exclude: Sequence[str] = ()) -> Pick:
    """A subnet from a search folder's ``pareto.json``.

    pick: an index N into pareto.json (0 = first record as listed), a subnet key (``l18-3fa9c01b``),
    or ``fastest-within X``: the lowest-TPOT record whose accuracy is at most X percentage points
    below the full model's on the search split and, where the search measured it (report.jsonl),
    on the report split too; the full model itself when no subnet qualifies. The full model's
    accuracy is the record flagged ``full_model`` in candidates.jsonl (the search always
    validates the full model), else the ``vs_full`` the search stored in each pareto.json record.
    exclude: keys a ``fastest-within`` pick passes over (front records whose bundle failed the generation check).
    """

    search_dir = Path(search_dir)
    pareto_path = search_dir / "pareto.json"
    if not pareto_path.is_file():
        raise SearchError(f"--from {search_dir} holds no pareto.json; give the --out folder of `hwnas search`")
    try:
        front = json.loads(pareto_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise SearchError(f"{pareto_path} is not valid JSON: {e}") from None
    if not isinstance(front, list) or not front:
        raise SearchError(f"{pareto_path} holds no Pareto records")
    pick = str(pick).strip()
    rec: dict | None = None
    if pick.startswith("fastest-within"):
        arg = pick[len("fastest-within"):].strip().lstrip("=").strip()
        try:
            points = float(arg)
        except ValueError:
            raise SearchError(f"--pick {pick!r}: give 'fastest-within POINTS', e.g. 'fastest-within 1.0'") from None
        from hwnas.io import read_jsonl
        from hwnas.search.store import REPORT_FILE

        try:
            full = next((r for r in read_jsonl(search_dir / "candidates.jsonl") if r.get("full_model")), None)
            reports = {r["key"]: r["report"] for r in read_jsonl(search_dir / REPORT_FILE)} \
                if (search_dir / REPORT_FILE).is_file() else {}
        except (json.JSONDecodeError, KeyError):
            full, reports = None, {}
        front = [dict(r, report=r.get("report") or reports.get(r.get("key"))) for r in front
                 if r.get("key") not in set(exclude)]
        if full is not None:
            full = dict(full, report=reports.get(full["key"]))
        rec = pick_from_front(front, full, points)
        if rec is None:
            raise SearchError(f"--pick {pick!r}: no subnet on the Pareto front of {search_dir} is within {points:g} "
                              "points of the full model's accuracy")
        split = "report (select) split, paired" if (full or {}).get("report") else "search split"
        rule = f"fastest-within {points:g} points of the full model ({split})"
        if full is not None and rec.get("key") == full["key"]:
            log.warning("no subnet on the Pareto front of %s is within %g points of the full model on the %s; "
                        "picking the full model", search_dir, points, split)
            rule += "; no subnet qualified, so the full model"
    elif pick.lstrip("-").isdigit():
        n = int(pick)
        if not 0 <= n < len(front):
            raise SearchError(f"--pick {n} is beyond the Pareto front of {search_dir}: it has {len(front)} records "
                              f"(0-{len(front) - 1}); or give a subnet key or 'fastest-within POINTS'")
        rec = front[n]
        rule = f"record {n} of pareto.json"
    else:
        matches = [r for r in front if r.get("key") == pick]
        if not matches:
            keys = ", ".join(str(r.get("key")) for r in front[:5])
            raise SearchError(f"--pick {pick!r} is not an index, a key on the Pareto front ({keys}...) or 'fastest-within POINTS'")
        rec = matches[0]
        rule = f"key {pick}"
    if "subnet" not in rec:
        raise SearchError(f"Pareto record {rec.get('key')!r} in {pareto_path} has no 'subnet'")
    return Pick(subnet=SubnetConfig.from_dict(rec["subnet"]), record=dict(rec), rule=rule)




# ----------------------------------------------------------------------------- the report split of a front
PICK_POINTS = (0.5, 1.0, 2.0)   # the fastest-within rules the summary lists


def drop_beyond(paired: Mapping[str, Any] | None, points: float = max(PICK_POINTS), z: float = 2.0) -> bool:
    """Whether a paired difference's drop is beyond `points` by more than `z` standard errors (its lower
    bound drop - z * stderr): then no fastest-within rule up to `points` can take the record."""
    p = paired or {}
    if p.get("points") is None or p.get("stderr") is None or p["stderr"] != p["stderr"]:
        return False
    return -float(p["points"]) - z * float(p["stderr"]) > points


def screened_out(record: Mapping[str, Any], points: float = max(PICK_POINTS), z: float = 2.0) -> str | None:
    """Why a record need not be scored on the report split: its search-split paired drop is so far
    beyond `points` (`drop_beyond`) that no fastest-within rule can pick it."""
    p = record.get("paired")
    if drop_beyond(p, points, z):
        return f"screened out on the search split: drop {-p['points']:.2f} ± {p['stderr']:.2f} points ({p.get('items')} items)"
    return None


def report_order(front: Sequence[Mapping[str, Any]], speed: str = "tpot_ms") -> list[int]:
    """Indices of front records, fastest first: the order in which the report split is scored."""
    return sorted(range(len(front)), key=lambda i: float(speed_of(front[i], speed) or float("inf")))


def failed_clearly(record: Mapping[str, Any], points: float = max(PICK_POINTS), z: float = 2.0) -> bool:
    """Whether a record's report-split paired drop is beyond `points` by more than z standard errors."""
    return drop_beyond((record.get("report") or {}).get("paired"), points, z)


def weights_key(record: Mapping[str, Any]) -> str:
    """The key of a record's subnet without its runtime settings: records that share it have the same
    weights, so the same torch-scored accuracy (runtime settings act only inside OpenVINO)."""
    cfg = SubnetConfig.from_dict(record["subnet"])
    return cfg.with_deploy(cfg.weight_formats, cfg.head_format, ()).key


def evaluate_reports(front: list[dict[str, Any]], full: dict[str, Any] | None, report: Any, *,
                     known: Mapping[str, Any], save: Any = None, progress: Any = None,
                     speed: str = "tpot_ms", metric: str | None = None, screen: Any = None,
                     known_screens: Mapping[str, Any] | None = None, save_screen: Any = None) -> None:
    """Score the report (select) split of the front only as far as any pick rule needs. The full
    model is always scored; records screened out on the search split are skipped (``report_skipped``
    says why). Results go into each record's ``report``; `known` holds earlier results by key
    (resume), `save(key, report)` stores new ones.

    Three rules spare scorings that no pick rule can use:
    - **a faster pick exists**: once a record is within min(PICK_POINTS) of the full model, a record
      that is slower (`speed_of`: the interleaved re-measurement when the front was timed again, which
      is what the pick rule compares) can no longer be picked by any rule; the full model is within
      0 points of itself, so nothing slower than it is scored either;
    - **same weights**: a record whose weights equal an already scored record's (they differ only in
      runtime settings) shares that torch-scored report (``same_weights_as``) instead of scoring it again;
    - **clear failure** (ranked by a fidelity KL, `metric` choice_kl/token_kl, which tracks the paired
      drop closely: Spearman 0.89 in bench/signal_bench.py): the front is scored closest-to-the-full-model
      first (slowest first by the search's own speeds); along the front a faster record has a worse KL,
      so once one fails every pick rule clearly (report-split drop beyond max(PICK_POINTS) by two
      standard errors), the faster ones with a KL at least as bad are not scored either. Ranked by an accuracy metric, it is scored fastest first.
    On a model where no cut keeps the accuracy this costs one or two report scorings instead of one per
    front record.

    With `screen(cfg)` (the generation check on the record's weights in PyTorch, `SubnetValidator.
    generation_screen`), a record must pass it before its report split is scored: export refuses a bundle
    that fails the check, so a record that fails it can be no pick, and its report scoring (minutes on a
    real model) and the export attempt that would fail are both spared. A pass is recorded
    (``generation_screen``) and decides nothing: the bundle is checked again as built. Screens are kept
    per weights (records differing only in runtime settings share one), `known_screens` / `save_screen`
    as for reports. Ranked by a fidelity KL, once a record fails the screen the faster ones whose KL is no
    better are neither screened nor scored (`_generation_not_needed`), as after a clear failure."""
    from hwnas.search.objectives import FIDELITY_METRICS

    def run(r: dict[str, Any]) -> dict[str, Any]:
        if r["key"] in known:
            return known[r["key"]]
        out = report(SubnetConfig.from_dict(r["subnet"]))
        if save is not None:
            save(r["key"], out)
        return out

    full_key = None if full is None else full["key"]
    if full is not None:
        full["report"] = run(full)
        if ((full["report"] or {}).get("paired") or {}).get("at_chance"):
            for r in front:  # no pick rule can take a subnet: scoring them would decide nothing
                if r["key"] == full_key:
                    r["report"] = full["report"]
                elif r["key"] not in known:
                    r["report_skipped"] = ("the full model is not above chance on any task, so no subnet can be "
                                           "shown to keep its accuracy (summary.md: Chance level)")
                else:
                    r["report"] = known[r["key"]]
            return
    by_kl = metric in FIDELITY_METRICS
    order = report_order(front, speed)
    if by_kl:   # slowest first along the front as the search saw it (its own speeds): the closest to the full model
        order = sorted(range(len(front)), key=lambda i: -float(front[i].get(speed) or 0.0))
    # the fastest record known to be within min(PICK_POINTS): (speed, key); the full model to begin with
    fastest_ok: tuple[float, str] | None = None
    if full is not None and speed_of(full, speed) is not None:
        fastest_ok = (float(speed_of(full, speed)), "the full model")
    failed: dict[str, Any] | None = None   # by_kl: the record that failed clearly
    gen_failed: dict[str, Any] | None = None   # by_kl: the first record that failed the generation screen
    by_weights: dict[str, dict[str, Any]] = {}   # weights_key -> the record whose torch-scored report it has
    screens: dict[str, dict[str, Any]] = {}      # weights_key -> generation screen
    for n, i in enumerate(order):
        r = front[i]
        if r["key"] == full_key:
            r["report"] = full["report"]
            continue
        if r["key"] not in known:
            why = _report_not_needed(r, fastest_ok, failed, metric, speed) or _generation_not_needed(r, gen_failed, metric)
            if why:
                r["report_skipped"] = why
                continue
            if screen is not None:
                g = _screen(r, screen, screens, known_screens or {}, save_screen, progress, (n, len(order)))
                if not g.get("passed"):
                    r["report_skipped"] = (f"fails the generation check on its weights in PyTorch ({g.get('summary')}), "
                                           "so export would refuse its bundle")
                    if by_kl and gen_failed is None and fidelity_kl(r, metric or "") is not None:
                        gen_failed = r
                    continue
        same = by_weights.get(weights_key(r))
        if same is not None and r["key"] not in known:
            r["report"] = dict(same["report"], same_weights_as=same["key"])
            if save is not None:
                save(r["key"], r["report"])
        else:
            if progress:
                progress(n, len(order), "report split")
            r["report"] = run(r)
        if (r["report"] or {}).get("scored_with") == "torch":
            by_weights.setdefault(weights_key(r), r)
        drop = record_drop(r, full, "report")
        s = speed_of(r, speed)
        if drop is not None and drop <= min(PICK_POINTS) + 1e-9 and s is not None:
            if fastest_ok is None or s < fastest_ok[0]:
                fastest_ok = (s, r["key"])
        if by_kl and failed is None and failed_clearly(r):
            failed = r


def _screen(r: dict[str, Any], screen: Any, screens: dict[str, dict[str, Any]], known: Mapping[str, Any],
            save: Any, progress: Any, at: tuple[int, int]) -> dict[str, Any]:
    """`r`'s generation screen: shared by records with the same weights, read back on resume, else run."""
    wk = weights_key(r)
    g = known.get(r["key"])
    if g is None:
        g = screens.get(wk)
        if g is None:
            if progress:
                progress(at[0], at[1], "generation check")
            g = dict(screen(SubnetConfig.from_dict(r["subnet"])))
        if save is not None:
            save(r["key"], g)
    screens.setdefault(wk, g)
    r["generation_screen"] = g
    return g


def _generation_not_needed(r: Mapping[str, Any], gen_failed: Mapping[str, Any] | None, metric: str | None) -> str | None:
    """Ranked by a fidelity KL: a record whose KL is no better than that of one that failed the generation
    screen is not screened (nor scored): a prediction from the KL, as after a clear failure on the report
    split. Its evidence is thin and stated as such: in three cold demos on the default model
    (bench/results/demo_cold_auto_epyc, demo_cold_screen_epyc, demo_cold_screen2_epyc) the verdicts of 14
    front records followed their choice KL with no exception (passes at 0.0017-0.0045, failures at 0.060-3.0)."""
    if gen_failed is None or not _kl_no_better(r, gen_failed, metric):
        return None
    return (f"{_kl_phrase(r, gen_failed, metric)}, which fails the "
            f"generation check ({gen_failed['generation_screen'].get('summary')})")


def _kl_no_better(r: Mapping[str, Any], failed: Mapping[str, Any], metric: str | None) -> bool:
    """Whether `r`'s fidelity KL is at least that of `failed` (both known)."""
    kl, bad = fidelity_kl(r, metric or ""), fidelity_kl(failed, metric or "")
    return kl is not None and bad is not None and kl >= bad


def _kl_phrase(r: Mapping[str, Any], failed: Mapping[str, Any], metric: str | None) -> str:
    return (f"{metric} {fidelity_kl(r, metric or ''):.3g} is no better than that of {failed['key']} "
            f"({fidelity_kl(failed, metric or ''):.3g})")


def _report_not_needed(r: Mapping[str, Any], fastest_ok: tuple[float, str] | None, failed: Mapping[str, Any] | None,
                       metric: str | None, speed: str) -> str | None:
    """Why no pick rule needs `r`'s report split (see `evaluate_reports`), or None when one may."""
    s = speed_of(r, speed)
    if fastest_ok is not None and s is not None and s > fastest_ok[0]:
        return (f"{fastest_ok[1]} is faster ({speed} {fastest_ok[0]:.2f} vs {s:.2f}) and within "
                f"{min(PICK_POINTS):g} point(s) on the report split, so no pick rule takes this one")
    if failed is not None and _kl_no_better(r, failed, metric):
        p = failed["report"]["paired"]
        return (f"{_kl_phrase(r, failed, metric)}, "
                f"which is {-p['points']:.2f} ± {p['stderr']:.2f} points below the full model "
                f"on the report split ({p.get('items')} items)")
    return screened_out(r)
