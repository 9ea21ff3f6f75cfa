"""Predictors for the LINAS search: plain scikit-learn estimators, one per objective.

Each objective (mean accuracy, TPOT, ...) gets its own regressor trained on the subnets validated
so far, with `SearchSpace.features(cfg)` as input. Several candidate estimators are compared by
k-fold cross-validation on the same data and the one with the lowest out-of-fold mean absolute
error is refit on everything. The candidates are ordinary sklearn estimators/Pipelines, so anything
that takes an estimator (``cross_val_score``, ``GridSearchCV``, ``clone``) works on them; the
selection is one visible function, not a hidden grid search behind a custom ``train()``. The
selection criterion is the out-of-fold Kendall tau (rank agreement), because NSGA-II only compares
predictions; MAE breaks ties and is reported too.
"""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from hwnas.errors import SearchError

log = logging.getLogger(__name__)

CANDIDATES = ("ridge_totals", "ridge", "svr", "gbr")
TRUST_MARGIN = 0.1  # predictions are clipped to the measured range widened by this fraction of it
MIN_CV_SAMPLES = 4  # below this no cross-validation is possible; ridge is used without a score


def candidate_estimators(seed: int = 0, names: Sequence[str] = CANDIDATES) -> dict[str, Any]:
    """Fresh, unfitted candidate regressors by name.

    - ``ridge_totals``: ridge on the last two features only (kept-layer fraction and mean width
      fraction in `SearchSpace.features`): the additive latency model, robust on a few samples;
    - ``ridge``: standardised features, ridge regression on every feature;
    - ``svr``: standardised features and target, RBF support-vector regression (smooth non-linear);
    - ``gbr``: gradient-boosted shallow trees (interactions, e.g. which layers are dropped together).
    """
    from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    makers = {
        "ridge_totals": lambda: Pipeline([
            ("totals", ColumnTransformer([("keep", "passthrough", [-2, -1])])),
            ("scale", StandardScaler()), ("ridge", Ridge(alpha=0.1)),
        ]),
        "ridge": lambda: Pipeline([("scale", StandardScaler()), ("ridge", Ridge(alpha=1.0))]),
        "svr": lambda: TransformedTargetRegressor(
            regressor=Pipeline([("scale", StandardScaler()), ("svr", SVR(C=3.0, epsilon=0.05, gamma="scale"))]),
            transformer=StandardScaler(),
        ),
        "gbr": lambda: GradientBoostingRegressor(
            n_estimators=60, max_depth=2, learning_rate=0.1, subsample=0.8, random_state=seed
        ),
    }
    unknown = [n for n in names if n not in makers]
    if unknown:
        raise SearchError(f"unknown predictor {unknown[0]!r}; accepted: {sorted(makers)}")
    return {n: makers[n]() for n in names}


@dataclass
class PredictorFit:
    """The chosen, fitted estimator for one objective and the cross-validation that chose it."""

    objective: str
    name: str
    estimator: Any
    n_train: int
    cv_folds: int
    cv_mae: float | None                 # out-of-fold MAE of the chosen candidate (natural units)
    cv_kendall_tau: float | None         # rank agreement of its out-of-fold predictions
    candidates: dict[str, dict[str, float | None]] = field(default_factory=dict)
    bounds: tuple[float, float] = (-np.inf, np.inf)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions clipped to the trust range (measured range +- TRUST_MARGIN of it), so the
        optimiser cannot exploit a regressor's extrapolation (e.g. a negative TPOT)."""
        y = np.asarray(self.estimator.predict(np.atleast_2d(X)), dtype=float)
        return np.clip(y, *self.bounds)

    def to_dict(self) -> dict[str, Any]:
        """JSON summary (no estimator): what history.jsonl records each iteration."""
        return {
            "objective": self.objective,
            "chosen": self.name,
            "n_train": self.n_train,
            "cv_folds": self.cv_folds,
            "cv_mae": self.cv_mae,
            "cv_kendall_tau": self.cv_kendall_tau,
            "candidates": self.candidates,
            "bounds": list(self.bounds),
        }


def _kendall_tau(a: np.ndarray, b: np.ndarray) -> float | None:
    from scipy.stats import kendalltau

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    tau = kendalltau(a, b).statistic
    return None if tau is None or math.isnan(tau) else round(float(tau), 4)


def cross_validate_candidates(
    X: np.ndarray, y: np.ndarray, estimators: Mapping[str, Any], *, folds: int = 5, seed: int = 0
) -> tuple[dict[str, dict[str, float | None]], int]:
    """Out-of-fold MAE and Kendall tau of each estimator (shuffled k-fold, k <= n)."""
    from sklearn.base import clone
    from sklearn.model_selection import KFold, cross_val_predict

    k = max(2, min(folds, len(y)))
    splitter = KFold(n_splits=k, shuffle=True, random_state=seed)
    scores: dict[str, dict[str, float | None]] = {}
    for name, est in estimators.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tiny folds: constant features, convergence notes
            pred = cross_val_predict(clone(est), X, y, cv=splitter)
        scores[name] = {
            "cv_mae": float(np.mean(np.abs(pred - y))),
            "cv_kendall_tau": _kendall_tau(y, pred),
        }
    return scores, k


def _selection_key(score: dict, select: str) -> tuple:
    tau = score["cv_kendall_tau"]
    if select == "tau":
        return (-(tau if tau is not None else -1.0), score["cv_mae"])
    return (score["cv_mae"],)


def fit_predictor(
    X: np.ndarray,
    y: np.ndarray,
    *,
    objective: str = "",
    candidates: Sequence[str] = CANDIDATES,
    folds: int = 5,
    seed: int = 0,
    select: str = "tau",
) -> PredictorFit:
    """Pick a candidate by cross-validation and fit it on all of (X, y).

    ``select="tau"`` (default) takes the highest out-of-fold Kendall tau, ties broken by MAE: NSGA-II
    only uses a predictor to rank subnets, and on a few dozen samples a model with a low error can
    still rank badly (and be exploited by the optimiser where it extrapolates). ``"mae"`` takes the
    lowest out-of-fold mean absolute error.
    """
    if select not in ("tau", "mae"):
        raise SearchError(f"unknown predictor selection {select!r}; accepted: tau, mae")
    from sklearn.base import clone

    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    if X.ndim != 2 or len(X) != len(y):
        raise SearchError(f"predictor for {objective!r}: X has shape {X.shape} but y has {len(y)} values")
    if len(y) < 2:
        raise SearchError(f"predictor for {objective!r} needs at least 2 validated subnets, got {len(y)}")
    if not np.all(np.isfinite(y)):
        raise SearchError(f"predictor for {objective!r}: measured values contain NaN or inf")
    ests = candidate_estimators(seed, candidates)
    if len(y) < MIN_CV_SAMPLES:
        name, scores, k = "ridge" if "ridge" in ests else next(iter(ests)), {}, 0
        cv_mae = cv_tau = None
    else:
        scores, k = cross_validate_candidates(X, y, ests, folds=folds, seed=seed)
        name = min(scores, key=lambda n: _selection_key(scores[n], select) + (list(ests).index(n),))
        cv_mae, cv_tau = scores[name]["cv_mae"], scores[name]["cv_kendall_tau"]
    span = float(np.ptp(y)) or abs(float(y[0])) or 1.0
    lo, hi = float(y.min()) - TRUST_MARGIN * span, float(y.max()) + TRUST_MARGIN * span
    if y.min() > 0:
        lo = max(lo, 0.5 * float(y.min()))  # positive quantities (latency, size) stay positive
    est = clone(ests[name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    log.debug("predictor %s: %s (cv MAE %s over %d folds, n=%d)", objective, name, cv_mae, k, len(y))
    return PredictorFit(objective, name, est, len(y), k, cv_mae, cv_tau, scores, (lo, hi))
