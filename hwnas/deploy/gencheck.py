"""The generation-quality check on bundles (`hwnas.accuracy.genquality` applied to an OpenVINO IR).

`export_bundle` calls `check_built_bundle` on the finished IR: the full torch model's greedy
generations are the reference, the bundle decodes greedily with `EXACT_PROPERTIES` (f32 math and
KV cache, so the same IR on the same CPU gives the same tokens), and a failing bundle is refused
unless forced. The manifest's ``generation`` record keeps the full model's reference tokens and
the thresholds, so `verify_generation` re-checks a bundle without the full model (agreement and
repetition; the NLL only when a full model is given).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from hwnas.accuracy.genquality import (
    DEFAULT_THRESHOLDS,
    DegenerateGenerationError,
    GenQualityReport,
    GenThresholds,
    check_candidate,
    failure_message,
    generation_record,
    reference_cache_key,
    reference_from_record,
    reference_generations,
    score_generations,
    TorchCandidate,
)
from hwnas.deploy.manifest import EXACT_PROPERTIES, IR_XML

log = logging.getLogger(__name__)


class BundleCandidate:
    """Greedy decoding and teacher-forced argmax with a bundle's stateful IR (compiled once)."""

    def __init__(self, folder: str | Path, properties: Mapping[str, Any] | None = None, eos_ids: Sequence[int] = ()):
        import openvino as ov

        self.compiled = ov.Core().compile_model(str(Path(folder) / IR_XML), "CPU", dict(properties or EXACT_PROPERTIES))
        self.request = self.compiled.create_infer_request()
        self.eos_ids = tuple(eos_ids)

    def _infer(self, ids: Sequence[int], past: int) -> Any:
        import numpy as np

        t = len(ids)
        res = self.request.infer({
            "input_ids": np.asarray([list(ids)], dtype=np.int64),
            "attention_mask": np.ones((1, past + t), dtype=np.int64),
            "position_ids": np.arange(past, past + t, dtype=np.int64)[None],
            "beam_idx": np.zeros(1, dtype=np.int32),
        })
        return res[self.compiled.output("logits")][0]

    def generate(self, prompt_ids: Sequence[int], max_new_tokens: int) -> list[int]:
        self.request.reset_state()
        ids, past, out = list(prompt_ids), 0, []
        for _ in range(max_new_tokens):
            logits = self._infer(ids, past)
            past += len(ids)
            tok = int(logits[-1].argmax())
            out.append(tok)
            if tok in self.eos_ids:
                break
            ids = [tok]
        return out

    def next_tokens(self, prompt_ids: Sequence[int], continuation: Sequence[int]) -> list[int]:
        if not continuation:
            return []
        self.request.reset_state()
        logits = self._infer(list(prompt_ids) + list(continuation), 0)
        p = len(prompt_ids)
        return [int(t) for t in logits[p - 1:p - 1 + len(continuation)].argmax(-1)]


def prepare_reference(loaded: Any) -> Any:
    """The full model's reference generations (cached); call before quantization may touch its weights."""
    return reference_generations(loaded.model, loaded.tokenizer, cache_key=reference_cache_key(loaded))


def check_built_bundle(folder: str | Path, loaded: Any, *, thresholds: GenThresholds | None = None,
                       allow_degenerate: bool = False, what: str = "the bundle", reference: Any = None,
                       nll_model: bool = True, properties: Mapping[str, Any] | None = None) -> dict:
    """Score a freshly built bundle against the full model's `reference` (default: computed from
    `loaded.model`); the manifest record. `nll_model`: loaded.model is intact, score NLL with it.
    properties: the numerics to decode with (default `EXACT_PROPERTIES`; a bundle's numeric runtime
    genes over them, `hwnas.deploy.settings.numeric_properties`), recorded for `verify_generation`.

    Raises DegenerateGenerationError (one line) when it fails, unless `allow_degenerate`.
    """
    ref = reference or prepare_reference(loaded)
    props = dict(properties or EXACT_PROPERTIES)
    cand = BundleCandidate(folder, props, ref.eos_ids)
    report, toks = check_candidate(cand, ref, full_model=loaded.model if nll_model else None,
                                   thresholds=thresholds or DEFAULT_THRESHOLDS)
    log.info("generation check of %s: %s", what, report.summary())
    if not report.passed and not allow_degenerate:
        raise DegenerateGenerationError(failure_message(what, report))
    return generation_record(ref, report, toks, forced_ship=not report.passed, properties=props)


def precheck_fake_quantized(dense: Any, subnet: Any, reference: Any, *, thresholds: GenThresholds | None = None,
                            what: str = "the subnet") -> GenQualityReport:
    """The generation check on the dense torch subnet with its weight formats fake-quantized (the codes
    INC ships, `hwnas.model.fakequant.apply_genes_dense`), before any IR is built: seconds, where a
    quantized IR costs minutes. Runtime genes (u8 KV cache, dynamic quantization) are not in it, so a
    pass is no verdict (the bundle is checked as built); a fail already refuses the weights.
    Raises DegenerateGenerationError when it fails."""
    from hwnas.model.fakequant import apply_genes_dense

    restore = apply_genes_dense(dense, subnet)
    try:
        report, _ = check_candidate(TorchCandidate(dense, reference.eos_ids), reference,
                                    thresholds=thresholds or DEFAULT_THRESHOLDS, batched=True)
    finally:
        restore()
    log.info("generation pre-check of %s (fake-quantized weights in PyTorch): %s", what, report.summary())
    if not report.passed:
        raise DegenerateGenerationError(failure_message(f"{what} (PyTorch pre-check of its fake-quantized weights, "
                                                        "before its IR was built)", report))
    return report


def verify_generation(folder: str | Path, record: dict, *, full_model: Any = None) -> tuple[GenQualityReport, list[str]]:
    """Regenerate with the bundle and judge it by the record's thresholds (NLL only with `full_model`).

    Returns the report and warnings (tokens differing from the build host's, expected only on
    another CPU or OpenVINO version).
    """
    ref = reference_from_record(record)
    thresholds = GenThresholds.from_dict(record.get("thresholds") or {})
    cand = BundleCandidate(folder, record.get("properties") or EXACT_PROPERTIES, ref.eos_ids)
    if full_model is not None:
        report, toks = check_candidate(cand, ref, full_model=full_model, thresholds=thresholds)
    else:
        toks = [cand.generate(ids, ref.max_new_tokens) for ids in ref.prompt_ids]
        forced = [cand.next_tokens(ids, r) for ids, r in zip(ref.prompt_ids, ref.tokens)]
        report = score_generations([p.id for p in ref.prompts], [p.kind for p in ref.prompts], toks, ref.tokens,
                                   forced, thresholds=thresholds, n=int(record.get("ngram") or 3))
    warnings = []
    built = [list(p.get("tokens") or []) for p in record["prompts"]]
    differ = sum(int(a != b) for a, b in zip(toks, built))
    if differ:
        warnings.append(f"greedy tokens differ from the build host's on {differ} of {len(built)} generation-check prompts")
    return report, warnings
