"""Predictors are plain sklearn estimators; selection is by cross-validated error."""
from __future__ import annotations

import numpy as np
import pytest

from hwnas.errors import SearchError
from hwnas.search.predictors import CANDIDATES, candidate_estimators, cross_validate_candidates, fit_predictor


def _data(n=40, d=10, seed=0, nonlinear=False):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, (n, d))
    w = np.linspace(1, 2, d)
    y = X @ w + (3 * np.sin(6 * X[:, 0]) * X[:, 1] if nonlinear else 0.0)
    return X, y


def test_candidates_are_unfitted_sklearn_estimators():
    from sklearn.base import clone, is_regressor
    from sklearn.model_selection import cross_val_score

    ests = candidate_estimators(seed=3)
    assert set(ests) == set(CANDIDATES)
    X, y = _data()
    for name, est in ests.items():
        assert is_regressor(est), name
        c = clone(est)  # sklearn contract: __init__ only stores hyperparameters
        assert c.get_params().keys() == est.get_params().keys()
        scores = cross_val_score(est, X, y, cv=3, scoring="neg_mean_absolute_error")
        assert scores.shape == (3,)


def test_unknown_candidate_is_a_one_line_error():
    with pytest.raises(SearchError, match="unknown predictor 'mlp'.*accepted"):
        candidate_estimators(names=("ridge", "mlp"))


def test_linear_target_picks_a_low_error_model_and_reports_every_candidate():
    X, y = _data(n=40)
    fit = fit_predictor(X, y, objective="tpot_ms", folds=5, seed=0)
    assert set(fit.candidates) == set(CANDIDATES)
    c = fit.candidates
    best = min(c, key=lambda n: (-c[n]["cv_kendall_tau"], c[n]["cv_mae"]))  # rank agreement first
    assert fit.name == best
    by_mae = fit_predictor(X, y, folds=5, seed=0, select="mae")
    assert by_mae.name == min(c, key=lambda n: c[n]["cv_mae"])
    assert fit.cv_mae == pytest.approx(fit.candidates[best]["cv_mae"])
    assert fit.cv_mae < 0.1 * np.std(y)          # a linear target is easy for ridge
    assert fit.cv_kendall_tau > 0.9
    assert fit.n_train == 40 and fit.cv_folds == 5
    pred = fit.predict(X[:5])
    assert np.allclose(pred, y[:5], atol=0.2)
    d = fit.to_dict()
    assert d["chosen"] == fit.name and d["objective"] == "tpot_ms" and "estimator" not in d


def test_nonlinear_target_does_not_choose_the_worst_candidate():
    X, y = _data(n=60, d=4, nonlinear=True)
    fit = fit_predictor(X, y, folds=5)
    worst = max(fit.candidates, key=lambda n: fit.candidates[n]["cv_mae"])
    assert fit.name != worst


def test_cv_scores_match_manual_out_of_fold_errors():
    from sklearn.base import clone
    from sklearn.model_selection import KFold

    X, y = _data(n=20)
    ests = candidate_estimators(seed=0, names=("ridge",))
    scores, k = cross_validate_candidates(X, y, ests, folds=4, seed=7)
    assert k == 4
    pred = np.zeros_like(y)
    for tr, te in KFold(4, shuffle=True, random_state=7).split(X):
        pred[te] = clone(ests["ridge"]).fit(X[tr], y[tr]).predict(X[te])
    assert scores["ridge"]["cv_mae"] == pytest.approx(np.mean(np.abs(pred - y)))


def test_few_samples_fall_back_to_ridge_without_cv_and_bad_input_errors():
    X, y = _data(n=3)
    fit = fit_predictor(X, y)
    assert fit.name == "ridge" and fit.cv_mae is None and fit.candidates == {}
    with pytest.raises(SearchError, match="at least 2"):
        fit_predictor(X[:1], y[:1])
    with pytest.raises(SearchError, match="NaN"):
        fit_predictor(X, np.array([1.0, np.nan, 2.0]))
    with pytest.raises(SearchError, match="unknown predictor selection"):
        fit_predictor(X, y, select="r2")
    with pytest.raises(SearchError, match="shape"):
        fit_predictor(X, y[:2])


def test_fit_is_deterministic():
    X, y = _data(n=25, nonlinear=True)
    a, b = fit_predictor(X, y, seed=1), fit_predictor(X, y, seed=1)
    assert a.name == b.name and a.candidates == b.candidates
    assert np.array_equal(a.predict(X), b.predict(X))


def test_predictions_are_clipped_to_the_trust_range():
    X, y = _data(n=30)
    y = y + 5.0  # a positive quantity
    fit = fit_predictor(X, y, seed=0)
    span = np.ptp(y)
    far = np.full((2, X.shape[1]), 50.0)
    far[1] = -50.0
    p = fit.predict(far)
    assert np.all(p <= y.max() + 0.1 * span + 1e-9) and np.all(p >= max(y.min() - 0.1 * span, 0.5 * y.min()) - 1e-9)
    assert fit.to_dict()["bounds"] == list(fit.bounds)


def test_totals_candidate_learns_an_additive_latency():
    rng = np.random.default_rng(1)
    X = rng.uniform(0, 1, (12, 20))
    y = 3.0 + 20 * X[:, -2] + 6 * X[:, -1]  # latency = base + per-layer + width cost
    fit = fit_predictor(X, y, seed=0)
    assert fit.name == "ridge_totals" and fit.cv_kendall_tau == 1.0
