"""Lossless speculative bundles: the full model plus a subnet of it as the draft model.

Layout: an ordinary bundle of the full model, plus ``draft/`` (the subnet's bundle files: IR,
config, tokenizer) and ``hwnas_speculative.json`` (draft subnet, number of draft tokens per
step); both are listed with their sha256 in the bundle's manifest, so `verify` checks them.
openvino-genai's draft-model support runs the pair; greedy output equals the full model's.
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
