"""Calibration text: a seeded sample of documents from calibration/ or a user's file.

Accepts .jsonl ({"text": ...} per line), .json (a list of strings or of {"text"}), .txt (one
document per non-empty line) files, or a folder of them.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from hwnas.datadir import CALIBRATION_DIR
from hwnas.errors import DataError

SUFFIXES = (".jsonl", ".json", ".txt")


def load_texts(path: str | Path | None = None, n: int | None = None, seed: int = 0, min_chars: int = 20) -> list[str]:
    """Up to `n` documents (seeded sample; all when n is None) from `path` (default: calibration/)."""
    path = Path(path) if path else CALIBRATION_DIR
    if not path.exists():
        raise DataError(f"calibration data {path} not found; give a .jsonl/.json/.txt file or a folder of them")
    files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise DataError(f"calibration folder {path} holds no {'/'.join(SUFFIXES)} files")
    texts: list[str] = []
    for f in files:
        texts += _read(f)
    texts = [t for t in texts if len(t.strip()) >= min_chars]
    if not texts:
        raise DataError(f"calibration data {path} holds no text of at least {min_chars} characters")
    if n is not None and n < len(texts):
        idx = np.random.default_rng(seed).choice(len(texts), size=n, replace=False)
        texts = [texts[i] for i in sorted(idx)]
    return texts


def texts_sha256(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(hashlib.sha256(t.encode()).digest())
    return h.hexdigest()


def _read(f: Path) -> list[str]:
    if f.suffix not in SUFFIXES:
        raise DataError(f"calibration file {f} has unknown format {f.suffix!r}; accepted: {list(SUFFIXES)}")
    raw = f.read_text(encoding="utf-8")
    if f.suffix == ".txt":
        return [line for line in raw.splitlines() if line.strip()]
    if f.suffix == ".json":
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(f"{f}: not valid JSON ({e.msg}, line {e.lineno})") from None
        if not isinstance(data, list):
            raise DataError(f"{f}: expected a JSON list of strings or {{\"text\": ...}} objects")
        return [d if isinstance(d, str) else str(d.get("text", "")) for d in data]
    out = []
    for i, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{f}:{i}: malformed JSON line ({e.msg})") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
            raise DataError(f"{f}:{i}: expected an object with a string field \"text\"")
        out.append(rec["text"])
    return out
