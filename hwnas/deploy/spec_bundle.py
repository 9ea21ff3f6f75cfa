"""What a speculative bundle holds (``hwnas_speculative.json``, ``draft/``), how an openvino-genai
pipeline opens it, and the check that its greedy output equals the full model's.

Below `runtime` and `verify`, which need these, and below `speculative`, which builds such bundles
(with `export`), so that none of them imports another in a circle.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hwnas.errors import BundleError

SPEC_FILE = "hwnas_speculative.json"
DRAFT_DIR = "draft"


def read_spec(folder: str | Path, manifest: Any = None) -> dict | None:
    """The bundle's speculative record, or None for a plain bundle."""
    p = Path(folder) / SPEC_FILE
    if not p.is_file():
        return None
    try:
        d = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BundleError(f"{p} is not valid JSON: {e}") from None
    k = d.get("num_assistant_tokens")
    if not isinstance(k, int) or k < 1:
        raise BundleError(f"{p}: num_assistant_tokens {k!r} is invalid; accepted: an integer >= 1")
    return d


def draft_of(folder: str | Path, manifest: Any = None) -> tuple[Path | None, int]:
    """(draft folder, draft tokens per step) for a speculative bundle, (None, 0) for a plain one."""
    spec = read_spec(folder, manifest)
    if spec is None:
        return None, 0
    d = Path(folder) / DRAFT_DIR
    if not (d / "openvino_model.xml").is_file():
        raise BundleError(f"speculative bundle {folder} lacks {DRAFT_DIR}/openvino_model.xml")
    return d, int(spec["num_assistant_tokens"])


DEFAULT_DRAFT_TOKENS = 3
SPEC_SCHEMA_VERSION = 1


def num_draft_tokens(folder: str | Path) -> int:
    """Draft tokens per step of a speculative bundle, 0 for a plain bundle."""
    return draft_of(folder)[1]


def apply_draft_tokens(folder: str | Path, cfg: Any) -> Any:
    """Set `num_assistant_tokens` on an openvino_genai.GenerationConfig for a speculative bundle."""
    k = num_draft_tokens(folder)
    if k:
        cfg.num_assistant_tokens = k
    return cfg


def pipeline_kwargs(folder: str | Path, props: dict) -> dict:
    """Extra LLMPipeline / ContinuousBatchingPipeline properties: the draft model of a speculative bundle."""
    draft, _ = draft_of(folder)
    if draft is None:
        return {}
    import openvino_genai

    return {"draft_model": openvino_genai.draft_model(str(draft), "CPU", **props)}


def check_speculative(folder: str | Path, smoke: dict | None) -> tuple[list[str], list[str]]:
    """(checks, problems): the draft pipeline loads and its greedy output equals the full model's smoke tokens."""
    import openvino_genai

    from hwnas.deploy.manifest import EXACT_PROPERTIES

    checks, problems = [], []
    try:
        draft, k = draft_of(folder)
    except BundleError as e:
        return checks, [str(e)]
    if draft is None:
        return checks, problems
    props = {kk: str(v) for kk, v in EXACT_PROPERTIES.items()}
    try:
        pipe = openvino_genai.LLMPipeline(str(folder), "CPU", draft_model=openvino_genai.draft_model(str(draft), "CPU", **props),
                                          **props)
        smoke = smoke or {}
        want = list(smoke.get("tokens") or [])
        cfg = openvino_genai.GenerationConfig()
        cfg.max_new_tokens = len(want) or 8
        cfg.min_new_tokens = len(want) or 8
        cfg.do_sample = False
        cfg.num_assistant_tokens = k
        cfg.apply_chat_template = False
        ids = smoke.get("prompt_ids") or [0]
        import numpy as np
        import openvino as ov

        res = pipe.generate(openvino_genai.TokenizedInputs(ov.Tensor(np.asarray([ids], dtype=np.int64)),
                                                           ov.Tensor(np.ones((1, len(ids)), dtype=np.int64))), cfg)
        got = [int(t) for t in res.tokens[0]]
    except Exception as e:  # noqa: BLE001 - any openvino-genai failure is a verification failure
        return checks, [f"speculative pipeline (draft {DRAFT_DIR}/) failed: {type(e).__name__}: {e}"]
    if want and got != want:
        problems.append(f"speculative greedy tokens {got} differ from the full model's {want}")
    else:
        checks.append(f"speculative decoding with {k} draft tokens reproduces the full model's greedy tokens")
    return checks, problems
