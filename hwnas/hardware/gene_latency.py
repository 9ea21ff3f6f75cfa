"""A latency model that knows the deployment genes: per-layer weight formats, head format, runtime settings.

Additive, like `latency_model.LatencyModel`, and fit with scikit-learn's ``LinearRegression`` per
metric (``ttft_ms@B``, ``tpot_ms@B``)::

    latency = base_ms
            + sum over kept layers of  layer_ms[attention format]            (attention + fixed MLP cost)
            + sum over kept layers of  width_ms[MLP format] * MLP width       (the MLP's three matrices)
            + head_ms[head format]                                            (0 for the first head format)
            + for each runtime value v (not the first of its property):
                  shift_ms[v] + per_layer_shift_ms[v] * layers                (KV cache, dynamic quantization, ...)

So one table holds a per-layer cost per (attention format), a per-channel MLP cost per (MLP
format), a head cost per head format and, per runtime value, a fixed and a per-layer change. Its
error is leave-one-out over the measured variants (refit without each), reported overall and
**per gene value** (the variants holding that value), so a user sees which genes it predicts well.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from hwnas.errors import MeasurementError
from hwnas.hardware.latency_model import mape, metric_names

KIND = "gene-additive"
Sample = tuple[Mapping[str, Any], Mapping[str, float]]   # (SubnetConfig dict with genes, metric values)


@dataclass
class GeneLatencyModel:
    """See the module docstring. `columns` names each regression coefficient."""

    batch_sizes: tuple[int, ...]
    attention_formats: tuple[str, ...]
    mlp_formats: tuple[str, ...]
    head_formats: tuple[str, ...]
    runtime: tuple[tuple[str, tuple[Any, ...]], ...]
    coef: dict[str, list[float]] = field(default_factory=dict)   # metric -> [intercept, *coefficients]
    floor_ms: dict[str, float] = field(default_factory=dict)     # metric -> half the fastest measured value
    error: dict[str, Any] = field(default_factory=dict)
    target: str = ""
    host_fingerprint: str = ""
    gene_aware: bool = True

    @property
    def metrics(self) -> list[str]:
        return metric_names(self.batch_sizes)

    @property
    def columns(self) -> list[str]:
        cols = [f"layer_ms[{f}]" for f in self.attention_formats] + [f"width_ms[{f}]" for f in self.mlp_formats]
        cols += [f"head_ms[{h}]" for h in self.head_formats[1:]]
        for prop, values in self.runtime:
            for v in values[1:]:
                cols += [f"shift_ms[{prop}={v}]", f"per_layer_shift_ms[{prop}={v}]"]
        return cols

    def features(self, sub: Mapping[str, Any]) -> np.ndarray:
        """Regression features of one subnet (its dict, genes included)."""
        formats = sub.get("weight_formats")
        if formats is None or sub.get("head_format") is None:
            raise MeasurementError("the gene-aware latency model predicts subnets with weight formats and a head format")
        widths = [int(w) for w in sub["mlp_widths"]]
        x = np.zeros(len(self.columns))
        na, nm = len(self.attention_formats), len(self.mlp_formats)
        for (a, m), w in zip(formats, widths):
            if a not in self.attention_formats or m not in self.mlp_formats:
                raise MeasurementError(f"format {a}/{m} was not profiled; profiled: {list(self.attention_formats)} / "
                                       f"{list(self.mlp_formats)}")
            x[self.attention_formats.index(a)] += 1
            x[na + self.mlp_formats.index(m)] += w
        off = na + nm
        if sub["head_format"] in self.head_formats[1:]:
            x[off + self.head_formats.index(sub["head_format"]) - 1] = 1
        off += len(self.head_formats) - 1
        rt = dict(sub.get("runtime") or {})
        for prop, values in self.runtime:
            for v in values[1:]:
                if rt.get(prop) == v:
                    x[off], x[off + 1] = 1, len(widths)
                off += 2
        return x

    def predict_metrics(self, sub: Any) -> dict[str, float]:
        d = sub.to_dict() if hasattr(sub, "to_dict") else dict(sub)
        x = self.features(d)
        # an extrapolation far outside the measured variants can go below anything physical: floor it
        return {m: max(float(self.coef[m][0] + x @ np.asarray(self.coef[m][1:])), self.floor_ms.get(m, 1e-6))
                for m in self.metrics}

    def predict(self, sub: Any) -> dict[str, float]:
        p = self.predict_metrics(sub)
        lat, thr = self.batch_sizes[0], self.batch_sizes[-1]
        return {"ttft_ms": p[f"ttft_ms@{lat}"], "tpot_ms": p[f"tpot_ms@{lat}"], "throughput_tok_s": 1000.0 / p[f"tpot_ms@{thr}"]}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, "batch_sizes": list(self.batch_sizes), "attention_formats": list(self.attention_formats),
                "mlp_formats": list(self.mlp_formats), "head_formats": list(self.head_formats),
                "runtime": {p: list(v) for p, v in self.runtime}, "columns": self.columns,
                "coef": {m: list(c) for m, c in self.coef.items()}, "floor_ms": dict(self.floor_ms),
                "error": self.error, "target": self.target,
                "host_fingerprint": self.host_fingerprint}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GeneLatencyModel":
        try:
            return cls(tuple(int(b) for b in d["batch_sizes"]), tuple(d["attention_formats"]), tuple(d["mlp_formats"]),
                       tuple(d["head_formats"]), tuple((p, tuple(v)) for p, v in d["runtime"].items()),
                       {m: [float(x) for x in c] for m, c in d["coef"].items()},
                       {m: float(v) for m, v in d.get("floor_ms", {}).items()}, dict(d.get("error", {})),
                       d.get("target", ""), d.get("host_fingerprint", ""))
        except (KeyError, TypeError, ValueError) as e:
            raise MeasurementError(f"malformed gene-aware latency model ({type(e).__name__}: {e})") from None


def _fit(model: GeneLatencyModel, samples: Sequence[Sample]) -> dict[str, list[float]]:
    from sklearn.linear_model import Ridge

    X = np.array([model.features(s) for s, _ in samples])
    coef = {}
    for m in model.metrics:
        y = np.array([float(v[m]) for _, v in samples])
        # a tiny ridge keeps columns the design cannot separate (rare values) finite instead of exploding
        reg = Ridge(alpha=1e-6).fit(X, y)
        coef[m] = [float(reg.intercept_)] + [float(c) for c in reg.coef_]
    return coef


def _floor(model: GeneLatencyModel, samples: Sequence[Sample]) -> dict[str, float]:
    return {m: 0.5 * min(float(v[m]) for _, v in samples) for m in model.metrics}


def fit_gene_latency_model(samples: Sequence[Sample], deploy: Any, batch_sizes: Sequence[int], *,
                           target: str = "", host_fingerprint: str = "") -> GeneLatencyModel:
    """Fit on measured variants (SubnetConfig dicts with genes); leave-one-out error overall and per gene value."""
    model = GeneLatencyModel(tuple(batch_sizes), tuple(deploy.attention_formats), tuple(deploy.mlp_formats),
                             tuple(deploy.head_formats), tuple(deploy.runtime), target=target,
                             host_fingerprint=host_fingerprint)
    if len(samples) < 4:
        raise MeasurementError(f"the gene-aware latency model needs at least 4 measured variants, got {len(samples)}")
    model.coef = _fit(model, samples)
    model.floor_ms = _floor(model, samples)
    model.error = gene_cross_validate(model, samples)
    return model


def gene_cross_validate(model: GeneLatencyModel, samples: Sequence[Sample]) -> dict[str, Any]:
    """Leave-one-out over variants: TPOT/TTFT MAPE overall and over the variants holding each gene value."""
    lat = model.batch_sizes[0]
    tp, tt = f"tpot_ms@{lat}", f"ttft_ms@{lat}"
    meas, pred = [], []
    for i in range(len(samples)):
        rest = [s for j, s in enumerate(samples) if j != i]
        held = GeneLatencyModel(model.batch_sizes, model.attention_formats, model.mlp_formats, model.head_formats,
                                model.runtime, _fit(model, rest), _floor(model, rest))
        p = held.predict_metrics(samples[i][0])
        meas.append((samples[i][1][tp], samples[i][1][tt]))
        pred.append((p[tp], p[tt]))
    meas_a, pred_a = np.array(meas), np.array(pred)
    per_gene: dict[str, dict[str, Any]] = {}

    def add(label: str, idx: list[int]) -> None:
        if idx:
            per_gene[label] = {"variants": len(idx), "tpot_ms_mape_pct": round(mape(meas_a[idx, 0], pred_a[idx, 0]), 3)}

    for f in model.attention_formats:
        add(f"attention={f}", [i for i, (s, _) in enumerate(samples) if any(a == f for a, _ in s["weight_formats"])])
    for f in model.mlp_formats:
        add(f"mlp={f}", [i for i, (s, _) in enumerate(samples) if any(m == f for _, m in s["weight_formats"])])
    for h in model.head_formats:
        add(f"head={h}", [i for i, (s, _) in enumerate(samples) if s["head_format"] == h])
    for prop, values in model.runtime:
        for v in values:
            add(f"{prop}={v}", [i for i, (s, _) in enumerate(samples) if dict(s.get("runtime") or {}).get(prop) == v])
    return {"method": "leave-one-out over measured variants (refit without each)", "n_variants": len(samples),
            "tpot_ms_mape_pct": round(mape(meas_a[:, 0], pred_a[:, 0]), 3),
            "ttft_ms_mape_pct": round(mape(meas_a[:, 1], pred_a[:, 1]), 3), "per_gene": per_gene,
            "cv_predictions_tpot_ms": [round(float(x), 4) for x in pred_a[:, 0]]}


def design_variants(space: Any, architectures: Sequence[Any], rng: np.random.Generator,
                    max_variants: int | None = None) -> list[Any]:
    """Format/runtime variants to measure so every gene value is seen in several contexts, in rounds: round j
    gives each architecture k uniform formats (attention (k + j), MLP (k + 2j) modulo the counts, so the two
    differ), head and runtime values cycling independently; a last round adds a random per-layer mix per
    architecture. Truncated to `max_variants` (early rounds already cover every value)."""
    dep = space.deploy
    na, nm, nh, nr = dep.choices()
    archs = [a.architecture() for a in architectures]
    out: dict[str, Any] = {}
    for j in range(max(na, nm, nh, *nr, 1)):
        for k, arch in enumerate(archs):
            n = len(arch.layers)
            cfg = space.with_genes(arch, [(k + j) % na] * n, [(k + 2 * j) % nm] * n, (k + j) % nh,
                                   [(k + j + r) % c for r, c in enumerate(nr)])
            out.setdefault(cfg.key, cfg)
    for arch in archs:
        n = len(arch.layers)
        mix = space.with_genes(arch, rng.integers(na, size=n), rng.integers(nm, size=n), int(rng.integers(nh)),
                               [int(rng.integers(c)) for c in nr])
        out.setdefault(mix.key, mix)
    cfgs = list(out.values())
    return cfgs[:max_variants] if max_variants else cfgs
