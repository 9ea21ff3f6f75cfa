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


PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX-BF16), from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        pass
    return False


def resolve_precision(precision: str) -> str:
    """Evaluation precision: 'auto' -> $HWNAS_PRECISION, else 'bf16' on CPUs with native bf16, else 'fp32'."""
    from hwnas.errors import DataError

    if precision not in PRECISIONS:
        raise DataError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return forced_precision() or ("bf16" if cpu_has_native_bf16() else "fp32")
    return precision
