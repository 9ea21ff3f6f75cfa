"""Robust timing statistics: estimators, intervals, paired ratios, the interference rule, the noise split."""
import numpy as np
import pytest

from hwnas.errors import MeasurementError
from hwnas.hardware import robust
from hwnas.hardware.interference import baseline_of, classify_rounds, load_delta, load_snapshot
from hwnas.hardware.latency_model import fit_latency_model, noise_split


def _rounds(n_rounds=12, steps=15, cost=10.0, busy=0.0, seed=0):
    """Decode steps of `n_rounds` rounds; with probability `busy` a step is slowed 1.5-3x (a hog took the core)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_rounds):
        s = cost * (1 + 0.01 * rng.random(steps))
        hit = rng.random(steps) < busy
        s[hit] *= rng.uniform(1.5, 3.0, hit.sum())
        out.append(list(s))
    return out


def test_estimators_on_known_values():
    steps = [[3.0, 1.0, 2.0], [5.0, 4.0, 6.0], [2.0, 2.0, 9.0]]
    assert robust.per_round_tpot(steps, "round_min") == [1.0, 4.0, 2.0]
    assert robust.tpot_estimate(steps, "round_min") == 2.0       # median of the round minima
    assert robust.tpot_estimate(steps, "median") == 2.0          # median of the round medians (2, 5, 2)
    assert robust.tpot_estimate(steps, "mean") == pytest.approx(34 / 9)
    assert robust.tpot_estimate(steps, "min") == 1.0
    assert robust.tpot_estimate(steps, "low_quantile") == pytest.approx(np.quantile(sum(steps, []), 0.1))
    ttfts = [10.0, 20.0, 30.0, 40.0, 50.0]
    assert robust.ttft_estimate(ttfts, "round_min") == 20.0        # lower quartile
    assert robust.ttft_estimate(ttfts, "median") == 30.0 and robust.ttft_estimate(ttfts, "min") == 10.0
    with pytest.raises(MeasurementError, match="unknown timing estimator 'fastest'"):
        robust.tpot_estimate(steps, "fastest")
    with pytest.raises(MeasurementError, match="no decode steps"):
        robust.tpot_estimate([[]], "round_min")


def test_round_min_moves_far_less_than_the_mean_when_a_hog_takes_steps():
    quiet, busy = _rounds(busy=0.0, seed=1), _rounds(busy=0.4, seed=2)
    shift = {e: robust.tpot_estimate(busy, e) / robust.tpot_estimate(quiet, e) - 1 for e in robust.ESTIMATORS}
    assert shift["mean"] > 0.3 and shift["median"] > 0.0
    assert abs(shift["round_min"]) < 0.01 and abs(shift["min"]) < 0.01


def test_bootstrap_intervals_cover_the_figure_and_shrink_with_more_rounds():
    few, many = _rounds(6, busy=0.5, seed=3), _rounds(60, busy=0.5, seed=3)
    for steps in (few, many):
        lo, hi = robust.tpot_ci(steps, "median")
        assert lo <= robust.tpot_estimate(steps, "median") <= hi
    w = lambda s: robust.relative_halfwidth(robust.tpot_ci(s, "median"), robust.tpot_estimate(s, "median"))  # noqa: E731
    assert w(many) < w(few)
    # the slow path (pooled estimators) agrees in kind
    lo, hi = robust.tpot_ci(few, "mean", n_boot=200)
    assert lo <= robust.tpot_estimate(few, "mean") <= hi
    assert robust.ttft_ci([5.0], "round_min") == (5.0, 5.0)


def test_paired_ratio_cancels_a_load_shared_by_the_round():
    rng = np.random.default_rng(4)
    load = rng.uniform(1.0, 3.0, 20)  # each round's busy phase
    base = [list(2.0 * l * (1 + 0.005 * rng.random(10))) for l in load]
    fast = [list(1.0 * l * (1 + 0.005 * rng.random(10))) for l in load]
    r = robust.paired_ratio(base, fast, "tpot", "round_min")
    assert r["value"] == pytest.approx(2.0, rel=0.01) and r["rounds"] == 20
    assert 1.97 < r["ci_low"] <= r["value"] <= r["ci_high"] < 2.03
    # unpaired, the same data would give a wide interval: the pairing is what makes the ratio trustworthy
    lo_b, hi_b = robust.tpot_ci(base, "round_min")
    lo_f, hi_f = robust.tpot_ci(fast, "round_min")
    assert (hi_b / lo_f - lo_b / hi_f) > 10 * (r["ci_high"] - r["ci_low"])
    t = robust.paired_ratio([20.0, 40.0, 60.0], [10.0, 20.0, 30.0], "ttft", "median")
    assert t["value"] == 2.0 and t["ci_low"] == 2.0 == t["ci_high"]
    with pytest.raises(MeasurementError, match="same rounds"):
        robust.paired_ratio([1.0], [1.0, 2.0], "ttft")


def test_interference_rule_uses_both_readings_and_the_host_best():
    readings = [(1.0, 1.1), (1.0, 1.4), (1.3, 1.0), (1.2, 1.2)]
    assert baseline_of(readings, None) == 1.0 and baseline_of(readings, 0.8) == 0.8
    assert classify_rounds(readings, 1.0, 0.25) == [True, False, False, True]
    # a session slow from start to end is recognised against the host's best
    assert classify_rounds(readings, baseline_of(readings, 0.5), 0.25) == [False] * 4
    snap = load_snapshot()
    d = load_delta(snap, load_snapshot())
    assert len(d["loadavg_before"]) == 3 and d["cpus"] >= 1


def test_noise_split_separates_model_error_from_measurement_noise():
    measured = np.array([10.0, 20.0, 30.0, 40.0])
    # predictions off by exactly the measurements' own noise: no model error is left
    s = noise_split(measured, measured * [1.02, 0.98, 1.02, 0.98], [0.02 * 1.96] * 4)
    assert s["model_error_pct"] == 0.0 and s["within_noise_share"] == 1.0 and s["rms_error_pct"] == pytest.approx(2.0)
    # a 10% model error with 1% noise: the model is wrong
    s = noise_split(measured, measured * 1.10, [0.0196] * 4)
    assert s["model_error_pct"] == pytest.approx(np.sqrt(0.01 - 0.0001) * 100, rel=1e-3)
    assert s["within_noise_share"] == 0.0 and s["measurement_noise_pct"] == pytest.approx(1.96)


def test_latency_model_reports_the_split_when_given_noise():
    widths = (64, 128)
    cfgs = [[64] * 2, [128] * 3, [64, 128, 64, 128], [128] * 5, [64] * 6, [128, 64] * 3]
    rng = np.random.default_rng(0)
    subs = [(w, {"ttft_ms@1": 5 + len(w) + 0.01 * sum(w), "tpot_ms@1": (1 + 0.5 * len(w) + 0.002 * sum(w))
                 * (1 + 0.01 * rng.standard_normal())}) for w in cfgs]
    noise = [{"ttft_ms@1": 0.001, "tpot_ms@1": 0.02} for _ in cfgs]
    lm = fit_latency_model(subs, widths, (1,), noise=noise)
    e = lm.error
    assert e["tpot_ms_measurement_noise_pct"] == pytest.approx(2.0) and e["ttft_ms_measurement_noise_pct"] == pytest.approx(0.1)
    assert e["ttft_ms_model_error_pct"] < 0.1  # TTFT is exactly additive here
    assert e["noise_split"]["tpot_ms@1"]["within_noise_share"] >= 0.5  # 1% noise inside a +-2% interval
    assert "noise_split" not in fit_latency_model(subs, widths, (1,)).error
