"""Converting a GGUF draws no third-party progress bar between hwnas's own output unless -v asks for it."""
from __future__ import annotations

import logging

import transformers.modeling_gguf_pytorch_utils as gguf_utils

from hwnas.model import loading


def _disabled(bar_factory) -> bool:
    bar = bar_factory([1, 2, 3], desc="Converting and de-quantizing GGUF tensors...")
    try:
        return bool(bar.disable)
    finally:
        bar.close()


def test_the_gguf_conversion_bar_is_off_unless_verbose():
    orig, level = gguf_utils.tqdm, loading.log.level
    try:
        loading.log.setLevel(logging.WARNING)
        with loading._quiet_gguf_progress():
            assert _disabled(gguf_utils.tqdm)
        assert gguf_utils.tqdm is orig
        loading.log.setLevel(logging.INFO)   # -v
        with loading._quiet_gguf_progress():
            assert gguf_utils.tqdm is orig
    finally:
        loading.log.setLevel(level)
