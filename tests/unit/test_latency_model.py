import json

import numpy as np
import pytest

from hwnas.errors import MeasurementError
from hwnas.hardware.latency_model import LatencyModel, fit_latency_model, mape, metric_names

WIDTHS = (384, 576, 768, 960, 1152, 1344, 1536)
BATCHES = (1, 4)


def truth(widths, metric):
    """A synthetic additive ground truth: base + per-layer cost linear in width, per metric."""
    base = {"ttft_ms@1": 9.0, "tpot_ms@1": 3.0, "ttft_ms@4": 30.0, "tpot_ms@4": 1.2}[metric]
    a = {"ttft_ms@1": 2.0, "tpot_ms@1": 0.4, "ttft_ms@4": 7.0, "tpot_ms@4": 0.15}[metric]
    b = {"ttft_ms@1": 4e-3, "tpot_ms@1": 3e-4, "ttft_ms@4": 1.5e-2, "tpot_ms@4": 1e-4}[metric]
    return base + sum(a + b * w for w in widths)


def sample_subnets(n, rng, noise=0.0):
    out = []
    for _ in range(n):
        k = int(rng.integers(15, 31))
        ws = [int(rng.choice(WIDTHS))] * k if rng.random() < 0.5 else [int(rng.choice(WIDTHS)) for _ in range(k)]
        vals = {m: truth(ws, m) * (1 + noise * rng.standard_normal()) for m in metric_names(BATCHES)}
        out.append((ws, vals))
    return out


def test_linear_form_recovers_additive_truth_exactly():
    rng = np.random.default_rng(0)
    subnets = sample_subnets(13, rng)
    lm = fit_latency_model(subnets, WIDTHS, BATCHES)
    assert lm.form == "linear"
    assert lm.base_ms["tpot_ms@1"] == pytest.approx(3.0, abs=1e-6)
    for w in WIDTHS:
        assert lm.per_layer_ms["tpot_ms@1"][w] == pytest.approx(0.4 + 3e-4 * w, rel=1e-6)
        assert lm.per_layer_ms["ttft_ms@4"][w] == pytest.approx(7.0 + 1.5e-2 * w, rel=1e-6)
    assert lm.error["tpot_ms_mape_pct"] < 1e-6 and lm.error["ttft_ms_mape_pct"] < 1e-6
    assert lm.error["n_subnets"] == 13
    # unseen subnets, including a width that was never profiled
    for ws in ([384] * 15, [1536] * 30, [640, 1000, 384] * 6):
        p = lm.predict({"mlp_widths": ws})
        assert p["tpot_ms"] == pytest.approx(truth(ws, "tpot_ms@1"), rel=1e-6)
        assert p["ttft_ms"] == pytest.approx(truth(ws, "ttft_ms@1"), rel=1e-6)
        assert p["throughput_tok_s"] == pytest.approx(1000.0 / truth(ws, "tpot_ms@4"), rel=1e-6)


def test_per_width_form_recovers_free_table():
    """A truth whose per-layer cost is not linear in width: the per_width form gets it exactly."""
    rng = np.random.default_rng(1)
    table = {w: 1.0 + (0.5 if w == 768 else 0.0) + w / 1000 for w in WIDTHS}  # a kink at 768

    def t(ws):
        return 4.0 + sum(table[w] for w in ws)

    subnets = []
    for _ in range(20):
        k = int(rng.integers(10, 31))
        ws = [int(rng.choice(WIDTHS)) for _ in range(k)]
        subnets.append((ws, {m: t(ws) for m in metric_names((1,))}))
    lm = fit_latency_model(subnets, WIDTHS, (1,), form="per_width")
    for w in WIDTHS:
        assert lm.per_layer_ms["tpot_ms@1"][w] == pytest.approx(table[w], abs=1e-6)
    assert lm.error["tpot_ms_mape_pct"] < 1e-6
    lin = fit_latency_model(subnets, WIDTHS, (1,), form="linear")
    assert lin.error["tpot_ms_mape_pct"] > lm.error["tpot_ms_mape_pct"]


def test_probes_are_used_as_training_rows_only():
    rng = np.random.default_rng(2)
    subnets = sample_subnets(6, rng)
    probes = [([w] * 3, {m: truth([w] * 3, m) for m in metric_names(BATCHES)}) for w in WIDTHS]
    probes.append(([384], {m: truth([384], m) for m in metric_names(BATCHES)}))
    lm = fit_latency_model(subnets, WIDTHS, BATCHES, probes=probes, form="per_width")
    assert lm.error["n_subnets"] == 6  # the error is measured on whole subnets only
    assert lm.base_ms["ttft_ms@1"] == pytest.approx(9.0, abs=1e-6)


def test_noise_gives_small_but_honest_cv_error():
    rng = np.random.default_rng(3)
    subnets = sample_subnets(13, rng, noise=0.03)
    lm = fit_latency_model(subnets, WIDTHS, BATCHES)
    assert 0.5 < lm.error["tpot_ms_mape_pct"] < 6
    preds = lm.error["cv_predictions"]["tpot_ms@1"]
    assert len(preds) == 13 and all(p is not None for p in preds)


def test_serialisation_round_trip_through_json():
    rng = np.random.default_rng(4)
    lm = fit_latency_model(sample_subnets(8, rng, noise=0.01), WIDTHS, BATCHES, target="xeon", host_fingerprint="h-1")
    again = LatencyModel.from_dict(json.loads(json.dumps(lm.to_dict())))
    cfg = {"mlp_widths": [768] * 20}
    assert again.predict(cfg) == pytest.approx(lm.predict(cfg))
    assert again.target == "xeon" and again.host_fingerprint == "h-1" and again.error == lm.error


def test_too_few_or_degenerate_measurements_are_errors():
    rng = np.random.default_rng(5)
    with pytest.raises(MeasurementError, match="at least 3"):
        fit_latency_model(sample_subnets(2, rng), WIDTHS, BATCHES)
    same = [([768] * 20, {m: 1.0 for m in metric_names(BATCHES)})] * 5
    with pytest.raises(MeasurementError):
        fit_latency_model(same, WIDTHS, BATCHES)
    with pytest.raises(MeasurementError, match="form"):
        fit_latency_model(sample_subnets(5, rng), WIDTHS, BATCHES, form="quadratic")
    with pytest.raises(MeasurementError, match="malformed"):
        LatencyModel.from_dict({"schema_version": 1, "batch_sizes": [1]})


def test_three_subnets_fit_but_cannot_cross_validate():
    rng = np.random.default_rng(6)
    subnets = [([384] * 15, {}), ([1536] * 30, {}), ([768] * 20 + [384], {})]
    subnets = [(w, {m: truth(w, m) for m in metric_names(BATCHES)}) for w, _ in subnets]
    lm = fit_latency_model(subnets, WIDTHS, BATCHES)
    assert "note" in lm.error and lm.predict({"mlp_widths": [384] * 15})["tpot_ms"] == pytest.approx(
        truth([384] * 15, "tpot_ms@1"))
    assert mape([1.0, 2.0], [1.1, 1.8]) == pytest.approx(10.0)
    del rng
