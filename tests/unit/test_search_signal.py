"""What ranks the search's accuracy objective (--metric): the validator's signal for each metric, and a
search under a fidelity metric ranks by it while accuracy, the pick rule and the files keep acc_norm."""
from __future__ import annotations

import json
import math

import pytest
import torch

from hwnas.accuracy.evaluate import TaskSuite
from hwnas.accuracy.fidelity import TokenFidelity
from hwnas.errors import SearchError
from hwnas.model.space import SearchSpace, SubnetConfig
from hwnas.model.supernet import Supernet
from hwnas.search.config import SearchConfig
from hwnas.search.loop import run_search
from hwnas.search.objectives import SEARCH_METRICS, fidelity_signal
from hwnas.search.pareto import pareto_front
from hwnas.search.synthetic import SyntheticValidator
from hwnas.search.validation import SubnetValidator
from tests.conftest import make_tiny_llama, make_tiny_tokenizer


class _Latency:
    """A profile's latency model stand-in: no OpenVINO, so only accuracy and the signal cost anything."""

    def predict(self, cfg):
        return {"tpot_ms": 1.0 + cfg.num_layers, "ttft_ms": 10.0, "throughput_tok_s": 100.0}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = tmp_path_factory.mktemp("task") / "tinyqa.jsonl"
    with open(path, "w") as f:
        for i in range(12):
            f.write(json.dumps({"id": str(i), "question": f"what is {i} plus one?",
                                "choices": [str(i + 1), str(i + 7), "blue"], "answer": 0}) + "\n")
    sn = Supernet(make_tiny_llama(layers=4))
    suite = TaskSuite(make_tiny_tokenizer(), str(path), split="all", limit=12, data_dir=path.parent)
    return sn, suite


FULL = None
DAMAGED = SubnetConfig((0, 3), (64, 64))


def _validator(setup, metric, **kw):
    sn, suite = setup
    return SubnetValidator(sn, suite, model_id="tiny", metric=metric, latency_model=_Latency(), **kw)


def test_accuracy_metrics_rank_by_the_accuracy_itself(setup):
    for metric in ("acc_norm", "acc"):
        r = _validator(setup, metric)(DAMAGED)
        assert r["signal_metric"] == metric and r["accuracy_metric"] == metric
        assert r["signal"] == r["accuracy"] == r["tasks"]["tinyqa"]


def test_choice_kl_ranks_by_the_choice_kl_and_keeps_acc_norm(setup):
    sn, _ = setup
    base = _validator(setup, "acc_norm")(DAMAGED)
    v = _validator(setup, "choice_kl")
    r = v(DAMAGED)
    full = v(sn.full_config())
    assert r["signal_metric"] == "choice_kl"
    # accuracy, its metric and the paired comparison are those of acc_norm
    assert r["accuracy_metric"] == "acc_norm" and r["accuracy"] == base["accuracy"] and r["paired"] == base["paired"]
    assert r["choice_kl"] > 0 and r["signal"] == pytest.approx(-math.log1p(r["choice_kl"]), abs=1e-6) and r["signal"] < 0
    assert full["choice_kl"] == 0 and full["signal"] == 0.0


def test_token_kl_ranks_by_the_next_token_kl_with_one_reference_pass(setup, monkeypatch):
    sn, _ = setup
    fid = TokenFidelity(torch.randint(3, 290, (3, 24)), precision="fp32", topk=16)
    passes = []
    real = fid.reference
    monkeypatch.setattr(fid, "reference", lambda s: (passes.append(fid._ref is None), real(s))[1])
    v = _validator(setup, "token_kl", fidelity=fid)
    full = v(sn.full_config())
    mild = v(SubnetConfig((0, 1, 2), (128,) * 3))
    heavy = v(DAMAGED)
    assert full["signal"] == pytest.approx(0, abs=1e-6) and full["token_fidelity"]["top1_agreement"] == 1.0
    assert heavy["signal"] < mild["signal"] < 0 and heavy["token_fidelity"]["kl"] > mild["token_fidelity"]["kl"]
    assert heavy["signal"] == pytest.approx(fidelity_signal(heavy["token_fidelity"]["kl"]), abs=1e-6)
    assert heavy["accuracy_metric"] == "acc_norm" and heavy["token_fidelity"]["tokens"] == 3 * 23
    assert passes.count(True) == 1  # the full model's reference was computed once, then kept


def test_bad_metric_and_missing_text_are_refused(setup):
    with pytest.raises(SearchError, match="unknown --metric 'kl'; accepted: acc_norm, acc, choice_kl, token_kl"):
        _validator(setup, "kl")
    with pytest.raises(SearchError, match="token_kl needs the text"):
        _validator(setup, "token_kl")
    with pytest.raises(SearchError, match="unknown --metric"):
        SearchConfig(metric="top1")
    assert SEARCH_METRICS == ("acc_norm", "acc", "choice_kl", "token_kl")


SPACE = SearchSpace(num_layers=8, full_width=256, widths=(64, 128, 192, 256), min_layers=4, always_keep=(0, 7))


def _flat_accuracy(cfg):
    """Accuracy that cannot tell subnets apart (a near-chance task), and a signal that can."""
    r = SyntheticValidator(SPACE)(cfg)
    return {**r, "signal": round(-r["tpot_ms"] / 100 + r["accuracy"], 6), "accuracy": 0.5, "signal_metric": "choice_kl"}


def test_a_fidelity_metric_ranks_the_search_by_the_signal(tmp_path):
    ident = {"model_sha256": "x", "metric": "choice_kl"}
    res = run_search(SPACE, _flat_accuracy, SearchConfig(evaluations=10, population=4, metric="choice_kl"),
                     out=tmp_path / "s", identity=ident)
    assert res.config.ranked == ("signal", "tpot_ms")
    keys = {r["key"] for r in res.pareto}
    assert keys == {r["key"] for r in pareto_front(res.records, ("signal", "tpot_ms"))}
    # ranked by the flat accuracy, only the fastest subnet would be on the front
    assert len(pareto_front(res.records, ("accuracy", "tpot_ms"))) == 1 < len(keys)
    pred = [r["predicted"] for r in res.records if r.get("predicted")]
    assert pred and all("signal" in p and "accuracy" not in p for p in pred)  # the predictors model the signal
    doc = json.loads((tmp_path / "s" / "config.json").read_text())
    assert doc["search"]["metric"] == "choice_kl" and doc["identity"]["metric"] == "choice_kl"
    summary = (tmp_path / "s" / "summary.md").read_text()
    assert "accuracy objective ranked by: choice_kl" in summary
    assert all(p["signal_metric"] == "choice_kl" and p["accuracy"] == 0.5
               for p in json.loads((tmp_path / "s" / "pareto.json").read_text()))
    # resuming with another metric is refused before anything is touched
    before = {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()}
    with pytest.raises(SearchError, match="different metric"):
        run_search(SPACE, _flat_accuracy, SearchConfig(evaluations=10, population=4), out=tmp_path / "s",
                   resume=True, identity={"model_sha256": "x", "metric": "acc_norm"})
    assert {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()} == before


def test_the_full_model_is_scored_once_then_read_from_its_item_cache(setup, monkeypatch):
    """The report split's full-model row comes from the per-item cache (same figures as scoring it)."""
    sn, suite = setup
    direct = suite.evaluate(sn, keep_items=True)
    v = _validator(setup, "choice_kl")
    first = v.accuracy(sn.full_config(), suite)
    for name in ("evaluate", "items"):
        monkeypatch.setattr(type(suite), name, lambda *a, **k: (_ for _ in ()).throw(AssertionError("scored again")))
    again = v.accuracy(None, suite)
    for r in (first, again):
        assert r["tasks"]["tinyqa"] == pytest.approx(direct["tasks"]["tinyqa"]["acc_norm"], abs=1e-6)
        assert r["paired"]["points"] == 0.0 and r["choice_kl"] == 0.0 and r["items"] == 12


def test_generation_screen_decodes_the_subnet_against_the_full_models_reference(setup):
    """`generation_screen` decodes the supernet slice (all prompts in one batch) against the reference it
    is given, made once: the full model passes against its own greedy tokens; against another model's
    tokens the same slice fails with the agreement figures in its summary."""
    from hwnas.accuracy import genquality as gq

    sn, suite = setup
    tok = make_tiny_tokenizer()
    prompts = [gq.Prompt("c1", "continuation", "hello world, this is"), gq.Prompt("c2", "continuation", "one two")]
    made = []

    def own():
        made.append(1)
        sn.reset()
        return gq.reference_generations(sn.model, tok, prompts, max_new_tokens=8)

    v = _validator(setup, "acc_norm", generation_reference=own)
    full = sn.full_config()
    g = v.generation_screen(full)
    assert g["passed"] and "prefix 1.00" in g["summary"] and g["scored_with"] == "torch"
    v.generation_screen(DAMAGED)
    assert made == [1] and v.seconds["generation_screen"] > 0 and "generation_reference" in v.seconds
    other = make_tiny_llama(layers=4, tie=False, seed=3)   # another model's greedy tokens as the reference
    v2 = _validator(setup, "acc_norm", generation_reference=lambda: gq.reference_generations(other, tok, prompts, max_new_tokens=8))
    bad = v2.generation_screen(full)
    assert not bad["passed"] and "FAIL: matching prefix" in bad["summary"] and bad["report"]["aggregate"]["prefix"] < 0.3
    assert sn.active is None   # the supernet is back to the full model
