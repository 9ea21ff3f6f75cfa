"""One switch for PyTorch precision in a whole run: $HWNAS_PRECISION (bf16 or fp32).

Every `precision="auto"` resolution (eval, search validation, train) asks `forced_precision()`
first, so `HWNAS_PRECISION=fp32 make test` and `HWNAS_PRECISION=bf16 make test` run the same code
on any x86 host whatever its bf16 support. An explicit precision (`--precision fp32`) still wins.
"""
from __future__ import annotations

import os

from hwnas.errors import HwnasError

ENV_VAR = "HWNAS_PRECISION"
FORCEABLE = ("bf16", "fp32")


def forced_precision() -> str | None:
    """'bf16' or 'fp32' when $HWNAS_PRECISION says so; None when unset, empty or 'auto'."""
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value not in FORCEABLE:
        raise HwnasError(f"{ENV_VAR}={value!r} is not accepted; use bf16, fp32 or auto (or unset it)")
    return value
