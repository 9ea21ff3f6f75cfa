"""Per-layer quantization sensitivity: how far the model moves when one layer's attention (or MLP) alone
is rounded to int4, measured once per model and cached.

Why: int4 everywhere is too much for the default 135M model (its generations loop), while most
layers may take it; which ones is what the search should find. The sensitivity table tells it
where to start (`seed_subnets`: int4 everywhere except the most sensitive parts, at several
thresholds) and gives the accuracy predictor a feature (`DeploySpace.sensitivity`: the summed
sensitivity of the parts a candidate puts in int4).

Measured as the next-token KL to the full float model (`hwnas.accuracy.fidelity.TokenFidelity`,
a few WikiText-2 windows) with every other weight left float; cached in the hwnas cache by model,
format and the text's hash.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from hwnas.model.space import SearchSpace, SubnetConfig

log = logging.getLogger(__name__)

SENSITIVITY_WINDOWS, SENSITIVITY_WINDOW = 4, 128
SEED_FRACTIONS = (0.0, 0.1, 0.25, 0.5)   # share of the (attention + MLP) parts kept in the precise format


@dataclass(frozen=True)
class Sensitivity:
    """KL to the full model with one part of one layer in `fmt`, per base layer."""

    fmt: str
    attention: tuple[float, ...]
    mlp: tuple[float, ...]
    tokens: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.fmt, "attention": list(self.attention), "mlp": list(self.mlp),
                "tokens": self.tokens, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Sensitivity":
        return cls(str(d["format"]), tuple(float(x) for x in d["attention"]), tuple(float(x) for x in d["mlp"]),
                   int(d["tokens"]), float(d["seconds"]))

    def ranked_parts(self) -> list[tuple[int, str]]:
        """(layer, "attention"|"mlp"), most sensitive first."""
        parts = [(i, "attention", k) for i, k in enumerate(self.attention)] + [(i, "mlp", k) for i, k in enumerate(self.mlp)]
        parts.sort(key=lambda t: -t[2])
        return [(i, p) for i, p, _ in parts]


def measure_sensitivity(supernet: Any, fidelity: Any, fmt: str, *, model_id: str = "model",
                        progress: Callable[[int, int, str], None] | None = None) -> Sensitivity:
    """The table for `fmt`, from the cache or measured now (2 x layers fidelity passes)."""
    from hwnas.cache import cache_root
    from hwnas.io import write_json_atomic
    from hwnas.model.fakequant import fake_quantize_part

    text_hash = hashlib.sha1(np.ascontiguousarray(fidelity.windows).tobytes()).hexdigest()[:12]
    path = cache_root() / "supernets" / f"sensitivity-{model_id}-{fmt}-{text_hash}.json"
    if path.is_file():
        return Sensitivity.from_dict(json.loads(path.read_text()))
    t0 = time.perf_counter()
    supernet.reset()
    fidelity.reference(supernet)
    fidelity.capture_layer_inputs(supernet.model)   # one part of layer i changes: layers 0..i-1 need not rerun
    n = len(supernet._all_layers)
    out: dict[str, list[float]] = {"attention": [], "mlp": []}
    try:
        for i in range(n):
            for part in ("attention", "mlp"):
                restore = fake_quantize_part(supernet, i, part, fmt)
                try:
                    kl = fidelity.measure_model(supernet, supernet.model, from_layer=i)["kl"]
                finally:
                    restore()
                out[part].append(round(float(kl), 6))
                if progress:
                    progress(2 * i + (part == "mlp") + 1, 2 * n, f"sensitivity layer {i} {part}")
    finally:
        fidelity.release_layer_inputs()
    sens = Sensitivity(fmt, tuple(out["attention"]), tuple(out["mlp"]), int(fidelity.tokens),
                       round(time.perf_counter() - t0, 2))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, sens.to_dict())
    log.info("int4 sensitivity (%s) measured in %.1f s; most sensitive: %s", fmt, sens.seconds, sens.ranked_parts()[:4])
    return sens


def seed_subnets(space: SearchSpace, sens: Sensitivity, fractions: tuple[float, ...] = SEED_FRACTIONS) -> list[SubnetConfig]:
    """Full-architecture subnets with every part in the sensitivity's int4 format except the most
    sensitive `fraction` of parts (those in the space's most precise format), the head in int8 where
    allowed, runtime genes at the fast corner; one per fraction, duplicates dropped."""
    dep = space.deploy
    if dep is None or sens.fmt not in dep.attention_formats or sens.fmt not in dep.mlp_formats:
        return []
    big = space.largest()
    a_prec, m_prec, _, _ = dep.precise_index()
    _, _, h_fast, r_fast = dep.fast_index()
    a4, m4 = dep.attention_formats.index(sens.fmt), dep.mlp_formats.index(sens.fmt)
    ranked = [(i, p) for i, p in sens.ranked_parts() if i in big.layers]
    out: dict[str, SubnetConfig] = {}
    for frac in fractions:
        keep = set(ranked[: int(round(frac * len(ranked)))])
        att = [a_prec if (i, "attention") in keep else a4 for i in big.layers]
        mlp = [m_prec if (i, "mlp") in keep else m4 for i in big.layers]
        cfg = space.with_genes(big, att, mlp, h_fast, r_fast)
        out.setdefault(cfg.key, cfg)
    return source_grid_seeds(space) + [c for c in out.values()]


def source_grid_seeds(space: SearchSpace) -> list[SubnetConfig]:
    """The full architecture with every layer in the source file's own format (`DeploySpace.lossless`, e.g. a
    Q4_1 GGUF's int4_minmax_g32: the full model's weights, in 4 bits), runtime genes at the precise and the
    fast corner: where a search of a quantized source should start."""
    dep = space.deploy
    if dep is None:
        return []
    big = space.largest()
    _, _, h_fast, r_fast = dep.fast_index()
    _, _, _, r_prec = dep.precise_index()
    out: dict[str, SubnetConfig] = {}
    for f in dep.lossless:
        if f in dep.attention_formats and f in dep.mlp_formats:
            a, m = dep.attention_formats.index(f), dep.mlp_formats.index(f)
            for rt in (r_prec, r_fast):
                cfg = space.with_genes(big, [a] * len(big.layers), [m] * len(big.layers), h_fast, rt)
                out.setdefault(cfg.key, cfg)
    return list(out.values())
