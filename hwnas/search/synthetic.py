"""A cheap synthetic objective with a known optimum, for tests and strategy benchmarks."""
from __future__ import annotations

from typing import Any

import numpy as np

from hwnas.model.space import SearchSpace, SubnetConfig


# ---------------------------------------------------------------------------- synthetic objective
class SyntheticValidator:
    """A cheap stand-in for real validation (tests, benchmarks of the search itself).

    Latency is additive over kept layers (fixed cost per layer plus a width-proportional MLP
    cost); accuracy rises with the importance of the kept layers and their MLP width, with a
    deterministic per-subnet noise term. No model is involved; ``calls`` counts validations.
    With deployment genes, int4 layers cost less time and some accuracy (more in important layers),
    f16 layers more time, and a u8 KV cache saves a little time.
    """

    def __init__(self, space: SearchSpace, seed: int = 0, noise: float = 0.004):
        rng = np.random.default_rng(seed)
        n = space.num_layers
        self.space = space
        self.importance = rng.uniform(0.2, 1.0, n) * np.linspace(1.4, 0.6, n)
        if space.layer_order is not None:  # importance follows the measured ranking, roughly
            imp = np.sort(self.importance)[::-1] * rng.uniform(0.8, 1.2, n)
            self.importance = np.empty(n)
            self.importance[list(space.layer_order)] = imp
        self.layer_ms = 0.45 + rng.uniform(0, 0.05, n)
        self.mlp_ms = 0.25
        self.noise = noise
        self.calls = 0

    def __call__(self, cfg: SubnetConfig) -> dict[str, Any]:
        self.calls += 1
        kept = np.array(cfg.layers)
        wf = np.array(cfg.mlp_widths, dtype=float) / self.space.full_width
        time_f = np.ones(len(kept))
        keep_f = np.ones(len(kept))
        if cfg.weight_formats is not None:
            cost = {8: 1.0, 4: 0.75, None: 1.4}
            from hwnas.model.formats import parse_weight_format

            bits = np.array([[parse_weight_format(f).bits or 16 for f in pair] for pair in cfg.weight_formats])
            time_f = np.array([0.5 * cost.get(a if a != 16 else None, 1.0) + 0.5 * cost.get(m if m != 16 else None, 1.0)
                               for a, m in bits])
            keep_f = 1.0 - 0.12 * (bits[:, 0] == 4) - 0.08 * (bits[:, 1] == 4)
        tpot = 2.0 + float(np.sum((self.layer_ms[kept] + self.mlp_ms * wf) * time_f))
        if dict(cfg.runtime).get("KV_CACHE_PRECISION") == "u8":
            tpot *= 0.97
        score = float(np.sum(self.importance[kept] * keep_f * (0.35 + 0.65 * np.sqrt(wf)))) / float(np.sum(self.importance))
        h = int(cfg.key.split("-")[1], 16) / 0xFFFFFFFF - 0.5
        acc = 0.25 + 0.3 * score**3 + self.noise * h
        n_params = int(1e6 * (10 + sum(2 + 3 * f for f in wf)))
        return {
            "accuracy": round(acc, 6),
            "tasks": {"synthetic": round(acc, 6)},
            "signal": round(acc - 0.55, 6),  # stands in for a fidelity signal (monotone in accuracy, <= 0)
            "tpot_ms": round(tpot, 4),
            "ttft_ms": round(tpot * 12, 4),
            "throughput_tok_s": round(8000.0 / tpot, 4),
            "n_params": n_params,
            "weight_bytes": 2 * n_params,
            "latency_source": "synthetic",
        }
