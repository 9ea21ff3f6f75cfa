"""Robust timing statistics: estimators over short interleaved rounds, bootstrap intervals, ratios.

A *round* is one generation of every model being measured (models interleaved). Each round gives,
per model and batch size, one TTFT and a list of decode-step durations. On a busy host the
slow values are the ones disturbed by someone else; the fast ones are what the model costs. The
estimators below summarise the rounds of one model:

- ``round_min`` (default, provisional: ``bench/noisy_host_bench.py`` could not yet discriminate the
  estimators on the overloaded development host, see README): TPOT = median over rounds of
  the fastest decode step of each round; TTFT = the lower quartile of the rounds' TTFTs (one TTFT
  per round, so the low quantile plays the role of the per-round minimum);
- ``median``: median over rounds of each round's median step / the rounds' median TTFT (hwnas'
  estimator before issue 14);
- ``mean``: mean of every step / TTFT (what openvino-genai's PerfMetrics report);
- ``low_quantile``: 10th percentile of every step pooled / of the TTFTs;
- ``min``: fastest step / TTFT seen.

Uncertainty comes from the rounds: `bootstrap_ci` resamples rounds (with replacement) and
recomputes the estimator; `ratio_ci` does the same for a ratio of two models measured in the same
rounds (a speed-up), resampling *paired* rounds, so a slow phase that hit both models cancels.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from hwnas.errors import MeasurementError

ESTIMATORS = ("round_min", "median", "mean", "low_quantile", "min")
DEFAULT_ESTIMATOR = "round_min"
TTFT_QUANTILE = 0.25   # round_min's TTFT: lower quartile over rounds
LOW_QUANTILE = 0.10    # low_quantile: 10th percentile
N_BOOT = 1000

Steps = Sequence[Sequence[float]]  # per round: the decode-step durations of that round


def check_estimator(name: str) -> str:
    if name not in ESTIMATORS:
        raise MeasurementError(f"unknown timing estimator {name!r}; accepted: {', '.join(ESTIMATORS)}")
    return name


def per_round_tpot(steps: Steps, estimator: str = DEFAULT_ESTIMATOR) -> list[float]:
    """One TPOT value per round, as the estimator sees a round (min step for round_min, else the median step)."""
    check_estimator(estimator)
    if estimator == "round_min":
        return [float(np.min(s)) for s in steps]
    return [float(np.median(s)) for s in steps]


def tpot_estimate(steps: Steps, estimator: str = DEFAULT_ESTIMATOR) -> float:
    """TPOT (ms, whole batch) from the decode steps of several rounds."""
    check_estimator(estimator)
    if not len(steps) or any(len(s) == 0 for s in steps):
        raise MeasurementError("no decode steps to estimate TPOT from (new_tokens must be >= 2)")
    if estimator in ("round_min", "median"):
        return float(np.median(per_round_tpot(steps, estimator)))
    pooled = np.concatenate([np.asarray(s, float) for s in steps])
    if estimator == "mean":
        return float(pooled.mean())
    if estimator == "low_quantile":
        return float(np.quantile(pooled, LOW_QUANTILE))
    return float(pooled.min())


def ttft_estimate(ttfts: Sequence[float], estimator: str = DEFAULT_ESTIMATOR) -> float:
    """TTFT (ms) from one value per round."""
    check_estimator(estimator)
    a = np.asarray(ttfts, float)
    if a.size == 0:
        raise MeasurementError("no TTFT samples")
    if estimator == "round_min":
        return float(np.quantile(a, TTFT_QUANTILE))
    if estimator == "median":
        return float(np.median(a))
    if estimator == "mean":
        return float(a.mean())
    if estimator == "low_quantile":
        return float(np.quantile(a, LOW_QUANTILE))
    return float(a.min())


def _boot_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_ci(stat: Callable[[np.ndarray], float], n_rounds: int, *, n_boot: int = N_BOOT, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of `stat(round_indices)` resampling `n_rounds` rounds."""
    if n_rounds < 2:
        v = stat(np.arange(n_rounds))
        return v, v
    vals = np.array([stat(idx) for idx in _boot_indices(n_rounds, n_boot, seed)])
    lo, hi = np.quantile(vals, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _vector_stat(values: np.ndarray, idx: np.ndarray, kind: str) -> np.ndarray:
    """Statistic of values[idx] along each bootstrap row (vectorised)."""
    x = values[idx]
    if kind == "median":
        return np.median(x, axis=1)
    if kind == "mean":
        return x.mean(axis=1)
    if kind == "min":
        return x.min(axis=1)
    return np.quantile(x, float(kind), axis=1)


def _round_kind(estimator: str, what: str) -> str | None:
    """How the estimator reduces one value per round (None: it pools steps and needs the slow path)."""
    if what == "ttft":
        return {"round_min": str(TTFT_QUANTILE), "median": "median", "mean": "mean",
                "low_quantile": str(LOW_QUANTILE), "min": "min"}[estimator]
    return "median" if estimator in ("round_min", "median") else None


def _ci_from(vals: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(vals, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def tpot_ci(steps: Steps, estimator: str = DEFAULT_ESTIMATOR, *, n_boot: int = N_BOOT, level: float = 0.95,
            seed: int = 0) -> tuple[float, float]:
    """95% bootstrap CI (over rounds) of `tpot_estimate`."""
    steps = [list(s) for s in steps]
    kind = _round_kind(check_estimator(estimator), "tpot")
    if kind is None or len(steps) < 2:
        return bootstrap_ci(lambda idx: tpot_estimate([steps[i] for i in idx], estimator), len(steps),
                            n_boot=n_boot, level=level, seed=seed)
    v = np.asarray(per_round_tpot(steps, estimator))
    return _ci_from(_vector_stat(v, _boot_indices(len(v), n_boot, seed), kind), level)


def ttft_ci(ttfts: Sequence[float], estimator: str = DEFAULT_ESTIMATOR, *, n_boot: int = N_BOOT, level: float = 0.95,
            seed: int = 0) -> tuple[float, float]:
    """95% bootstrap CI (over rounds) of `ttft_estimate`."""
    a = np.asarray(ttfts, float)
    if len(a) < 2:
        v = ttft_estimate(a, estimator)
        return v, v
    kind = _round_kind(check_estimator(estimator), "ttft")
    return _ci_from(_vector_stat(a, _boot_indices(len(a), n_boot, seed), kind), level)


def ratio_ci(num: Callable[[np.ndarray], float], den: Callable[[np.ndarray], float], n_rounds: int, *,
             n_boot: int = N_BOOT, level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Ratio num/den of two estimators over the same (paired) rounds, with a paired bootstrap CI.

    Returns {"value", "ci_low", "ci_high", "rounds"}."""
    all_idx = np.arange(n_rounds)
    value = num(all_idx) / den(all_idx)
    lo, hi = bootstrap_ci(lambda idx: num(idx) / den(idx), n_rounds, n_boot=n_boot, level=level, seed=seed)
    return {"value": float(value), "ci_low": float(lo), "ci_high": float(hi), "rounds": int(n_rounds)}


def paired_ratio(base_rounds: Sequence, fast_rounds: Sequence, what: str, estimator: str = DEFAULT_ESTIMATOR, *,
                 n_boot: int = N_BOOT, level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """estimate(base) / estimate(fast) over paired rounds with a paired bootstrap CI.

    what="ttft": the rounds are TTFTs; what="tpot": the rounds are lists of decode steps."""
    check_estimator(estimator)
    n = len(base_rounds)
    if n != len(fast_rounds) or n == 0:
        raise MeasurementError(f"a paired ratio needs the same rounds for both models, got {n} and {len(fast_rounds)}")
    if what == "ttft":
        b, f = np.asarray(base_rounds, float), np.asarray(fast_rounds, float)
        value = ttft_estimate(b, estimator) / ttft_estimate(f, estimator)
    else:
        b_steps, f_steps = [list(s) for s in base_rounds], [list(s) for s in fast_rounds]
        value = tpot_estimate(b_steps, estimator) / tpot_estimate(f_steps, estimator)
    kind = _round_kind(estimator, what)
    if n < 2:
        lo = hi = value
    elif kind is None:
        return ratio_ci(lambda idx: tpot_estimate([b_steps[i] for i in idx], estimator),
                        lambda idx: tpot_estimate([f_steps[i] for i in idx], estimator), n,
                        n_boot=n_boot, level=level, seed=seed)
    else:
        if what != "ttft":
            b, f = np.asarray(per_round_tpot(b_steps, estimator)), np.asarray(per_round_tpot(f_steps, estimator))
        idx = _boot_indices(n, n_boot, seed)
        lo, hi = _ci_from(_vector_stat(b, idx, kind) / _vector_stat(f, idx, kind), level)
    return {"value": float(value), "ci_low": float(lo), "ci_high": float(hi), "rounds": int(n)}


def relative_halfwidth(ci: tuple[float, float], value: float) -> float:
    """Half the CI's width relative to the value (0.02 = +-2%)."""
    return float((ci[1] - ci[0]) / 2.0 / value) if value else float("inf")
