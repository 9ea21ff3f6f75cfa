"""Weight formats a model's source file already holds its decoder weights in, so they ship without loss.

A GGUF's quantized blocks are a weight format of their own: Q4_1 is 32 weights per block with an f16
scale and an f16 minimum (hwnas's `int4_minmax_g32`), Q4_0 32 weights with one f16 scale and codes
around 8 (`int4_sym_g32`, INC's symmetric full-range grid finds the same codes). transformers
dequantizes the file to float when it loads it, so every other int4 format rounds those weights a
second time; in the source's own format the bundle computes what the file computes. Read from the
GGUF header and tensor table only (memory-mapped), without dequantizing anything.
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# GGUF tensor type -> the hwnas weight format that reproduces its codes and scales
GGUF_FORMATS = {"Q4_1": "int4_minmax_g32", "Q4_0": "int4_sym_g32"}


def lossless_formats(source: Any) -> tuple[str, ...]:
    """hwnas weight formats in which the source's decoder linear weights are stored exactly (most common
    first); empty for a float checkpoint. `source`: a `ModelSource` or its `to_dict()`."""
    kind = source.get("kind") if isinstance(source, dict) else getattr(source, "kind", None)
    path = source.get("path") if isinstance(source, dict) else getattr(source, "path", None)
    if kind not in ("default", "gguf") or not path:
        return ()
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(Path(path)))
    except Exception as e:  # noqa: BLE001 - an optimisation: a file gguf cannot read just gets no extra format
        log.debug("cannot read the GGUF tensor table of %s: %s", path, e)
        return ()
    counts: Counter[str] = Counter()
    for t in reader.tensors:
        if t.name.startswith("blk.") and t.name.endswith(".weight") and len(t.shape) == 2:
            counts[t.tensor_type.name] += int(t.n_elements)
    return tuple(GGUF_FORMATS[name] for name, _ in counts.most_common() if name in GGUF_FORMATS)
