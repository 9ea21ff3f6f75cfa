"""Choosing a speculative-decoding draft: a search objective of its own (`hwnas search --objective speculative`).

Candidates are subnets (a search's Pareto front, a profile's measured subnets, the default-draft rule,
cuts of the ranked layers at full width, and any given). For each, in order:

1. **acceptance**: per-position greedy agreement with the full model on its own greedy continuation
   of calibration prompts (`hwnas.accuracy.agreement.GreedyAgreement`: one forward pass per
   candidate through the supernet, recovery applied as the draft ships), appended to
   ``acceptance.jsonl`` as measured so an interrupted run resumes;
2. **timing**, once for all, in one interleaved session on this host under the target's properties
   (`hwnas.hardware.speculation.step_costs_ms`, on the same timing IRs `hwnas search` measures):
   each draft's decode step, the full model's decode step (plain TPOT) and its pass over k+1 tokens
   for every k up to `max_k`;
3. **prediction**: expected speculative tokens/s for every k (`expected_speed`); a candidate's best
   k is its argmax, the chosen (draft, k) the overall argmax, compared with the full model's plain
   decode speed in the same units. ``speculative.json`` (written atomically) holds all of it, and
   says plainly when no draft beats the full model.

`hwnas export --speculative --from OUT` ships the chosen draft with its k (`read_draft_search`).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from hwnas.errors import SearchError
from hwnas.model.space import SubnetConfig

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
KIND = "speculative-draft-search"
RESULTS_FILE = "speculative.json"
ACCEPTANCE_FILE = "acceptance.jsonl"
CONFIG_FILE = "config.json"
DEFAULT_MAX_K = 8
MAX_K = 16
DEFAULT_CUTS = (0.25, 1 / 3, 0.5, 2 / 3)  # fractions of the layers, most important first, at full MLP width
IDENTITY_KEYS = ("model_sha256", "target", "agreement", "calibration_sha256", "recovery", "seed")
Progress = Callable[[int, int, str], None]


@dataclass
class DraftCandidate:
    subnet: SubnetConfig
    sources: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- candidates
def candidate_drafts(space: Any, *, front: Sequence[SubnetConfig] = (), measured: Sequence[SubnetConfig] = (),
                     extra: Sequence[SubnetConfig] = (), cuts: Sequence[float] = DEFAULT_CUTS) -> list[DraftCandidate]:
    """Every distinct candidate draft (the full model excluded: it cannot draft for itself), each with
    where it came from. Given drafts (`extra`) must belong to the space."""
    from hwnas.hardware.speculation import default_draft
    from hwnas.model.supernet import shorthand_layers

    full = space.largest()
    width = max(full.mlp_widths)
    found: dict[str, DraftCandidate] = {}

    def add(cfg: SubnetConfig, source: str) -> None:
        if cfg == full:
            return
        c = found.setdefault(cfg.key, DraftCandidate(cfg))
        if source not in c.sources:
            c.sources.append(source)

    for cfg in extra:
        space.validate(cfg, structure=False)
        add(cfg, "--draft")
    add(default_draft(space.layer_order, space.num_layers, width), "default rule (most important half of the layers)")
    for f in cuts:
        n = min(space.num_layers - 1, max(1, round(f * space.num_layers)))
        if n >= 1:
            add(SubnetConfig(shorthand_layers(space, n), (width,) * n), f"ranked cut: {n} layers at full width")
    for cfg in front:
        add(cfg, "search Pareto front")
    for cfg in measured:
        add(cfg, "profile")
    return list(found.values())


def front_subnets(search_dir: str | Path) -> list[SubnetConfig]:
    """The subnets on a `hwnas search` folder's Pareto front (pareto.json)."""
    p = Path(search_dir) / "pareto.json"
    if not p.is_file():
        raise SearchError(f"--from {search_dir} holds no pareto.json; give the --out folder of `hwnas search`")
    try:
        recs = json.loads(p.read_text(encoding="utf-8"))
        return [SubnetConfig.from_dict(r["subnet"]) for r in recs]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise SearchError(f"{p} is not a Pareto front of `hwnas search`: {type(e).__name__}: {e}") from None


# ----------------------------------------------------------------------------- prediction
def rank_drafts(agreements: Mapping[str, Sequence[Sequence[bool]]], draft_tpot_ms: Mapping[str, float],
                verify_ms_of_k: Mapping[int, float], full_tpot_ms: float) -> dict[str, Any]:
    """Per candidate key: acceptance, tokens per step and predicted speed for every k, its best k;
    candidates sorted by best predicted tokens/s; the chosen (key, k) is the overall argmax.
    Speed-ups are against the full model's plain decode (1000 / `full_tpot_ms`), same units."""
    from hwnas.accuracy.agreement import acceptance_rate
    from hwnas.hardware.speculation import best_k, expected_speed

    if not agreements:
        raise SearchError("no candidate drafts to rank")
    full_tok_s = 1000.0 / full_tpot_ms
    ks = sorted(int(k) for k in verify_ms_of_k)
    rows = []
    for key, agree in agreements.items():
        preds = [expected_speed(agree, k, draft_tpot_ms[key], verify_ms_of_k[k]) for k in ks]
        best = best_k(agree, draft_tpot_ms[key], {k: verify_ms_of_k[k] for k in ks})
        rows.append({"key": key, "acceptance_rate": round(acceptance_rate(agree), 6), "draft_tpot_ms": draft_tpot_ms[key],
                     "predicted": [dict(p, speedup_vs_full=p["tokens_per_s"] / full_tok_s) for p in preds],
                     "best_k": best["k"], "best_tokens_per_s": best["tokens_per_s"],
                     "best_speedup_vs_full": best["tokens_per_s"] / full_tok_s})
    rows.sort(key=lambda r: -r["best_tokens_per_s"])
    top = rows[0]
    pays = top["best_tokens_per_s"] > full_tok_s
    verdict = (f"speculation pays: draft {top['key']} with k={top['best_k']} is predicted at "
               f"{top['best_tokens_per_s']:.1f} tokens/s, {top['best_speedup_vs_full']:.2f}x the full model's "
               f"{full_tok_s:.1f} tokens/s" if pays else
               f"no draft beats the full model: the best, {top['key']} with k={top['best_k']}, is predicted at "
               f"{top['best_tokens_per_s']:.1f} tokens/s vs the full model's {full_tok_s:.1f} tokens/s "
               f"({top['best_speedup_vs_full']:.2f}x); ship the full model without a draft")
    return {"full_model": {"tpot_ms": full_tpot_ms, "tokens_per_s": full_tok_s}, "verify_ms_of_k": dict(verify_ms_of_k),
            "candidates": rows, "chosen": {"key": top["key"], "k": top["best_k"], "tokens_per_s": top["best_tokens_per_s"],
                                           "speedup_vs_full": top["best_speedup_vs_full"]},
            "pays": pays, "verdict": verdict}


# ----------------------------------------------------------------------------- the run
def _bits(agree: Sequence[Sequence[bool]]) -> list[str]:
    return ["".join("1" if b else "0" for b in s) for s in agree]


def _unbits(rows: Sequence[str]) -> list[list[bool]]:
    return [[c == "1" for c in s] for s in rows]


def prepare_out(out: str | Path, identity: Mapping[str, Any], resume: bool) -> None:
    """Raise SearchError (touching nothing) unless `out` can be started, or resumed with the same identity."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise SearchError(f"--out {p} exists and is not a folder")
    nonempty = p.is_dir() and any(p.iterdir())
    if not resume:
        if nonempty:
            raise SearchError(f"--out {p} is not empty; pass --resume to continue that draft search or choose a new folder")
        return
    if not nonempty:
        return
    try:
        old = json.loads((p / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise SearchError(f"--resume: {p} holds no readable {CONFIG_FILE}, so it is not a draft search folder") from None
    if old.get("kind") != KIND:
        raise SearchError(f"--resume: {p} is not a draft search (hwnas search --objective speculative) folder")
    for k in IDENTITY_KEYS:
        a, b = old.get("identity", {}).get(k), identity.get(k)
        if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            raise SearchError(f"--resume: {p} was searched with a different {k}; use the same settings or a new --out")


def run_draft_search(supernet: Any, agreement: Any, candidates: Sequence[DraftCandidate], *, target: Any, out: str | Path,
                     model_id: str, identity: Mapping[str, Any], max_k: int = DEFAULT_MAX_K, resume: bool = False,
                     host: Any = None, run_info: Mapping[str, Any] | None = None, cache_dir: str | Path | None = None,
                     progress: Progress | None = None, status: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure every candidate's acceptance (resumable), time drafts and the full model's verification in
    one session, rank, and write OUT/speculative.json. Returns its content."""
    from hwnas.hardware.irexport import export_ir_cached
    from hwnas.hardware.speculation import step_costs_ms
    from hwnas.io import append_jsonl, read_jsonl, write_json_atomic

    if not isinstance(max_k, int) or not 1 <= max_k <= MAX_K:
        raise SearchError(f"--max-draft-tokens {max_k!r} is invalid; accepted: 1 to {MAX_K}")
    if not candidates:
        raise SearchError("no candidate drafts: give --draft, --from or --profile, or a model with more than one layer")
    prepare_out(out, identity, resume)
    say = status or (lambda msg: None)
    tick = progress or (lambda d, t, label="": None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    write_json_atomic(out / CONFIG_FILE, {"schema_version": SCHEMA_VERSION, "kind": KIND, "identity": dict(identity),
                                          "max_k": max_k, "candidates": [c.subnet.key for c in candidates],
                                          **dict(run_info or {})})
    done: dict[str, list[list[bool]]] = {}
    if (out / ACCEPTANCE_FILE).is_file():
        try:
            done = {r["key"]: _unbits(r["agreement"]) for r in read_jsonl(out / ACCEPTANCE_FILE)}
        except (json.JSONDecodeError, KeyError) as e:
            raise SearchError(f"{out / ACCEPTANCE_FILE} is corrupt: {e}") from None
    say("full model's greedy continuation")
    for i, c in enumerate(candidates):
        tick(i, len(candidates), f"acceptance {c.subnet.describe()}")
        if c.subnet.key in done:
            continue
        agree = agreement.measure(supernet, c.subnet)
        done[c.subnet.key] = agree
        append_jsonl(out / ACCEPTANCE_FILE, {"key": c.subnet.key, "subnet": c.subnet.to_dict(), "agreement": _bits(agree)})
    tick(len(candidates), len(candidates), "acceptance done")
    t_acc = time.perf_counter()

    full = supernet.full_config()
    irs = {}
    for cfg in [full] + [c.subnet for c in candidates]:
        say(f"timing IR {cfg.describe()}")
        irs[cfg.key] = export_ir_cached(key=f"{model_id}-{cfg.key}", build=lambda cfg=cfg: supernet.extract(cfg),
                                        cache_dir=cache_dir)[0]
    jobs = {full.key: (irs[full.key], [1] + [k + 1 for k in range(1, max_k + 1)])}
    jobs.update({c.subnet.key: (irs[c.subnet.key], [1]) for c in candidates})
    if host is None:
        from hwnas.hardware.host import detect_host

        host = detect_host()
    say(f"timing {len(candidates)} drafts and the full model's verification (interleaved)")
    t = step_costs_ms(jobs, target.resolved_properties(host), context=int(target.workload.prompt_tokens),
                      repeats=max(9, 3 * int(target.measure.repeats)), warmup=max(1, int(target.measure.warmup)),
                      progress=tick)
    verify = {k: t[full.key][k + 1] for k in range(1, max_k + 1)}
    ranked = rank_drafts({c.subnet.key: done[c.subnet.key] for c in candidates},
                         {c.subnet.key: t[c.subnet.key][1] for c in candidates}, verify, t[full.key][1])
    by_key = {c.subnet.key: c for c in candidates}
    for r in ranked["candidates"]:
        c = by_key[r["key"]]
        r.update(subnet=c.subnet.to_dict(), description=c.subnet.describe(), sources=c.sources,
                 draft_tpot_spread_ms=t["_spread"][r["key"]][1])
    ranked["chosen"]["subnet"] = by_key[ranked["chosen"]["key"]].subnet.to_dict()
    ranked["full_model"].update(key=full.key, tpot_spread_ms=t["_spread"][full.key][1])
    doc = {"schema_version": SCHEMA_VERSION, "kind": KIND, "identity": dict(identity), "agreement": agreement.describe(),
           "timing": {"harness": "hwnas.hardware.speculation.step_costs_ms on float timing IRs, interleaved rounds",
                      "context_tokens": int(target.workload.prompt_tokens), "host": host.fingerprint},
           **ranked, "elapsed_s": {"acceptance": round(t_acc - t0, 2), "timing": round(time.perf_counter() - t_acc, 2)},
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json_atomic(out / RESULTS_FILE, doc)
    return doc


# ----------------------------------------------------------------------------- reading it back
def is_draft_search(folder: str | Path) -> bool:
    return (Path(folder) / RESULTS_FILE).is_file() or (Path(folder) / ACCEPTANCE_FILE).is_file()


@dataclass(frozen=True)
class DraftPick:
    subnet: SubnetConfig
    k: int
    record: dict
    rule: str
    pays: bool
    model_sha256: str | None = None


def read_draft_search(folder: str | Path, pick: str | None = None) -> DraftPick:
    """The chosen (draft, k) of a draft search folder, or with `pick` (an index into its candidates,
    best first, or a subnet key) that candidate at its best k."""
    p = Path(folder) / RESULTS_FILE
    if not p.is_file():
        raise SearchError(f"--from {folder} holds no {RESULTS_FILE}; run `hwnas search --objective speculative --out "
                          f"{folder}` to the end first")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
        rows = doc["candidates"]
        chosen_key = doc["chosen"]["key"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise SearchError(f"{p} is not a draft search result: {type(e).__name__}: {e}") from None
    if pick is None or not str(pick).strip():
        rec = next(r for r in rows if r["key"] == chosen_key)
        rule = f"draft search {folder}: best predicted speed"
    elif str(pick).strip().isdigit():
        n = int(pick)
        if not 0 <= n < len(rows):
            raise SearchError(f"--pick {n} is beyond the {len(rows)} candidates of {p} (0-{len(rows) - 1}); or give a key")
        rec, rule = rows[n], f"draft search {folder}: candidate {n}"
    else:
        rec = next((r for r in rows if r["key"] == str(pick).strip()), None)
        if rec is None:
            keys = ", ".join(r["key"] for r in rows[:5])
            raise SearchError(f"--pick {pick!r} is not an index or a candidate key of {p} ({keys}...)")
        rule = f"draft search {folder}: key {rec['key']}"
    pays = rec["best_tokens_per_s"] > doc["full_model"]["tokens_per_s"]
    return DraftPick(SubnetConfig.from_dict(rec["subnet"]), int(rec["best_k"]), rec, rule, pays,
                     (doc.get("identity") or {}).get("model_sha256"))
