"""Generation quality: do a candidate's greedy generations stay close to the full model's?

Multiple-choice accuracy near chance cannot see a subnet that generates gibberish or loops
("the three colours, the three colours, ..."). This check runs fixed prompts
(``calibration/genquality/prompts.jsonl``: instructions in the chat template, plain-text
continuations), lets the candidate (a torch model or supernet slice, or a bundle through
`hwnas.deploy.gencheck`) decode greedily up to `MAX_NEW_TOKENS` tokens per prompt, and scores
each generation against the full model:

- ``prefix``: length of the prefix the candidate's greedy tokens share with the full model's own
  greedy tokens, as a fraction of the full model's (1.0 = identical generation);
- ``forced``: teacher-forced top-1 agreement: fed the full model's greedy continuation, how often
  the candidate's next-token argmax is the full model's token (robust to one early divergence);
- ``repeat``: repeated `NGRAM`-gram fraction of the candidate's generation (share of its n-grams
  that already occurred earlier in it), reported with the full model's own (``ref_repeat``);
- ``nll``: the full model's mean per-token negative log-likelihood (nats) of the candidate's
  generated text given the prompt, next to the full model's NLL of its own generation (``ref_nll``).

Aggregates are means over prompts; `GenThresholds` decides pass/fail on them (see
`DEFAULT_THRESHOLDS` for where its numbers come from). Candidates are any object with
``generate(prompt_ids, max_new_tokens) -> tokens`` and ``next_tokens(prompt_ids, continuation)
-> argmax tokens`` (`TorchCandidate` here; the bundle one lives in the deploy stage).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

from hwnas.datadir import CALIBRATION_DIR
from hwnas.errors import DataError, ExportError

log = logging.getLogger(__name__)

PROMPTS_FILE = CALIBRATION_DIR / "genquality" / "prompts.jsonl"
MAX_NEW_TOKENS = 32
NGRAM = 3
KINDS = ("instruction", "continuation")
RECORD_VERSION = 1


class DegenerateGenerationError(ExportError):
    """A subnet's greedy generations fail the generation-quality check."""


# ----------------------------------------------------------------------------- prompts

@dataclass(frozen=True)
class Prompt:
    id: str
    kind: str  # "instruction" | "continuation"
    text: str


def load_prompts(path: str | Path | None = None) -> list[Prompt]:
    """The fixed prompts (default: calibration/genquality/prompts.jsonl); DataError names a bad line."""
    path = Path(path) if path else PROMPTS_FILE
    if not path.is_file():
        raise DataError(f"generation-check prompts {path} not found; give a .jsonl file of {{id, kind, text}}")
    out: list[Prompt] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            p = Prompt(str(d["id"]), str(d["kind"]), str(d["text"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"{path} line {n}: expected {{\"id\", \"kind\", \"text\"}} JSON") from None
        if p.kind not in KINDS or not p.text.strip():
            raise DataError(f"{path} line {n}: kind {p.kind!r} (accepted: {list(KINDS)}) with non-empty text")
        out.append(p)
    if not out:
        raise DataError(f"{path} holds no prompts")
    if len({p.id for p in out}) != len(out):
        raise DataError(f"{path}: prompt ids are not unique")
    return out


def prompts_sha256(prompts: Sequence[Prompt]) -> str:
    canon = json.dumps([[p.id, p.kind, p.text] for p in prompts], separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def encode_prompt(tokenizer: Any, prompt: Prompt) -> list[int]:
    """Token ids: instructions through the chat template (when the tokenizer has one), else plain text."""
    if prompt.kind == "instruction" and getattr(tokenizer, "chat_template", None):
        enc = tokenizer.apply_chat_template([{"role": "user", "content": prompt.text}], add_generation_prompt=True,
                                            tokenize=True)
        ids = enc["input_ids"] if hasattr(enc, "keys") else enc
    else:
        text = prompt.text if prompt.kind == "continuation" else f"Question: {prompt.text}\nAnswer:"
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = [int(i) for i in ids]
    if not ids:
        raise DataError(f"prompt {prompt.id!r} tokenizes to nothing")
    return ids


def eos_token_ids(tokenizer: Any = None, model: Any = None) -> tuple[int, ...]:
    """Token ids that end a generation (the model's generation config, else the tokenizer's EOS)."""
    ids: list[int] = []
    gc = getattr(model, "generation_config", None)
    for src in (getattr(gc, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(src, int):
            ids.append(src)
        elif isinstance(src, (list, tuple)):
            ids += [int(i) for i in src]
    return tuple(sorted(set(ids)))


# ----------------------------------------------------------------------------- scores of token sequences

def repeated_ngram_fraction(tokens: Sequence[int], n: int = NGRAM) -> float:
    """Share of the sequence's n-grams that already occurred earlier in it (0 = none, ->1 = one loop)."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    return (len(grams) - len(set(grams))) / len(grams)


def prefix_agreement(candidate: Sequence[int], reference: Sequence[int]) -> float:
    """Length of the common prefix as a fraction of the reference's length (1.0 when both are empty)."""
    if not reference:
        return 1.0 if not candidate else 0.0
    k = 0
    for a, b in zip(candidate, reference):
        if a != b:
            break
        k += 1
    return k / len(reference)


def token_agreement(predicted: Sequence[int], reference: Sequence[int]) -> float:
    """Share of reference positions where `predicted` holds the same token (missing positions count as misses)."""
    if not reference:
        return 1.0
    return sum(int(a == b) for a, b in zip(predicted, reference)) / len(reference)


# ----------------------------------------------------------------------------- torch models

class Candidate(Protocol):
    def generate(self, prompt_ids: Sequence[int], max_new_tokens: int) -> list[int]: ...

    def next_tokens(self, prompt_ids: Sequence[int], continuation: Sequence[int]) -> list[int]: ...


class TorchCandidate:
    """A torch causal LM (full model, dense subnet, or a supernet inside `supernet.subnet(cfg)`)."""

    def __init__(self, model: Any, eos_ids: Sequence[int] = ()):
        self.model = model
        self.eos_ids = tuple(eos_ids)

    def generate(self, prompt_ids: Sequence[int], max_new_tokens: int) -> list[int]:
        """Greedy tokens with the KV cache; stops after an EOS token (kept) or `max_new_tokens`."""
        import torch

        x = torch.tensor([list(prompt_ids)], dtype=torch.long)
        past, out = None, []
        with torch.no_grad():
            for _ in range(max_new_tokens):
                o = self.model(input_ids=x, past_key_values=past, use_cache=True)
                past = o.past_key_values
                tok = int(o.logits[0, -1].argmax())
                out.append(tok)
                if tok in self.eos_ids:
                    break
                x = torch.tensor([[tok]], dtype=torch.long)
        return out

    def generate_many(self, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> list[list[int]]:
        """Greedy tokens of every prompt in one left-padded batch: the same tokens as `generate` per
        prompt up to float rounding (a near-tie can flip), in a fraction of its time (on two cores, 20
        prompts decode in about the time of three). For screens only: the full model's reference and a
        bundle's verdict decode one prompt at a time."""
        import torch

        n, width = len(prompts), max(len(p) for p in prompts)
        ids = torch.zeros((n, width), dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
            mask[i, width - len(p):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out: list[list[int]] = [[] for _ in range(n)]
        done = [False] * n
        past = None
        with torch.no_grad():
            for _ in range(max_new_tokens):
                o = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=past, use_cache=True)
                past = o.past_key_values
                nxt = o.logits[:, -1].argmax(-1)
                for i, tok in enumerate(nxt.tolist()):
                    if not done[i]:
                        out[i].append(int(tok))
                        done[i] = int(tok) in self.eos_ids
                if all(done):
                    break
                ids = nxt[:, None]
                mask = torch.cat([mask, torch.ones((n, 1), dtype=torch.long)], dim=1)
                pos = pos[:, -1:] + 1
        return out

    def logits(self, prompt_ids: Sequence[int], continuation: Sequence[int]) -> Any:
        """float32 logits predicting each continuation token, shape [len(continuation), vocab]."""
        import torch

        ids = list(prompt_ids) + list(continuation)
        with torch.no_grad():
            lg = self.model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False).logits[0]
        p = len(prompt_ids)
        return lg[p - 1:p - 1 + len(continuation)].float()

    def next_tokens(self, prompt_ids: Sequence[int], continuation: Sequence[int]) -> list[int]:
        if not continuation:
            return []
        return [int(t) for t in self.logits(prompt_ids, continuation).argmax(-1)]

    def nll(self, prompt_ids: Sequence[int], continuation: Sequence[int]) -> float:
        """Mean negative log-likelihood (nats per token) of `continuation` given the prompt."""
        import torch

        if not continuation:
            return 0.0
        lp = torch.log_softmax(self.logits(prompt_ids, continuation), -1)
        tgt = torch.tensor(list(continuation), dtype=torch.long)
        return float(-lp.gather(1, tgt[:, None]).mean())


# ----------------------------------------------------------------------------- thresholds and report

@dataclass(frozen=True)
class GenThresholds:
    """Pass/fail limits on the aggregates (means over prompts). None disables a limit.

    min_prefix: mean matching-prefix fraction; min_forced: mean teacher-forced agreement;
    max_repeat_excess: mean over prompts of max(0, candidate's repeated n-gram fraction minus the
    full model's); max_nll_excess: mean candidate NLL minus mean NLL of the full model's own
    generations (nats/token, needs the full model).
    """

    min_prefix: float | None = None
    min_forced: float | None = None
    max_repeat_excess: float | None = None
    max_nll_excess: float | None = None

    def to_dict(self) -> dict:
        return {"min_prefix": self.min_prefix, "min_forced": self.min_forced,
                "max_repeat_excess": self.max_repeat_excess, "max_nll_excess": self.max_nll_excess}

    @classmethod
    def from_dict(cls, d: Any) -> "GenThresholds":
        if not isinstance(d, dict):
            raise DataError(f"generation thresholds must be an object, got {type(d).__name__}")
        unknown = sorted(set(d) - set(cls().to_dict()))
        if unknown:
            raise DataError(f"unknown generation threshold {unknown[0]!r}; accepted: {sorted(cls().to_dict())}")
        vals = {}
        for k, v in d.items():
            if v is not None and not isinstance(v, (int, float)):
                raise DataError(f"generation threshold {k!r} must be a number or null, got {v!r}")
            vals[k] = None if v is None else float(v)
        return cls(**vals)


# PROVISIONAL: to be replaced by values chosen from bench/results/genquality_calibration.json
# (bench/genquality_calibration.py: the default model's own int8 bundle vs known-broken subnets,
# 20 prompts x 32 tokens). The bench did not finish on the shared host before the deadline; these
# are first guesses. Measured so far only on tiny random models: an untied 4-layer model's 2-3
# layer subnets score prefix 0.01-0.04, forced 0.19-0.38 (fail); the model against itself 1.00.
DEFAULT_THRESHOLDS = GenThresholds(min_prefix=0.30, min_forced=0.70, max_repeat_excess=0.15, max_nll_excess=1.0)


@dataclass(frozen=True)
class PromptScore:
    id: str
    kind: str
    tokens: int
    prefix: float
    forced: float
    repeat: float
    ref_repeat: float
    nll: float | None = None
    ref_nll: float | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "PromptScore":
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class GenQualityReport:
    """Per-prompt scores, their means, the thresholds applied and the verdict with its reasons."""

    prompts: tuple[PromptScore, ...]
    thresholds: GenThresholds
    aggregate: dict = field(default_factory=dict)
    passed: bool = True
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"passed": self.passed, "reasons": list(self.reasons), "aggregate": dict(self.aggregate),
                "thresholds": self.thresholds.to_dict(), "prompts": [p.to_dict() for p in self.prompts]}

    @classmethod
    def from_dict(cls, d: Any) -> "GenQualityReport":
        if not isinstance(d, dict) or not isinstance(d.get("prompts"), list):
            raise DataError("generation report must be an object with a 'prompts' list")
        return cls(prompts=tuple(PromptScore.from_dict(p) for p in d["prompts"]),
                   thresholds=GenThresholds.from_dict(d.get("thresholds") or {}),
                   aggregate=dict(d.get("aggregate") or {}), passed=bool(d.get("passed")),
                   reasons=tuple(d.get("reasons") or ()))

    def summary(self) -> str:
        a = self.aggregate
        parts = [f"prefix {a['prefix']:.2f}", f"forced {a['forced']:.2f}", f"repeat +{a['repeat_excess']:.2f}"]
        if a.get("nll_excess") is not None:
            parts.append(f"nll {a['nll_excess']:+.2f}")
        verdict = "pass" if self.passed else "FAIL: " + "; ".join(self.reasons)
        return f"{len(self.prompts)} prompts, " + ", ".join(parts) + f" ({verdict})"


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def score_generations(ids: Sequence[str], kinds: Sequence[str], candidate: Sequence[Sequence[int]],
                      reference: Sequence[Sequence[int]], forced: Sequence[Sequence[int]], *,
                      nll: Sequence[float] | None = None, ref_nll: Sequence[float] | None = None,
                      thresholds: GenThresholds = DEFAULT_THRESHOLDS, n: int = NGRAM) -> GenQualityReport:
    """Score per prompt and decide: candidate/reference greedy tokens, `forced` = the candidate's
    teacher-forced argmax along the reference; `nll`/`ref_nll` from the full model when available."""
    if not (len(ids) == len(kinds) == len(candidate) == len(reference) == len(forced)):
        raise ValueError("score_generations: one entry per prompt in every sequence")
    rows = []
    for i, pid in enumerate(ids):
        rows.append(PromptScore(
            id=pid, kind=kinds[i], tokens=len(candidate[i]),
            prefix=prefix_agreement(candidate[i], reference[i]), forced=token_agreement(forced[i], reference[i]),
            repeat=repeated_ngram_fraction(candidate[i], n), ref_repeat=repeated_ngram_fraction(reference[i], n),
            nll=None if nll is None else float(nll[i]), ref_nll=None if ref_nll is None else float(ref_nll[i])))
    agg = {
        "prefix": _mean([r.prefix for r in rows]),
        "forced": _mean([r.forced for r in rows]),
        "repeat": _mean([r.repeat for r in rows]),
        "ref_repeat": _mean([r.ref_repeat for r in rows]),
        "repeat_excess": _mean([max(0.0, r.repeat - r.ref_repeat) for r in rows]),
        "exact": sum(int(r.prefix == 1.0 and r.tokens == len(reference[i])) for i, r in enumerate(rows)),
        "nll": None if nll is None else _mean([r.nll for r in rows]),
        "ref_nll": None if ref_nll is None else _mean([r.ref_nll for r in rows]),
    }
    agg["nll_excess"] = None if nll is None or ref_nll is None else agg["nll"] - agg["ref_nll"]
    reasons = _judge(agg, thresholds)
    return GenQualityReport(tuple(rows), thresholds, agg, not reasons, tuple(reasons))


def _judge(agg: dict, t: GenThresholds) -> list[str]:
    reasons = []
    if t.min_prefix is not None and agg["prefix"] < t.min_prefix:
        reasons.append(f"matching prefix {agg['prefix']:.2f} < {t.min_prefix:.2f}")
    if t.min_forced is not None and agg["forced"] < t.min_forced:
        reasons.append(f"teacher-forced agreement {agg['forced']:.2f} < {t.min_forced:.2f}")
    if t.max_repeat_excess is not None and agg["repeat_excess"] > t.max_repeat_excess:
        reasons.append(f"repeated {NGRAM}-grams +{agg['repeat_excess']:.2f} over the full model's > {t.max_repeat_excess:.2f}")
    if t.max_nll_excess is not None and agg.get("nll_excess") is not None and agg["nll_excess"] > t.max_nll_excess:
        reasons.append(f"full-model NLL {agg['nll_excess']:+.2f} nats/token over its own generations > {t.max_nll_excess:.2f}")
    return reasons


# ----------------------------------------------------------------------------- the check

@dataclass(frozen=True)
class Reference:
    """The full model's greedy generations on the prompts: what candidates are compared with."""

    prompts: tuple[Prompt, ...]
    prompt_ids: tuple[tuple[int, ...], ...]
    tokens: tuple[tuple[int, ...], ...]
    nll: tuple[float, ...]
    max_new_tokens: int
    eos_ids: tuple[int, ...]

    @property
    def prompts_sha256(self) -> str:
        return prompts_sha256(self.prompts)


def reference_cache_key(loaded: Any) -> str | None:
    """The reference cache's key for a loaded model: its content hash and dtype, so the search's screen
    and export share one reference computation. None when the model has no content hash."""
    try:
        return f"{loaded.source.content_sha256()}|{next(loaded.model.parameters()).dtype}"
    except Exception as e:  # noqa: BLE001 - no cache then, the check still runs
        log.debug("no reference cache key: %s", e)
        return None


def reference_generations(model: Any, tokenizer: Any, prompts: Sequence[Prompt] | None = None,
                          max_new_tokens: int = MAX_NEW_TOKENS, *, cache_key: str | None = None) -> Reference:
    """Greedy generations of the full torch model (and their NLL under it), cached by `cache_key`
    (e.g. the model's content hash) in $HWNAS_CACHE_DIR/genquality when given."""
    prompts = tuple(prompts or load_prompts())
    eos = eos_token_ids(tokenizer, model)
    pids = tuple(tuple(encode_prompt(tokenizer, p)) for p in prompts)
    cache = _reference_cache(cache_key, pids, max_new_tokens, eos) if cache_key else None
    if cache is not None and cache.is_file():
        try:
            d = json.loads(cache.read_text())
            return Reference(prompts, pids, tuple(tuple(t) for t in d["tokens"]), tuple(d["nll"]), max_new_tokens, eos)
        except (OSError, ValueError, KeyError):
            log.warning("ignoring unreadable reference cache %s", cache)
    ref = TorchCandidate(model, eos)
    toks = tuple(tuple(ref.generate(ids, max_new_tokens)) for ids in pids)
    nll = tuple(ref.nll(ids, t) for ids, t in zip(pids, toks))
    if cache is not None:
        from hwnas.io import write_json_atomic

        try:
            write_json_atomic(cache, {"tokens": [list(t) for t in toks], "nll": list(nll)})
        except OSError as e:  # a cache is an optimisation
            log.warning("could not cache reference generations in %s: %s", cache, e)
    return Reference(prompts, pids, toks, nll, max_new_tokens, eos)


def _reference_cache(key: str, pids: Sequence[Sequence[int]], n: int, eos: Sequence[int]) -> Path:
    from hwnas.model.loading import cache_dir

    h = hashlib.sha256(json.dumps([RECORD_VERSION, key, [list(p) for p in pids], n, list(eos)]).encode()).hexdigest()[:16]
    return cache_dir() / "genquality" / f"ref-{h}.json"


def check_candidate(candidate: Candidate, reference: Reference, *, full_model: Any = None,
                    thresholds: GenThresholds = DEFAULT_THRESHOLDS,
                    batched: bool = False) -> tuple[GenQualityReport, list[list[int]]]:
    """Generate with `candidate` on the reference's prompts and score; `full_model` (torch) adds the NLL.
    batched: decode all prompts in one batch where the candidate can (`TorchCandidate.generate_many`),
    for screens that only need a verdict, not the exact tokens.

    Returns the report and the candidate's greedy tokens per prompt.
    """
    if batched and hasattr(candidate, "generate_many"):
        cand = candidate.generate_many(reference.prompt_ids, reference.max_new_tokens)
    else:
        cand = [candidate.generate(ids, reference.max_new_tokens) for ids in reference.prompt_ids]
    forced = [candidate.next_tokens(ids, ref) for ids, ref in zip(reference.prompt_ids, reference.tokens)]
    nll = None
    if full_model is not None:
        scorer = TorchCandidate(full_model, reference.eos_ids)
        nll = [scorer.nll(ids, c) for ids, c in zip(reference.prompt_ids, cand)]
    rep = score_generations([p.id for p in reference.prompts], [p.kind for p in reference.prompts], cand,
                            reference.tokens, forced, nll=nll, ref_nll=reference.nll if nll is not None else None,
                            thresholds=thresholds)
    return rep, cand


def generation_record(reference: Reference, report: GenQualityReport, candidate_tokens: Sequence[Sequence[int]],
                      *, forced_ship: bool = False, properties: dict | None = None) -> dict:
    """What a bundle manifest stores: prompts with the full model's greedy tokens (so `verify` can
    re-check without the full model), the bundle's own tokens, thresholds and the report."""
    return {
        "version": RECORD_VERSION, "prompts_sha256": reference.prompts_sha256, "ngram": NGRAM,
        "max_new_tokens": reference.max_new_tokens, "eos_ids": list(reference.eos_ids),
        "properties": dict(properties or {}), "thresholds": report.thresholds.to_dict(),
        "prompts": [{"id": p.id, "kind": p.kind, "prompt_ids": list(ids), "reference": list(ref), "ref_nll": nll,
                     "tokens": list(toks)}
                    for p, ids, ref, nll, toks in zip(reference.prompts, reference.prompt_ids, reference.tokens,
                                                      reference.nll, candidate_tokens)],
        "report": report.to_dict(), "passed": report.passed, "forced_ship": bool(forced_ship),
    }


def reference_from_record(record: dict) -> Reference:
    """Rebuild the Reference a bundle was checked against from its manifest record (DataError if malformed)."""
    try:
        ps = record["prompts"]
        prompts = tuple(Prompt(str(p["id"]), str(p["kind"]), "") for p in ps)
        return Reference(prompts, tuple(tuple(int(i) for i in p["prompt_ids"]) for p in ps),
                         tuple(tuple(int(i) for i in p["reference"]) for p in ps),
                         tuple(float(p.get("ref_nll") or 0.0) for p in ps),
                         int(record["max_new_tokens"]), tuple(int(i) for i in record.get("eos_ids") or ()))
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"manifest generation record is malformed ({type(e).__name__}: {e})") from None


def failure_message(what: str, report: GenQualityReport, flag: str = "--allow-degenerate") -> str:
    return (f"{what} fails the generation check ({'; '.join(report.reasons)}); it would generate degenerate text. "
            f"Choose another subnet, or pass {flag} to ship it anyway")
