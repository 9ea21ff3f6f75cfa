"""Predict TTFT / TPOT / throughput of subnets that were never measured.

The model is additive over the parts of a dense subnet, as its compute is:

    latency(subnet) = base_ms + sum over kept layers of per_layer_ms[width of that layer]

`base_ms` is the embedding + final norm + LM head + per-call overhead; `per_layer_ms[w]` is one
decoder layer (attention + an MLP of width w). In a dense extracted subnet a layer costs the same
whatever its index, so only the widths matter. The table is stored per metric (``ttft_ms@B`` and
``tpot_ms@B`` for each batch size B of the target) and travels in profile.json, so predictions
need neither the model nor the machine.

How the table is fit (scikit-learn ``LinearRegression``, intercept = `base_ms`):
- ``linear`` (default): a layer's cost is ``layer_ms + width_ms * w`` (attention is fixed, the MLP's
  three matrices grow linearly with w), so the features of a subnet are (layer count, sum of widths)
  and three numbers describe every width, profiled or not;
- ``per_width``: one free cost per allowed width (features: how many layers have each width).
It is fit on whole-subnet measurements, plus *probe* models (k layers of one width) when given.
Why whole subnets rather than single-layer probes by default: on a small model a 1-layer model's
decode step is mostly fixed overhead, so a layer's cost drowns in timing noise, and every probe
is one more export; whole subnets measure the quantity predicted, at the depth it is used.

Error: leave-one-out over whole subnets (the model is refit without the held-out subnet, probes
always kept), reported as MAPE per metric. A prediction is compared with a measurement that is
itself uncertain, so when the measurements' 95% intervals are given (`noise`), the error is split
("is the model wrong, or the host noisy?"): ``measurement_noise_pct`` is the typical half-width of
a measurement's interval, ``within_noise_share`` the share of held-out subnets whose prediction
falls inside their measurement's interval, and ``model_error_pct`` the RMS relative error left
after subtracting the measurements' own variance (sqrt(max(0, mean(err^2) - mean(se^2))), se =
half-width / 1.96). `predict(cfg)` returns ``ttft_ms`` and ``tpot_ms`` at
the latency batch and ``throughput_tok_s`` = 1000 / TPOT at the throughput batch
(openvino-genai's definition).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from hwnas.errors import MeasurementError

SCHEMA_VERSION = 1
FORMS = ("linear", "per_width")
Sample = tuple[Sequence[int], Mapping[str, float]]  # (mlp widths of the kept layers, metric values)


def metric_names(batch_sizes: Sequence[int]) -> list[str]:
    return [f"{m}@{b}" for b in batch_sizes for m in ("ttft_ms", "tpot_ms")]


def measurement_noise(m: Any) -> dict[str, float]:
    """Metric -> relative half-width of the measurement's 95% interval (measurements without intervals: {})."""
    from hwnas.hardware.robust import relative_halfwidth

    out = {}
    for b in m.batches:
        if getattr(b, "ttft_ci_ms", None):
            out[f"ttft_ms@{b.batch_size}"] = relative_halfwidth(b.ttft_ci_ms, b.ttft_ms)
        if getattr(b, "tpot_ci_ms", None):
            out[f"tpot_ms@{b.batch_size}"] = relative_halfwidth(b.tpot_ci_ms, b.tpot_ms)
    return out


def measurement_metrics(m: Any) -> dict[str, float]:
    """Metric dict of a measure.Measurement (or anything with .batches)."""
    out = {}
    for b in m.batches:
        out[f"ttft_ms@{b.batch_size}"] = float(b.ttft_ms)
        out[f"tpot_ms@{b.batch_size}"] = float(b.tpot_ms)
    return out


def widths_of(cfg: Any) -> tuple[int, ...]:
    """MLP widths of the kept layers from a SubnetConfig, its dict, or a plain list of widths."""
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


def features(widths: Sequence[int], form: str, allowed: Sequence[int]) -> np.ndarray:
    """Regression features of one subnet (see module docstring)."""
    if form == "linear":
        return np.array([len(widths), float(sum(widths))])
    col = {w: i for i, w in enumerate(allowed)}
    x = np.zeros(len(allowed))
    for w in widths:
        if w not in col:
            raise MeasurementError(f"MLP width {w} is not among the profiled widths {list(allowed)}")
        x[col[w]] += 1
    return x


@dataclass
class LatencyModel:
    """Additive per-layer table per metric; see the module docstring."""

    batch_sizes: tuple[int, ...]
    widths: tuple[int, ...]
    form: str
    base_ms: dict[str, float]
    per_layer_ms: dict[str, dict[int, float]]
    linear: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric -> (layer_ms, width_ms)
    error: dict[str, Any] = field(default_factory=dict)
    target: str = ""
    host_fingerprint: str = ""
    schema_version: int = SCHEMA_VERSION

    @property
    def metrics(self) -> list[str]:
        return metric_names(self.batch_sizes)

    def layer_cost(self, metric: str, w: int) -> float:
        if self.form == "linear":
            a, b = self.linear[metric]
            return a + b * w
        table = self.per_layer_ms[metric]
        if w in table:
            return table[w]
        ws = sorted(table)
        ys = [table[x] for x in ws]
        if ws[0] <= w <= ws[-1]:
            return float(np.interp(w, ws, ys))
        return float(np.polyval(np.polyfit(ws, ys, 1), w)) if len(ws) > 1 else ys[0]

    def predict_metrics(self, cfg: Any) -> dict[str, float]:
        widths = widths_of(cfg)
        return {m: max(self.base_ms[m] + sum(self.layer_cost(m, w) for w in widths), 1e-6) for m in self.metrics}

    def predict(self, cfg: Any) -> dict[str, float]:
        """{ttft_ms, tpot_ms, throughput_tok_s} of a subnet (SubnetConfig, its dict, or a widths list)."""
        p = self.predict_metrics(cfg)
        lat, thr = self.batch_sizes[0], self.batch_sizes[-1]
        return {
            "ttft_ms": p[f"ttft_ms@{lat}"],
            "tpot_ms": p[f"tpot_ms@{lat}"],
            "throughput_tok_s": 1000.0 / p[f"tpot_ms@{thr}"],
        }

    def predict_many(self, cfgs: Iterable[Any]) -> list[dict[str, float]]:
        return [self.predict(c) for c in cfgs]

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "kind": "additive-per-layer",
            "form": self.form,
            "target": self.target,
            "host_fingerprint": self.host_fingerprint,
            "batch_sizes": list(self.batch_sizes),
            "widths": list(self.widths),
            "base_ms": dict(self.base_ms),
            "per_layer_ms": {m: {str(w): v for w, v in t.items()} for m, t in self.per_layer_ms.items()},
            "linear": {m: {"layer_ms": a, "width_ms": b} for m, (a, b) in self.linear.items()},
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LatencyModel":
        try:
            if d.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
                raise MeasurementError(f"latency model schema_version {d.get('schema_version')} is not supported")
            form = d.get("form", "linear")
            if form not in FORMS:
                raise MeasurementError(f"latency model form {form!r} is not one of {list(FORMS)}")
            return cls(
                batch_sizes=tuple(int(b) for b in d["batch_sizes"]),
                widths=tuple(int(w) for w in d["widths"]),
                form=form,
                base_ms={m: float(v) for m, v in d["base_ms"].items()},
                per_layer_ms={m: {int(w): float(v) for w, v in t.items()} for m, t in d["per_layer_ms"].items()},
                linear={m: (float(c["layer_ms"]), float(c["width_ms"])) for m, c in d.get("linear", {}).items()},
                error=dict(d.get("error", {})),
                target=d.get("target", ""),
                host_fingerprint=d.get("host_fingerprint", ""),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise MeasurementError(f"malformed latency model in profile ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------------- fitting
def _fit_tables(samples: Sequence[Sample], widths: Sequence[int], metrics: Sequence[str], form: str):
    from sklearn.linear_model import LinearRegression

    X = np.array([features(widths_of(w), form, widths) for w, _ in samples])
    if form == "linear":
        if len({tuple(r) for r in X.tolist()}) < 3 or np.linalg.matrix_rank(np.c_[np.ones(len(X)), X]) < 3:
            raise MeasurementError(
                "the latency model needs at least 3 measured models that differ in layer count and total width"
            )
    elif np.linalg.matrix_rank(np.c_[np.ones(len(X)), X]) < X.shape[1] + 1:
        raise MeasurementError(
            f"measurements cannot separate the per-layer cost of each width {list(widths)}: give probes "
            "(k layers of each width plus a 1-layer model) or use the 'linear' form"
        )
    base, per, lin = {}, {}, {}
    for m in metrics:
        y = np.array([float(v[m]) for _, v in samples])
        reg = LinearRegression().fit(X, y)
        base[m] = float(reg.intercept_)
        if form == "linear":
            a, b = (float(c) for c in reg.coef_)
            lin[m] = (a, b)
            per[m] = {w: a + b * w for w in widths}
        else:
            per[m] = {w: float(c) for w, c in zip(widths, reg.coef_)}
    return base, per, lin


def fit_latency_model(
    subnets: Sequence[Sample],
    widths: Sequence[int],
    batch_sizes: Sequence[int],
    *,
    probes: Sequence[Sample] = (),
    form: str = "linear",
    target: str = "",
    host_fingerprint: str = "",
    noise: Sequence[Mapping[str, float]] | None = None,
) -> LatencyModel:
    """Fit the per-layer table on whole subnets (+ probes); leave-one-out error over the subnets.

    noise: per subnet, metric -> relative half-width of its measurement's 95% interval (0.02 = +-2%);
    it splits the error into model error and measurement noise (see the module docstring)."""
    if form not in FORMS:
        raise MeasurementError(f"latency model form {form!r} is not one of {list(FORMS)}")
    widths = tuple(sorted({int(w) for w in widths}))
    metrics = metric_names(batch_sizes)
    base, per, lin = _fit_tables(list(subnets) + list(probes), widths, metrics, form)
    model = LatencyModel(tuple(batch_sizes), widths, form, base, per, lin, target=target, host_fingerprint=host_fingerprint)
    model.error = cross_validate(subnets, probes, widths, batch_sizes, form, noise=noise)
    return model


def noise_split(measured: Sequence[float], predicted: Sequence[float], rel_halfwidth: Sequence[float]) -> dict[str, float]:
    """Prediction error vs the measurements' own uncertainty (relative 95% half-widths), in percent."""
    t, p, w = (np.asarray(x, float) for x in (measured, predicted, rel_halfwidth))
    err = (p - t) / t
    se = w / 1.96
    return {
        "measurement_noise_pct": round(float(np.median(w)) * 100, 3),
        "within_noise_share": round(float(np.mean(np.abs(err) <= w)), 3),
        "model_error_pct": round(float(np.sqrt(max(0.0, float(np.mean(err ** 2) - np.mean(se ** 2))))) * 100, 3),
        "rms_error_pct": round(float(np.sqrt(np.mean(err ** 2))) * 100, 3),
    }


def cross_validate(subnets: Sequence[Sample], probes: Sequence[Sample], widths: Sequence[int],
                   batch_sizes: Sequence[int], form: str = "linear",
                   noise: Sequence[Mapping[str, float]] | None = None) -> dict[str, Any]:
    """Leave-one-out MAPE over whole subnets: refit without each one, predict it."""
    metrics = metric_names(batch_sizes)
    n = len(subnets)
    meas = np.array([[float(v[m]) for m in metrics] for _, v in subnets]) if n else np.zeros((0, len(metrics)))
    pred = np.full_like(meas, np.nan)
    for i in range(n):
        train = [s for j, s in enumerate(subnets) if j != i] + list(probes)
        try:
            b, per, lin = _fit_tables(train, widths, metrics, form)
        except MeasurementError:
            continue
        lm = LatencyModel(tuple(batch_sizes), tuple(widths), form, b, per, lin)
        p = lm.predict_metrics(subnets[i][0])
        pred[i] = [p[m] for m in metrics]
    ok = ~np.isnan(pred[:, 0]) if n else np.zeros(0, bool)
    if ok.sum() == 0:
        return {"method": "leave-one-out over whole subnets", "n_subnets": n,
                "note": "too few measured subnets to cross-validate (need 4 or more)"}
    lat, thr = batch_sizes[0], batch_sizes[-1]
    j_thr = metrics.index(f"tpot_ms@{thr}")
    per_metric = {m: round(mape(meas[ok, j], pred[ok, j]), 3) for j, m in enumerate(metrics)}
    split = {}
    if noise is not None and len(noise) == n:
        for j, m in enumerate(metrics):
            w = [float(noise[i].get(m, np.nan)) for i in range(n)]
            keep = ok & ~np.isnan(np.asarray(w))
            if keep.any():
                split[m] = noise_split(meas[keep, j], pred[keep, j], np.asarray(w)[keep])
    out = {
        "method": "leave-one-out over whole subnets (model refit without the held-out subnet)",
        "n_subnets": int(ok.sum()),
        "ttft_ms_mape_pct": per_metric[f"ttft_ms@{lat}"],
        "tpot_ms_mape_pct": per_metric[f"tpot_ms@{lat}"],
        "throughput_tok_s_mape_pct": round(mape(1000.0 / meas[ok, j_thr], 1000.0 / pred[ok, j_thr]), 3),
        "mape_pct": per_metric,
        "cv_predictions": {m: [None if np.isnan(x) else round(float(x), 4) for x in pred[:, j]]
                           for j, m in enumerate(metrics)},
    }
    if split:
        out["noise_split"] = split
        for name in ("ttft_ms", "tpot_ms"):
            if f"{name}@{lat}" in split:
                out[f"{name}_model_error_pct"] = split[f"{name}@{lat}"]["model_error_pct"]
                out[f"{name}_measurement_noise_pct"] = split[f"{name}@{lat}"]["measurement_noise_pct"]
    return out
