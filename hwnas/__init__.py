"""hwnas: hardware-aware NAS for LLaMA-family models on Intel CPUs (LLaMA-NAS method)."""
from __future__ import annotations

__version__ = "0.1.0"
