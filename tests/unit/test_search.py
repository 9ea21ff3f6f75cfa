"""The LINAS loop on a cheap synthetic objective (no model)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hwnas.errors import SearchError
from hwnas.io import read_jsonl
from hwnas.model.space import SearchSpace, SubnetConfig
from hwnas.search.config import SearchConfig
from hwnas.search.loop import run_search
from hwnas.search.objectives import Constraint, constraints_from_options, parse_objectives
from hwnas.search.pareto import HypervolumeReference, pareto_front
from hwnas.search.picking import pick_fastest_within
from hwnas.search.synthetic import SyntheticValidator

SPACE = SearchSpace(num_layers=10, full_width=256, widths=(64, 128, 192, 256), min_layers=5, always_keep=(0, 9))


def cfg(**kw):
    base = dict(evaluations=16, population=4, seed=0, surrogate_generations=12, surrogate_population=16)
    base.update(kw)
    return SearchConfig(**base)


class Recording(SyntheticValidator):
    """Synthetic validator that remembers what it validated and can die after N calls."""

    def __init__(self, space, die_after=None):
        super().__init__(space, seed=1)
        self.keys = []
        self.die_after = die_after

    def __call__(self, c):
        if self.die_after is not None and self.calls >= self.die_after:
            raise KeyboardInterrupt("killed")
        self.keys.append(c.key)
        return super().__call__(c)


@pytest.mark.parametrize("strategy", ["linas", "nsga2", "random"])
def test_budget_respected_and_only_validated_points_reported(tmp_path, strategy):
    v = Recording(SPACE)
    res = run_search(SPACE, v, cfg(strategy=strategy), out=tmp_path / "o")
    assert v.calls == 16 and len(set(v.keys)) == 16
    lines = read_jsonl(tmp_path / "o" / "candidates.jsonl")
    assert [r["key"] for r in lines] == v.keys
    assert {SPACE.largest().key, SPACE.smallest().key} <= set(v.keys[:4])
    pareto = json.loads((tmp_path / "o" / "pareto.json").read_text())
    assert pareto and {r["key"] for r in pareto} <= set(v.keys)
    assert [r["key"] for r in pareto] == [r["key"] for r in res.pareto]
    # the reported front is exactly the non-dominated set of what was validated
    assert {r["key"] for r in pareto} == {r["key"] for r in pareto_front(lines, ("accuracy", "tpot_ms"))}
    for r in pareto:
        assert r["subnet"].keys() == {"layers", "mlp_widths"} and r["strategy"] == strategy
    assert res.full_model["key"] == SPACE.largest().key and res.full_model["full_model"] is True
    for f in ("history.jsonl", "config.json", "pareto.png", "summary.md"):
        assert (tmp_path / "o" / f).stat().st_size > 0
    hist = read_jsonl(tmp_path / "o" / "history.jsonl")
    assert hist[-1]["validated"] == 16
    hvs = [h["hypervolume"] for h in hist]
    assert all(b >= a - 1e-12 for a, b in zip(hvs, hvs[1:]))  # more validated points never lose volume


@pytest.mark.parametrize("mode", ["ranked", "prefix"])
@pytest.mark.parametrize("strategy", ["linas", "nsga2"])
def test_other_layer_modes(mode, strategy):
    space = SPACE.with_(layer_mode=mode, layer_order=(0, 9, 4, 2, 7, 1, 8, 3, 6, 5) if mode == "ranked" else None)
    v = Recording(space)
    res = run_search(space, v, cfg(strategy=strategy))
    assert v.calls == 16 and len(set(v.keys)) == 16
    assert all(space.contains(SubnetConfig.from_dict(r["subnet"])) for r in res.records)
    assert {r["key"] for r in res.pareto} <= set(v.keys)


def test_predictors_refit_every_iteration(monkeypatch):
    import hwnas.search.predictors as P

    calls = []
    real = P.fit_predictor

    def spy(X, y, **kw):
        calls.append((kw["objective"], len(y)))
        return real(X, y, **kw)

    monkeypatch.setattr(P, "fit_predictor", spy)
    res = run_search(SPACE, SyntheticValidator(SPACE), cfg(evaluations=16, population=4))
    # iterations 1..3 each refit accuracy and tpot on everything validated before them
    assert calls == [(m, n) for n in (4, 8, 12) for m in ("accuracy", "tpot_ms")]
    for h in res.history[1:]:
        assert set(h["predictors"]) == {"accuracy", "tpot_ms"}
        assert h["predictors"]["accuracy"]["n_train"] == h["validated"] - h["new"]
        assert h["predictors"]["tpot_ms"]["cv_mae"] is not None
    # LINAS proposals carry the prediction made when they were proposed
    later = [r for r in res.records if r["iteration"] > 0 and r["origin"] == "linas"]
    assert later and all(set(r["predicted"]) == {"accuracy", "tpot_ms"} for r in later)


def test_linas_predictions_track_measurements():
    res = run_search(SPACE, SyntheticValidator(SPACE), cfg(evaluations=20, population=4))
    later = [r for r in res.records if r["origin"] == "linas"]
    err = np.mean([abs(r["predicted"]["tpot_ms"] - r["tpot_ms"]) / r["tpot_ms"] for r in later])
    assert err < 0.1  # latency is additive in the synthetic objective: the predictor must learn it


@pytest.mark.parametrize("strategy", ["linas", "nsga2"])
def test_resume_after_kill_matches_uninterrupted_run(tmp_path, strategy):
    full = Recording(SPACE)
    run_search(SPACE, full, cfg(strategy=strategy), out=tmp_path / "a")
    first = Recording(SPACE, die_after=9)  # dies in the middle of the third iteration
    with pytest.raises(KeyboardInterrupt):
        run_search(SPACE, first, cfg(strategy=strategy), out=tmp_path / "b")
    assert len(read_jsonl(tmp_path / "b" / "candidates.jsonl")) == 9
    second = Recording(SPACE)
    run_search(SPACE, second, cfg(strategy=strategy), out=tmp_path / "b", resume=True)
    assert second.calls == 16 - 9  # nothing validated twice
    keys_b = [r["key"] for r in read_jsonl(tmp_path / "b" / "candidates.jsonl")]
    keys_a = [r["key"] for r in read_jsonl(tmp_path / "a" / "candidates.jsonl")]
    assert len(keys_b) == len(set(keys_b)) == 16
    assert keys_b == keys_a  # same seed and budget: the same subnets in the same order
    hist = [h["iteration"] for h in read_jsonl(tmp_path / "b" / "history.jsonl")]
    assert hist == sorted(set(hist))  # no duplicated history lines
    # resuming a finished run validates nothing
    third = Recording(SPACE)
    run_search(SPACE, third, cfg(strategy=strategy), out=tmp_path / "b", resume=True)
    assert third.calls == 0 and len(read_jsonl(tmp_path / "b" / "candidates.jsonl")) == 16


def test_resume_drops_a_torn_last_line(tmp_path):
    first = Recording(SPACE, die_after=6)
    with pytest.raises(KeyboardInterrupt):
        run_search(SPACE, first, cfg(), out=tmp_path / "o")
    path = tmp_path / "o" / "candidates.jsonl"
    with open(path, "a") as f:
        f.write('{"key": "l7-torn", "sub')  # killed in the middle of a write
    run_search(SPACE, Recording(SPACE), cfg(), out=tmp_path / "o", resume=True)
    recs = read_jsonl(path)
    assert len(recs) == 16 and all(r["key"] != "l7-torn" for r in recs)


def test_resume_with_other_settings_errors_and_touches_nothing(tmp_path):
    run_search(SPACE, SyntheticValidator(SPACE), cfg(evaluations=8), out=tmp_path / "o", identity={"model_sha256": "aaa"})
    before = {p.name: p.read_bytes() for p in (tmp_path / "o").iterdir()}
    other_space = SPACE.with_(min_layers=6)
    with pytest.raises(SearchError, match="different space"):
        run_search(other_space, SyntheticValidator(other_space), cfg(evaluations=8), out=tmp_path / "o", resume=True,
                   identity={"model_sha256": "aaa"})
    with pytest.raises(SearchError, match="different model_sha256"):
        run_search(SPACE, SyntheticValidator(SPACE), cfg(evaluations=8), out=tmp_path / "o", resume=True,
                   identity={"model_sha256": "bbb"})
    with pytest.raises(SearchError, match="not empty.*--resume"):
        run_search(SPACE, SyntheticValidator(SPACE), cfg(evaluations=8), out=tmp_path / "o")
    after = {p.name: p.read_bytes() for p in (tmp_path / "o").iterdir()}
    assert after == before


def test_resume_can_extend_the_budget(tmp_path):
    run_search(SPACE, SyntheticValidator(SPACE), cfg(evaluations=8), out=tmp_path / "o")
    v = Recording(SPACE)
    run_search(SPACE, v, cfg(evaluations=12), out=tmp_path / "o", resume=True)
    assert v.calls == 4 and len(read_jsonl(tmp_path / "o" / "candidates.jsonl")) == 12


def test_bad_configuration_errors():
    with pytest.raises(SearchError, match="smaller than --population"):
        SearchConfig(evaluations=4, population=8)
    with pytest.raises(SearchError, match="unknown objective 'latency'"):
        SearchConfig(objectives=("accuracy", "latency"))
    with pytest.raises(SearchError, match="2 to 3 objectives"):
        parse_objectives("accuracy,tpot,ttft,n_params")
    with pytest.raises(SearchError, match="unknown strategy"):
        SearchConfig(strategy="bayes")
    with pytest.raises(SearchError, match="fraction"):
        constraints_from_options(min_accuracy=45)
    assert parse_objectives("acc, tpot") == ("accuracy", "tpot_ms")


def test_config_round_trips():
    c = cfg(objectives=("accuracy", "ttft_ms", "n_params"), constraints=constraints_from_options(12.0, 0.3))
    assert SearchConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert c.metrics == ("accuracy", "ttft_ms", "n_params", "tpot_ms")


@pytest.mark.parametrize("strategy", ["linas", "nsga2", "random"])
def test_constraints_filter_the_reported_front(strategy):
    v = SyntheticValidator(SPACE)
    limit = 0.5 * (v(SPACE.largest())["tpot_ms"] + v(SPACE.smallest())["tpot_ms"])
    c = cfg(strategy=strategy, constraints=(Constraint("tpot_ms", limit, True),))
    res = run_search(SPACE, SyntheticValidator(SPACE), c)
    assert res.pareto and all(r["tpot_ms"] <= limit for r in res.pareto)
    assert any(r["tpot_ms"] > limit for r in res.records)  # the full model is validated regardless


def _union_volume(points, ref):
    """Exact volume of the union of boxes [p, ref] (minimisation), on the grid of the points' coordinates."""
    import itertools

    pts = np.asarray(points, dtype=float)
    axes = [np.unique(np.append(pts[:, k], ref[k])) for k in range(pts.shape[1])]
    vol = 0.0
    for cell in itertools.product(*(range(len(a) - 1) for a in axes)):
        lo = np.array([axes[k][i] for k, i in enumerate(cell)])
        if np.any(np.all(pts <= lo, axis=1)):
            vol += float(np.prod([axes[k][i + 1] - axes[k][i] for k, i in enumerate(cell)]))
    return vol


def test_three_objectives():
    objs = ("accuracy", "tpot_ms", "n_params")
    res = run_search(SPACE, SyntheticValidator(SPACE), cfg(objectives=objs))
    assert len(res.records) == 16 and len({r["key"] for r in res.records}) == 16
    # the front is the brute-force non-dominated set in all three objectives (accuracy maximised)
    F = {r["key"]: np.array([-r["accuracy"], r["tpot_ms"], r["n_params"]]) for r in res.records}

    def dominated(k):
        return any(np.all(f <= F[k]) and np.any(f < F[k]) for j, f in F.items() if j != k)

    assert {r["key"] for r in res.pareto} == {k for k in F if not dominated(k)}
    # a third objective can only add points: the two-objective front lies inside the three-objective one
    two = {r["key"] for r in pareto_front(res.records, ("accuracy", "tpot_ms"))}
    assert two <= {r["key"] for r in res.pareto}
    # hypervolume: normalised by the full model and the smallest subnet, reference point 1.1
    full, small = res.full_model, next(r for r in res.records if r["key"] == SPACE.smallest().key)
    ext = np.array([F[full["key"]], F[small["key"]]])
    lo, hi = ext.min(axis=0), ext.max(axis=0)
    norm = [(F[r["key"]] - lo) / (hi - lo) for r in res.pareto]
    inside = [p for p in norm if np.all(p < 1.1)]
    assert res.history[-1]["hypervolume"] == pytest.approx(_union_volume(inside, np.full(3, 1.1)), rel=1e-9)


def test_report_split_measured_fastest_first_as_far_as_the_pick_needs(tmp_path):
    """The full model and the front, fastest first, until one is within min(PICK_POINTS) on the report split."""
    from hwnas.search.picking import speed_of

    seen = []

    def report(c):
        seen.append(c.key)
        return {"accuracy": 0.5, "tasks": {"x": 0.5}}

    res = run_search(SPACE, SyntheticValidator(SPACE), cfg(evaluations=8), out=tmp_path / "o", report=report)
    fastest = min(res.pareto, key=lambda r: speed_of(r))
    # the full model first, then the fastest front subnet; it is within 0 points, so no slower one is needed
    assert seen == [SPACE.largest().key, fastest["key"]]
    skipped = [r for r in res.pareto if r["key"] not in seen]
    assert skipped and all(f"{fastest['key']} is faster" in r["report_skipped"] for r in skipped)
    assert fastest["report"]["accuracy"] == 0.5
    assert "[50.0]" in (tmp_path / "o" / "summary.md").read_text()
    # resuming a finished run measures no report twice
    seen.clear()
    run_search(SPACE, SyntheticValidator(SPACE), cfg(evaluations=8), out=tmp_path / "o", report=report, resume=True)
    assert seen == []


def test_pareto_front_and_hypervolume_by_hand():
    recs = [
        {"key": "a", "accuracy": 0.6, "tpot_ms": 20.0},  # full model
        {"key": "b", "accuracy": 0.3, "tpot_ms": 10.0},  # smallest
        {"key": "c", "accuracy": 0.5, "tpot_ms": 15.0},
        {"key": "d", "accuracy": 0.4, "tpot_ms": 16.0},  # dominated by c
    ]
    assert [r["key"] for r in pareto_front(recs, ("accuracy", "tpot_ms"))] == ["a", "b", "c"]
    ref = HypervolumeReference.from_extremes(("accuracy", "tpot_ms"), recs[:2])
    # normalised: a=(0,1), b=(1,0), c=(1/3, 0.5); reference (1.1, 1.1)
    hv_ab = 1.1 * 0.1 + 0.1 * 1.0
    assert ref.hypervolume(recs[:2]) == pytest.approx(hv_ab)
    hv_abc = hv_ab + (1.0 - 1 / 3) * (1.0 - 0.5)
    assert ref.hypervolume(recs) == pytest.approx(hv_abc)
    assert ref.to_dict()["reference_point"] == pytest.approx({"accuracy": 0.6 - 1.1 * 0.3, "tpot_ms": 10 + 1.1 * 10})
    # a constraint that leaves only b = (1, 0): a box of 0.1 x 1.1
    assert ref.hypervolume(recs, [Constraint("tpot_ms", 12.0, True)]) == pytest.approx(0.1 * 1.1)


def test_pick_fastest_within():
    recs = [
        {"key": "full", "accuracy": 0.500, "tpot_ms": 20.0, "full_model": True},
        {"key": "a", "accuracy": 0.492, "tpot_ms": 15.0},
        {"key": "b", "accuracy": 0.489, "tpot_ms": 12.0},
        {"key": "c", "accuracy": 0.470, "tpot_ms": 9.0},
    ]
    assert pick_fastest_within(recs, 1.0)["key"] == "a"
    assert pick_fastest_within(recs, 1.2)["key"] == "b"
    assert pick_fastest_within(recs, 5.0)["key"] == "c"
    assert pick_fastest_within(recs, 0.0)["key"] == "full"
    # pareto.json may lack the full model: vs_full carries the comparison
    front = [dict(r, vs_full={"accuracy_points": 100 * (r["accuracy"] - 0.5)}) for r in recs[1:]]
    assert pick_fastest_within(front, 1.2)["key"] == "b"
    assert pick_fastest_within(front, 0.5) is None
    with pytest.raises(SearchError, match="non-negative"):
        pick_fastest_within(recs, -1)


def test_pick_fastest_within_needs_the_report_split_too():
    """A subnet that looks within 1 point on the search split but not on the report split is the
    winner's curse of a noisy search: it is not picked; with nothing left, the full model is."""
    recs = [
        {"key": "full", "accuracy": 0.500, "tpot_ms": 20.0, "full_model": True, "report": {"accuracy": 0.520}},
        {"key": "a", "accuracy": 0.495, "tpot_ms": 15.0, "report": {"accuracy": 0.515}},
        {"key": "b", "accuracy": 0.505, "tpot_ms": 12.0, "report": {"accuracy": 0.470}},  # lucky on the search split
        {"key": "c", "accuracy": 0.495, "tpot_ms": 10.0},  # no report measured: not shown to qualify
    ]
    assert pick_fastest_within(recs, 1.0)["key"] == "a"
    # without any report split, the search split decides
    assert pick_fastest_within([dict(r, report=None) for r in recs], 1.0)["key"] == "c"
    assert pick_fastest_within(recs[:3], 1.0)["key"] == "a"
    assert pick_fastest_within(recs[:3], 5.0)["key"] == "b"
    assert pick_fastest_within([recs[0], recs[2]], 1.0)["key"] == "full"
    # the report reference can be given explicitly (pareto.json without the full model)
    assert pick_fastest_within(recs[1:3], 1.0, full_accuracy=0.5, full_report_accuracy=0.52)["key"] == "a"


@pytest.mark.parametrize("strategy", ["linas", "nsga2", "random"])
def test_pool_restricts_the_search_to_a_table(strategy):
    rng = np.random.default_rng(0)
    pool = {c.key: c for c in [SPACE.largest(), SPACE.smallest()] + [SPACE.sample(rng) for _ in range(30)]}
    v = Recording(SPACE)
    res = run_search(SPACE, v, cfg(strategy=strategy, evaluations=12), pool=list(pool.values()))
    assert len(v.keys) == len(set(v.keys)) == 12 and set(v.keys) <= set(pool)
    assert {r["key"] for r in res.records} <= set(pool)
    with pytest.raises(SearchError, match="largest and the smallest"):
        run_search(SPACE, v, cfg(strategy=strategy), pool=list(pool.values())[2:])


def test_final_remeasure_drives_speedups(tmp_path):
    asked = []

    def remeasure(cfgs):
        asked.append([c.key for c in cfgs])
        return {c.key: {"tpot_ms": 10.0 if c.key == SPACE.largest().key else 5.0} for c in cfgs}

    res = run_search(SPACE, SyntheticValidator(SPACE), cfg(evaluations=8), out=tmp_path / "o", remeasure=remeasure)
    assert len(asked) == 1 and set(asked[0]) == {r["key"] for r in res.pareto} | {SPACE.largest().key}
    others = [r for r in res.pareto if not r["full_model"]]
    assert others and all(r["vs_full"]["tpot_speedup"] == 2.0 for r in others)
    assert json.loads((tmp_path / "o" / "remeasured.json").read_text()).keys() == set(asked[0])
    run_search(SPACE, SyntheticValidator(SPACE), cfg(evaluations=8), out=tmp_path / "o", remeasure=remeasure, resume=True)
    assert len(asked) == 1  # cached
    assert "TPOT final" in (tmp_path / "o" / "summary.md").read_text()


def test_report_split_skips_what_the_search_split_rules_out_and_continues_past_failures(tmp_path):
    """A subnet whose search-split paired drop is far beyond every pick rule is not scored again;
    one that fails on the report split does not stop the scan."""
    from hwnas.search.picking import speed_of

    base = SyntheticValidator(SPACE)

    def validate(c):
        out = base(c)
        drop = 0.0 if c == SPACE.largest() else (50.0 if c.num_layers < 6 else 0.5)
        out["paired"] = {"points": -drop, "stderr": 0.5, "items": 200}
        return out

    seen = []

    def report(c):
        seen.append(c.key)
        return {"accuracy": 0.5, "paired": {"points": -3.0 if c != SPACE.largest() else 0.0, "stderr": 0.4, "items": 2000}}

    res = run_search(SPACE, validate, cfg(evaluations=8), out=tmp_path / "o", report=report)
    for r in res.pareto:
        if r["key"] == SPACE.largest().key:
            continue
        if r["num_layers"] < 6 if "num_layers" in r else len(r["subnet"]["layers"]) < 6:
            assert r["key"] not in seen and "screened out" in r["report_skipped"]
        else:
            assert r["key"] in seen  # 3 points down on the report split: the scan goes on
    assert res.pick_fastest_within(1.0)["key"] == SPACE.largest().key
    assert speed_of(res.full_model) is not None


def test_pick_uses_the_paired_difference_when_there_is_one():
    """A paired difference on the same items decides, not the difference of two means."""
    recs = [
        {"key": "full", "accuracy": 0.50, "tpot_ms": 20.0, "full_model": True,
         "report": {"accuracy": 0.52, "paired": {"points": 0.0, "stderr": 0.0, "items": 2000}}},
        # means look 3 points apart, but on the same items the subnet is 0.4 points down
        {"key": "a", "accuracy": 0.49, "tpot_ms": 10.0,
         "report": {"accuracy": 0.49, "paired": {"points": -0.4, "stderr": 0.3, "items": 2000}}},
    ]
    assert pick_fastest_within(recs, 1.0)["key"] == "a"
    assert pick_fastest_within(recs, 0.3)["key"] == "full"


def test_report_split_under_a_fidelity_metric_walks_from_the_full_model_and_stops_at_a_clear_failure():
    """Ranked by choice KL, the front is scored closest-to-the-full-model first; once one subnet fails
    every pick rule clearly, faster subnets whose KL is no better are skipped (and say why), while one
    with a better KL is still scored."""
    from hwnas.search.picking import evaluate_reports

    def rec(n, tpot, kl):
        c = SubnetConfig.uniform(n, 256)
        return {"key": c.key, "subnet": c.to_dict(), "tpot_ms": tpot, "choice_kl": kl,
                "paired": {"points": -0.5, "stderr": 2.0, "items": 200}}

    full = rec(10, 10.0, 0.0)
    front = [rec(5, 5.0, 2.0), rec(6, 6.0, 1.5), rec(7, 7.0, 0.6), rec(8, 8.0, 0.3), rec(9, 9.0, 0.1)]
    front[0]["choice_kl"] = 0.2          # off-trend: faster, yet a better KL than the failure -> still scored
    drops = {full["key"]: 0.0, front[4]["key"]: 0.3, front[3]["key"]: 1.5, front[2]["key"]: 4.0,
             front[1]["key"]: 0.0, front[0]["key"]: 6.0}
    seen = []

    def report(c):
        seen.append(c.key)
        return {"accuracy": 0.5, "paired": {"points": -drops[c.key], "stderr": 0.5, "items": 2000}}

    evaluate_reports(front, dict(full), report, known={}, metric="choice_kl")
    assert seen == [full["key"], front[4]["key"], front[3]["key"], front[2]["key"], front[0]["key"]]
    assert "report" not in front[1] and f"no better than that of {front[2]['key']}" in front[1]["report_skipped"]
    assert "4.00 ± 0.50 points below the full model" in front[1]["report_skipped"]
    # a drop beyond 2 points but not by two standard errors is no clear failure: the walk goes on
    seen.clear()
    for r in front:
        r.pop("report", None), r.pop("report_skipped", None)
    drops[front[2]["key"]] = 2.5
    evaluate_reports(front, dict(full), report, known={}, metric="choice_kl")
    assert len(seen) == 6
    # ranked by acc_norm, the order is fastest first as before
    seen.clear()
    for r in front:
        r.pop("report", None), r.pop("report_skipped", None)
    evaluate_reports(front, dict(full), report, known={}, metric="acc_norm")
    assert seen[:2] == [full["key"], front[0]["key"]]


def test_report_split_skips_records_slower_than_a_pick_and_shares_reports_of_equal_weights():
    """Ranked by choice KL: a record slower (re-measured) than one already within min(PICK_POINTS) is not
    scored, and a record that differs from a scored one only in runtime settings shares its torch report."""
    from hwnas.search.picking import evaluate_reports, pick_from_front

    base = SubnetConfig.uniform(8, 256)
    fmts = [("int4_asym_g64", "int4_asym_g64")] * 8

    def rec(c, tpot, kl, searched):   # searched: the search's (predicted) TPOT, which ordered the front
        return {"key": c.key, "subnet": c.to_dict(), "tpot_ms": searched, "remeasured": {"tpot_ms": tpot}, "accuracy": 0.5,
                "choice_kl": kl, "paired": {"points": -0.5, "stderr": 2.0, "items": 200}}

    full = rec(base, 20.0, 0.0, 30.0)
    precise = base.with_deploy(fmts, "int8", {"KV_CACHE_PRECISION": "f16"})
    fast_rt = base.with_deploy(fmts, "int8", {"KV_CACHE_PRECISION": "u8"})        # same weights as `precise`
    slower = base.with_deploy([("int8", "int8")] * 8, "int8", {"KV_CACHE_PRECISION": "u8"})
    faster = SubnetConfig.uniform(6, 256).with_deploy(fmts[:6], "int8", {"KV_CACHE_PRECISION": "u8"})
    front = [rec(faster, 10.0, 0.5, 10.0), rec(fast_rt, 15.0, 0.011, 17.0), rec(slower, 16.0, 0.005, 19.0),
             rec(precise, 15.5, 0.01, 18.0)]
    seen = []

    def report(c):
        seen.append(c.key)
        return {"accuracy": 0.5, "scored_with": "torch",
                "paired": {"points": -0.2 if c.num_layers == 8 else -3.0, "stderr": 0.3, "items": 1000}}

    evaluate_reports(front, dict(full), report, known={}, metric="choice_kl")
    # slower first (slowest as searched): within 0.5 point; precise (faster when re-measured) next; fast_rt has
    # its weights; faster is scored too
    assert seen == [full["key"], slower.key, precise.key, faster.key]
    assert front[1]["report"]["same_weights_as"] == precise.key and "report_skipped" not in front[1]
    assert front[1]["report"]["paired"] == front[3]["report"]["paired"]
    pick = pick_from_front(front, dict(full, report=None), 1.0)
    assert pick["key"] == fast_rt.key
    # with the cheap runtime variant scored first, the slower records are not needed at all
    for r in front:
        r.pop("report", None), r.pop("report_skipped", None)
    front[1]["choice_kl"], front[1]["tpot_ms"] = 0.001, 20.0
    seen.clear()
    evaluate_reports(front, dict(full), report, known={}, metric="choice_kl")
    assert seen == [full["key"], fast_rt.key, faster.key]
    assert all(f"{fast_rt.key} is faster" in front[k]["report_skipped"] for k in (2, 3))


def test_a_record_that_fails_the_generation_screen_is_not_scored_and_cannot_be_picked():
    """With a generation screen, a front record must pass it before its report split is scored: one that
    fails (here: the int4 weights) is skipped with the screen's summary and is no pick, the next record is
    scored and picked; records that differ only in runtime settings share one screen; a resumed walk reads
    the saved screens instead of screening again."""
    from hwnas.search.picking import evaluate_reports, pick_from_front

    base = SubnetConfig.uniform(8, 256)
    int4 = base.with_deploy([("int4_asym_g64", "int4_asym_g64")] * 8, "int8", {"KV_CACHE_PRECISION": "f16"})
    int4_u8 = base.with_deploy([("int4_asym_g64", "int4_asym_g64")] * 8, "int8", {"KV_CACHE_PRECISION": "u8"})
    int8 = base.with_deploy([("int8", "int8")] * 8, "int8", {"KV_CACHE_PRECISION": "f16"})

    def rec(c, tpot):
        return {"key": c.key, "subnet": c.to_dict(), "tpot_ms": tpot, "accuracy": 0.5,
                "paired": {"points": -0.2, "stderr": 0.5, "items": 200}}

    full = rec(SubnetConfig.uniform(10, 256), 20.0)
    front = [rec(int4_u8, 9.0), rec(int4, 10.0), rec(int8, 14.0)]
    scored, screened, saved = [], [], {}

    def report(c):
        scored.append(c.key)
        return {"accuracy": 0.5, "scored_with": "torch", "paired": {"points": -0.2, "stderr": 0.3, "items": 1000}}

    def screen(c):
        screened.append(c.key)
        ok = c.weight_formats[0][0] == "int8"
        return {"passed": ok, "summary": f"20 prompts, prefix {0.8 if ok else 0.18:.2f} ({'pass' if ok else 'fail'})"}

    evaluate_reports(front, dict(full), report, known={}, metric="acc_norm", screen=screen,
                     save_screen=lambda k, g: saved.__setitem__(k, g))
    assert scored == [full["key"], int8.key]                  # neither int4 record is scored
    assert screened == [int4_u8.key, int8.key]                # int4 and int4_u8 share weights: one screen
    for r in front[:2]:
        assert "report" not in r and r["generation_screen"]["passed"] is False
        assert "fails the generation check" in r["report_skipped"] and "prefix 0.18" in r["report_skipped"]
    assert front[2]["generation_screen"]["passed"] is True
    assert pick_from_front(front, dict(full, report={"accuracy": 0.5}), 1.0)["key"] == int8.key
    from hwnas.search.report import _front_notes
    notes = " ".join(_front_notes(front, "acc_norm"))
    assert "3 record(s) checked, 2 failed and were not scored" in notes
    assert set(saved) == {int4_u8.key, int4.key, int8.key}
    # resumed: the saved screens decide, nothing is screened again
    for r in front:
        r.pop("report", None), r.pop("report_skipped", None), r.pop("generation_screen", None)
    screened.clear()
    evaluate_reports(front, dict(full), report, known={}, metric="acc_norm", screen=screen, known_screens=saved)
    assert screened == [] and "report" not in front[0] and front[2]["report"]["paired"]["items"] == 1000


def test_ranked_by_kl_a_generation_failure_spares_the_faster_records_with_a_worse_kl():
    """Ranked by choice KL (closest to the full model first), once a record fails the generation screen,
    faster records whose KL is no better are neither screened nor scored, and say why; a faster record
    with a better KL is still screened."""
    from hwnas.search.picking import evaluate_reports

    def rec(n, tpot, kl):
        c = SubnetConfig.uniform(n, 256)
        return {"key": c.key, "subnet": c.to_dict(), "tpot_ms": tpot, "choice_kl": kl, "accuracy": 0.5,
                "paired": {"points": -0.5, "stderr": 2.0, "items": 200}}

    full = rec(10, 10.0, 0.0)
    front = [rec(5, 5.0, 2.0), rec(6, 6.0, 0.05), rec(7, 7.0, 0.6), rec(8, 8.0, 0.3), rec(9, 9.0, 0.1)]
    screened, scored = [], []

    def screen(c):
        screened.append(c.key)
        return {"passed": c.num_layers == 6, "summary": f"prefix for {c.num_layers} layers"}

    def report(c):
        scored.append(c.key)
        return {"accuracy": 0.5, "paired": {"points": -0.2, "stderr": 0.3, "items": 1000}}

    evaluate_reports(front, dict(full), report, known={}, metric="choice_kl", screen=screen)
    # slowest first: 9 layers fails the screen; 8, 7 and 5 layers have worse KLs; 6 layers has a better one
    assert screened == [front[4]["key"], front[1]["key"]] and scored == [full["key"], front[1]["key"]]
    for i in (0, 2, 3):
        assert "generation_screen" not in front[i]
        assert f"no better than that of {front[4]['key']} (0.1), which fails the generation check" in front[i]["report_skipped"]
    # ranked by an accuracy metric there is no KL to go by: every record is screened
    for r in front:
        r.pop("report", None), r.pop("report_skipped", None), r.pop("generation_screen", None)
    screened.clear()
    evaluate_reports(front, dict(full), report, known={}, metric="acc_norm", screen=screen)
    # fastest first: 5 layers fails, 6 layers passes and is within, so the slower ones are not needed
    assert screened == [front[0]["key"], front[1]["key"]] and "is faster" in front[2]["report_skipped"]
