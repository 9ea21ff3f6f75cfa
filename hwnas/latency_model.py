"""Predict TTFT / TPOT / throughput of subnets that were never measured.

Two parts, both small enough to travel inside profile.json to another machine:

1. **Lookup table (LUT)** from *probe* models: tiny dense models of the same architecture with
   k decoder layers all at one MLP width (one probe per allowed width, plus a 1-layer probe). A
   least-squares solve over the probes gives, per metric, the cost of the embedding + final norm +
   LM head (`base_ms`) and of one decoder layer at each width (`per_layer_ms[w]`). A subnet's LUT
   prediction is ``base_ms + sum(per_layer_ms[w] for w in its widths)``. In a dense extracted
   subnet every kept layer costs the same whatever its index, so only the widths matter.
2. **Correction**: a scikit-learn ``LinearRegression`` per metric, ``measured ~ a * lut + b``,
   fit on whole-subnet measurements. It absorbs what probes miss (cache effects of a deep model,
   per-call overheads). Its error is reported as leave-one-out MAPE on whole subnets, i.e. on
   subnets the fitted model did not see; the LUT alone never sees whole subnets, so its MAPE is
   reported too.

Metrics are named ``ttft_ms@B`` and ``tpot_ms@B`` for each batch size B of the target;
`predict(cfg)` returns the three objectives ``ttft_ms``, ``tpot_ms`` (latency batch) and
``throughput_tok_s`` = 1000 / TPOT at the throughput batch (openvino-genai's definition).
Widths that were not profiled are interpolated linearly between profiled ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .errors import MeasurementError

SCHEMA_VERSION = 1


def metric_names(batch_sizes: Sequence[int]) -> list[str]:
    return [f"{m}@{b}" for b in batch_sizes for m in ("ttft_ms", "tpot_ms")]


def measurement_metrics(m: Any) -> dict[str, float]:
    """Metric dict of a measure.Measurement (or anything with .batches)."""
    out = {}
    for b in m.batches:
        out[f"ttft_ms@{b.batch_size}"] = float(b.ttft_ms)
        out[f"tpot_ms@{b.batch_size}"] = float(b.tpot_ms)
    return out


def _widths_of(cfg: Any) -> tuple[int, ...]:
    if isinstance(cfg, Mapping):
        return tuple(int(w) for w in cfg["mlp_widths"])
    if hasattr(cfg, "mlp_widths"):
        return tuple(int(w) for w in cfg.mlp_widths)
    return tuple(int(w) for w in cfg)


def mape(y_true: Iterable[float], y_pred: Iterable[float]) -> float:
    """Mean absolute percentage error, in percent."""
    t = np.asarray(list(y_true), dtype=float)
    p = np.asarray(list(y_pred), dtype=float)
    return float(np.mean(np.abs(p - t) / np.abs(t)) * 100.0)


@dataclass
class LatencyModel:
    """LUT + linear correction per metric; see the module docstring."""

    batch_sizes: tuple[int, ...]
    widths: tuple[int, ...]
    base_ms: dict[str, float]
    per_layer_ms: dict[str, dict[int, float]]
    correction: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric -> (slope, intercept)
    error: dict[str, Any] = field(default_factory=dict)
    target: str = ""
    host_fingerprint: str = ""
    schema_version: int = SCHEMA_VERSION

    @property
    def metrics(self) -> list[str]:
        return metric_names(self.batch_sizes)

    # ------------------------------------------------------------------ prediction
    def _layer_cost(self, metric: str, w: int) -> float:
        table = self.per_layer_ms[metric]
        if w in table:
            return table[w]
        ws = sorted(table)
        return float(np.interp(w, ws, [table[x] for x in ws], left=None, right=None)) if ws[0] <= w <= ws[-1] else \
            float(np.polyval(np.polyfit(ws, [table[x] for x in ws], 1), w))  # linear extrapolation

    def lut_predict(self, cfg: Any) -> dict[str, float]:
        """LUT-only prediction of every metric (no correction)."""
        widths = _widths_of(cfg)
        return {m: self.base_ms[m] + sum(self._layer_cost(m, w) for w in widths) for m in self.metrics}

    def predict_metrics(self, cfg: Any) -> dict[str, float]:
        lut = self.lut_predict(cfg)
        out = {}
        for m, v in lut.items():
            a, b = self.correction.get(m, (1.0, 0.0))
            out[m] = max(a * v + b, 1e-6)
        return out

    def predict(self, cfg: Any) -> dict[str, float]:
        """{ttft_ms, tpot_ms, throughput_tok_s} of a subnet (SubnetConfig, its dict, or a widths list)."""
        p = self.predict_metrics(cfg)
        lat, thr = self.batch_sizes[0], self.batch_sizes[-1]
        return {
            "ttft_ms": p[f"ttft_ms@{lat}"],
            "tpot_ms": p[f"tpot_ms@{lat}"],
            "throughput_tok_s": 1000.0 / p[f"tpot_ms@{thr}"],
        }

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "kind": "lut+linear",
            "target": self.target,
            "host_fingerprint": self.host_fingerprint,
            "batch_sizes": list(self.batch_sizes),
            "widths": list(self.widths),
            "base_ms": dict(self.base_ms),
            "per_layer_ms": {m: {str(w): v for w, v in t.items()} for m, t in self.per_layer_ms.items()},
            "correction": {m: {"slope": a, "intercept": b} for m, (a, b) in self.correction.items()},
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LatencyModel":
        try:
            if d.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
                raise MeasurementError(f"latency model schema_version {d.get('schema_version')} is not supported")
            return cls(
                batch_sizes=tuple(int(b) for b in d["batch_sizes"]),
                widths=tuple(int(w) for w in d["widths"]),
                base_ms={m: float(v) for m, v in d["base_ms"].items()},
                per_layer_ms={m: {int(w): float(v) for w, v in t.items()} for m, t in d["per_layer_ms"].items()},
                correction={m: (float(c["slope"]), float(c["intercept"])) for m, c in d.get("correction", {}).items()},
                error=dict(d.get("error", {})),
                target=d.get("target", ""),
                host_fingerprint=d.get("host_fingerprint", ""),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise MeasurementError(f"malformed latency model in profile ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------------- fitting
def fit_lut(
    probes: Sequence[tuple[Sequence[int], Mapping[str, float]]],
    widths: Sequence[int],
    metrics: Sequence[str],
) -> tuple[dict[str, float], dict[str, dict[int, float]]]:
    """Least-squares base + per-layer cost per width from probe (mlp_widths, metric values) pairs."""
    widths = sorted({int(w) for w in widths})
    col = {w: i + 1 for i, w in enumerate(widths)}
    X = np.zeros((len(probes), len(widths) + 1))
    for r, (pw, _) in enumerate(probes):
        X[r, 0] = 1.0
        for w in pw:
            if int(w) not in col:
                raise MeasurementError(f"probe has MLP width {w}, which is not among the profiled widths {widths}")
            X[r, col[int(w)]] += 1.0
    if np.linalg.matrix_rank(X) < X.shape[1]:
        raise MeasurementError(
            f"probes cannot separate the base cost from the per-layer cost of widths {widths}: "
            "need a probe with each width and two probes with different layer counts"
        )
    base: dict[str, float] = {}
    per: dict[str, dict[int, float]] = {}
    for m in metrics:
        y = np.array([float(v[m]) for _, v in probes])
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        base[m] = float(coef[0])
        per[m] = {w: float(coef[col[w]]) for w in widths}
    return base, per


def _fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """measured ~ slope * lut + intercept (sklearn LinearRegression). Below 3 points, or when the
    fitted slope is not positive (too little spread to trust a line), a pure scale through 0."""
    from sklearn.linear_model import LinearRegression

    if len(x) < 3 or np.ptp(x) <= 0:
        return (float(np.sum(x * y) / np.sum(x * x)) if len(x) and np.sum(x * x) > 0 else 1.0), 0.0
    reg = LinearRegression().fit(x.reshape(-1, 1), y)
    slope, icpt = float(reg.coef_[0]), float(reg.intercept_)
    if slope <= 0:
        return float(np.sum(x * y) / np.sum(x * x)), 0.0
    return slope, icpt


def fit_latency_model(
    probes: Sequence[tuple[Sequence[int], Mapping[str, float]]],
    subnets: Sequence[tuple[Sequence[int], Mapping[str, float]]],
    widths: Sequence[int],
    batch_sizes: Sequence[int],
    *,
    target: str = "",
    host_fingerprint: str = "",
) -> LatencyModel:
    """Fit the LUT on probes and the correction on whole subnets; report leave-one-out error."""
    metrics = metric_names(batch_sizes)
    base, per = fit_lut(probes, widths, metrics)
    model = LatencyModel(tuple(batch_sizes), tuple(sorted({int(w) for w in widths})), base, per,
                         target=target, host_fingerprint=host_fingerprint)
    if not subnets:
        model.error = {"n_subnets": 0, "note": "no whole-subnet measurements: LUT only, error unknown"}
        return model
    lut = np.array([[model.lut_predict(w)[m] for m in metrics] for w, _ in subnets])
    meas = np.array([[float(v[m]) for m in metrics] for _, v in subnets])
    model.correction = {m: _fit_line(lut[:, j], meas[:, j]) for j, m in enumerate(metrics)}
    model.error = cross_validate(lut, meas, metrics, batch_sizes)
    return model


def cross_validate(lut: np.ndarray, meas: np.ndarray, metrics: Sequence[str], batch_sizes: Sequence[int]) -> dict[str, Any]:
    """Leave-one-out MAPE of LUT+correction on whole subnets, and the LUT-only MAPE."""
    n = len(meas)
    cv_pred = np.empty_like(meas)
    for i in range(n):
        keep = np.arange(n) != i
        for j in range(len(metrics)):
            a, b = _fit_line(lut[keep, j], meas[keep, j]) if n > 1 else (1.0, 0.0)
            cv_pred[i, j] = a * lut[i, j] + b
    per_metric = {
        m: {"cv_mape_pct": round(mape(meas[:, j], cv_pred[:, j]), 3),
            "lut_mape_pct": round(mape(meas[:, j], lut[:, j]), 3)}
        for j, m in enumerate(metrics)
    }
    lat, thr = batch_sizes[0], batch_sizes[-1]
    j_thr = list(metrics).index(f"tpot_ms@{thr}")
    thr_true, thr_pred = 1000.0 / meas[:, j_thr], 1000.0 / cv_pred[:, j_thr]
    return {
        "method": "leave-one-out over whole subnets (correction refit without the held-out subnet)",
        "n_subnets": int(n),
        "ttft_ms_mape_pct": per_metric[f"ttft_ms@{lat}"]["cv_mape_pct"],
        "tpot_ms_mape_pct": per_metric[f"tpot_ms@{lat}"]["cv_mape_pct"],
        "throughput_tok_s_mape_pct": round(mape(thr_true, thr_pred), 3),
        "per_metric": per_metric,
        "cv_predictions": {m: [round(float(x), 4) for x in cv_pred[:, j]] for j, m in enumerate(metrics)},
    }
