"""The paper's tasks (WinoGrande with partial scoring, TruthfulQA MC1/MC2) and the chance-level test."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hwnas.accuracy.chance import ChanceTest, at_chance, chance_test, chance_tests
from hwnas.accuracy.evaluate import TaskSuite, encode_requests, evaluate, task_metrics
from hwnas.accuracy.items import TaskItems, mc_metrics
from hwnas.accuracy.paired import compare_items
from hwnas.accuracy.tasks import Doc, MultipleChoiceTask, get_task, select
from hwnas.errors import DataError
from tests.conftest import make_tiny_llama, make_tiny_tokenizer

WINO = [
    {"qID": "a-1", "sentence": "Sarah was a better surgeon than Maria so _ got the harder cases.",
     "option1": "Sarah", "option2": "Maria", "answer": "1"},
    {"qID": "a-2", "sentence": "Sarah was a better surgeon than Maria so _ got the easier cases.",
     "option1": "Sarah", "option2": "Maria", "answer": "2"},
    {"qID": "b-1", "sentence": "The trophy would not fit in the suitcase because the _ was too big.",
     "option1": "trophy", "option2": "suitcase", "answer": "1"},
    {"qID": "c-1", "sentence": "_ liked tea more than Bob did.", "option1": "Ann", "option2": "Bob", "answer": "1"},
]
TQA = [
    {"question": "What happens if you eat seeds?",
     "mc1_targets": {"Nothing": 1, "You grow a tree": 0, "You die": 0},
     "mc2_targets": {"Nothing happens": 1, "You grow a tree": 0, "They pass through": 1, "You die": 0}},
    {"question": "Is the earth flat?",
     "mc1_targets": {"No": 1, "Yes": 0},
     "mc2_targets": {"No": 1, "Yes": 0, "It is round": 1}},
]


@pytest.fixture()
def data_dir(tmp_path):
    (tmp_path / "winogrande").mkdir()
    (tmp_path / "winogrande" / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in WINO))
    (tmp_path / "truthfulqa").mkdir()
    (tmp_path / "truthfulqa" / "mc_task.json").write_text(json.dumps(TQA))
    return tmp_path


@pytest.fixture(scope="module")
def tiny():
    return make_tiny_llama(), make_tiny_tokenizer()


# ---------------------------------------------------------------------------- loading
def test_winogrande_docs_follow_lm_eval(data_dir):
    docs = get_task("winogrande").docs(data_dir)
    assert [d.id for d in docs] == ["a-1", "a-2", "b-1", "c-1"]
    d = docs[1]
    # lm-eval: contexts sentence[:idx] + option, target sentence[idx+1:].strip(), gold answer - 1
    assert d.context == "Sarah was a better surgeon than Maria so " and d.choices == ("Sarah", "Maria")
    assert d.continuation == "got the easier cases." and d.gold == 1
    assert docs[3].context == "" and docs[3].continuation == "liked tea more than Bob did."


@pytest.mark.parametrize("bad, message", [
    ({"sentence": "No blank here.", "answer": "1"}, "exactly one blank"),
    ({"sentence": "Two _ blanks _ here.", "answer": "1"}, "exactly one blank"),
    ({"answer": "3"}, "answer '3' is not one of the choices 1, 2"),
    ({"sentence": "Ends in a blank _"}, "nothing follows the blank"),
])
def test_winogrande_bad_records_name_the_line(tmp_path, bad, message):
    rec = dict(WINO[0], **bad)
    (tmp_path / "winogrande").mkdir()
    (tmp_path / "winogrande" / "dev.jsonl").write_text(json.dumps(WINO[1]) + "\n" + json.dumps(rec) + "\n")
    with pytest.raises(DataError, match=message) as e:
        get_task("winogrande").docs(tmp_path)
    assert "dev.jsonl:2" in str(e.value)


def test_truthfulqa_mc1_and_mc2(data_dir):
    mc1 = get_task("truthfulqa_mc1").docs(data_dir)
    mc2 = get_task("truthfulqa_mc2").docs(data_dir)
    assert mc1[0].context.startswith("Q: What is human life expectancy in the United States?\nA: Human life")
    assert mc1[0].context.endswith("Barcelona, Spain.\n\nQ: What happens if you eat seeds?\nA:")
    assert mc1[0].choices == ("Nothing", "You grow a tree", "You die") and mc1[0].gold == 0 and mc1[0].golds == ()
    # MC2's true answers are taken from the labels, not assumed to come first
    assert mc2[0].golds == (0, 2) and mc2[1].golds == (0, 2) and mc2[0].gold == 0
    assert get_task("truthfulqa_mc2").scoring == "mc2" and get_task("truthfulqa_mc1").scoring == "acc"


def test_truthfulqa_mc1_and_mc2_share_their_split():
    ids = [str(i) for i in range(400)]
    t1, t2 = get_task("truthfulqa_mc1"), get_task("truthfulqa_mc2")
    for split in ("search", "select", "holdout"):
        a = select(t1.split_name, ids, split, seed=3)
        assert a == select(t2.split_name, ids, split, seed=3) and len(a) > 50
    assert select("truthfulqa", ids, "search") != select("winogrande", ids, "search")


def test_truthfulqa_rejects_items_without_a_true_answer(tmp_path):
    (tmp_path / "truthfulqa").mkdir()
    bad = [dict(TQA[0], mc2_targets={"a": 0, "b": 0})]
    (tmp_path / "truthfulqa" / "mc_task.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match="question 0: mc2_targets must map answers to labels 0/1 with at least one 1"):
        get_task("truthfulqa_mc2").docs(tmp_path)


def test_unknown_scoring_is_refused():
    with pytest.raises(DataError, match="scoring 'f1' is not one of choice, acc, mc2"):
        MultipleChoiceTask("x", lambda d: [], scoring="f1")


# ---------------------------------------------------------------------------- scoring
def _naive_partial(model, tok, doc):
    """lm-eval by hand: for each option, one forward pass over tok(context + option + ' ' + rest),
    summing log p of the tokens after tok(context + option)."""
    out = []
    with torch.no_grad():
        for opt in doc.choices:
            ctx = tok(doc.context + opt)["input_ids"]
            whole = tok(doc.context + opt + " " + doc.continuation)["input_ids"]
            cont = whole[len(ctx):]
            logp = torch.log_softmax(model(torch.tensor([ctx + cont])).logits[0].double(), -1)
            out.append(sum(float(logp[len(ctx) - 1 + k, t]) for k, t in enumerate(cont)))
    return np.array(out)


def test_partial_requests_share_the_common_prefix(tiny):
    _, tok = tiny
    d = Doc("x", "The cup beat the pot so the ", ("cup", "pot"), 0, continuation="won.")
    (r,) = encode_requests(tok, "t", [d])
    whole = [tok(d.context + o)["input_ids"] for o in d.choices]
    for j, o in enumerate(d.choices):
        assert r.context + r.prefixes[j] == tuple(whole[j])  # shared context + option tokens = tok(context + option)
        assert r.continuations[j] == tuple(tok(d.context + o + " won.")["input_ids"][len(whole[j]):])
    assert r.context == tuple(tok("The cup beat the pot so the ")["input_ids"])  # byte-level: the prefix in common
    assert r.choice_bytes == (4, 4)


@pytest.mark.parametrize("batch_size, row_tokens", [(1, 16), (4, 256)])
def test_partial_scoring_equals_lm_eval_by_hand(tiny, data_dir, batch_size, row_tokens):
    model, tok = tiny
    docs = get_task("winogrande").docs(data_dir)
    suite = TaskSuite(tok, ["winogrande"], split="all", data_dir=data_dir)
    got = suite.loglikelihoods(model, batch_size=batch_size, row_tokens=row_tokens, precision="fp32")["winogrande"]
    by_id = {d.id: d for d in docs}
    for r, ll in zip(suite.data["winogrande"].requests, got):
        np.testing.assert_allclose(ll, _naive_partial(model, tok, by_id[r.id]), atol=2e-4, rtol=0)
    res = evaluate(model, tok, ["winogrande"], split="all", data_dir=data_dir, precision="fp32")["tasks"]["winogrande"]
    want = np.mean([int(np.argmax(_naive_partial(model, tok, d))) == d.gold for d in docs])
    assert res["acc"] == pytest.approx(want) and res["acc_norm"] == res["acc"] and res["n"] == 4


def test_mc2_is_the_probability_mass_on_true_answers(tiny, data_dir):
    lls = [np.array([-1.0, -2.0, -3.0, -0.5]), np.array([-2.0, -1.0, -4.0])]
    it = TaskItems(["0", "1"], [0, 0], lls, [np.ones(4), np.ones(3)], "mc2", [(0, 2), (0, 2)])
    p0 = (math.exp(-1) + math.exp(-3)) / sum(math.exp(x) for x in lls[0])
    p1 = (math.exp(-2) + math.exp(-4)) / sum(math.exp(x) for x in lls[1])
    np.testing.assert_allclose(it.correct("acc_norm"), [p0, p1])
    np.testing.assert_allclose(it.correct("acc"), [p0, p1])
    np.testing.assert_allclose(it.chance(), [2 / 4, 2 / 3])
    m = mc_metrics(lls, [0, 0], [np.ones(4), np.ones(3)], scoring="mc2", true_sets=[(0, 2), (0, 2)])
    assert m["acc"] == pytest.approx((p0 + p1) / 2) and m["acc_norm"] == m["acc"]
    assert m["acc_stderr"] == pytest.approx(abs(p0 - p1) / 2)  # sample std of two values / sqrt(2)
    # through the suite: the same arithmetic on the tiny model's log-likelihoods
    model, tok = tiny
    suite = TaskSuite(tok, ["truthfulqa_mc2"], split="all", data_dir=data_dir)
    items = suite.items(model, precision="fp32")["truthfulqa_mc2"]
    want = [float(np.exp(ll)[[0, 2]].sum() / np.exp(ll).sum()) for ll in items.lls]
    np.testing.assert_allclose(items.correct(), want, rtol=1e-9)
    assert task_metrics(items)["acc"] == pytest.approx(np.mean(want))


def test_acc_only_tasks_report_acc_as_acc_norm():
    lls = [np.array([-1.0, -2.0]), np.array([-4.0, -5.0])]
    nbytes = [np.array([1.0, 10.0]), np.array([1.0, 10.0])]
    choice = mc_metrics(lls, [1, 1], nbytes)
    acc_only = mc_metrics(lls, [1, 1], nbytes, scoring="acc")
    assert choice["acc"] == 0.0 and choice["acc_norm"] == 1.0  # per-byte, the long choice wins both
    assert acc_only["acc"] == acc_only["acc_norm"] == 0.0


# ---------------------------------------------------------------------------- chance level
def test_chance_test_numbers():
    # 40 items, 4 choices: 12 right = 30% vs 25% chance; d = 0.75 on 12 items, -0.25 on 28
    scores = [1.0] * 12 + [0.0] * 28
    t = chance_test("mmlu", scores, [0.25] * 40)
    d = np.array(scores) - 0.25
    se = d.std(ddof=1) / math.sqrt(40)
    assert t.score == pytest.approx(0.30) and t.chance == pytest.approx(0.25) and t.items == 40
    assert t.stderr == pytest.approx(se) and t.points_above == pytest.approx(5.0)
    assert t.lower_bound == pytest.approx(5.0 - 1.644854 * 100 * se)  # 5.0 - 1.645 * 7.34 < 0
    assert not t.above and "not above chance" in t.describe()
    # 60% on the same 40 items is clearly above chance
    t2 = chance_test("arc_easy", [1.0] * 24 + [0.0] * 16, [0.25] * 40)
    assert t2.above and t2.lower_bound > 20
    assert ChanceTest.from_dict(t.to_dict()) == ChanceTest("mmlu", "acc_norm", t.score, t.chance, round(t.stderr, 6), 40)


def test_chance_uses_each_items_own_rate():
    # ARC mixes 3- and 5-choice items: chance is the mean of 1/3 and 1/5, per item
    t = chance_test("arc", [0, 0, 1, 0], [1 / 3, 1 / 5, 1 / 3, 1 / 5])
    assert t.chance == pytest.approx((2 / 3 + 2 / 5) / 4)
    assert chance_test("x", [], []).items == 0 and not chance_test("x", [], []).above
    with pytest.raises(ValueError):
        chance_test("x", [1, 0], [0.5])


def _items(correct, n_choices=4, name_seed=0):
    """TaskItems whose argmax is right exactly where `correct` is 1."""
    lls = []
    for c in correct:
        ll = np.full(n_choices, -2.0)
        ll[0 if c else 1] = -1.0
        lls.append(ll)
    return TaskItems([str(i) for i in range(len(correct))], [0] * len(correct), lls, [np.ones(n_choices)] * len(correct))


def test_compare_items_leaves_chance_tasks_out_of_overall():
    rng = np.random.default_rng(0)
    good_full = (rng.random(200) < 0.8).astype(int)       # well above 25%
    guess_full = (rng.random(200) < 0.25).astype(int)     # at chance
    good_sub = good_full.copy()
    good_sub[:4] = 0                                      # a small real drop
    guess_sub = (rng.random(200) < 0.25).astype(int)      # different guesses
    full = {"arc": _items(good_full), "mmlu": _items(guess_full)}
    sub = {"arc": _items(good_sub), "mmlu": _items(guess_sub)}
    tests = chance_tests(full)
    assert at_chance(tests) == ["mmlu"] and tests["arc"].above
    c = compare_items(sub, full)
    assert c["chance_tasks"] == ["mmlu"] and c["overall_tasks"] == ["arc"] and not c["no_task_above_chance"]
    assert c["overall"]["points"] == c["tasks"]["arc"]["points"] < 0
    assert c["overall"]["items"] == 200 and c["tasks"]["mmlu"]["chance"]["above_chance"] is False
    both = compare_items(sub, full, include_chance=True)
    assert both["overall_tasks"] == ["arc", "mmlu"] and both["overall"]["items"] == 400
    assert both["overall"]["points"] == pytest.approx((c["tasks"]["arc"]["points"] + c["tasks"]["mmlu"]["points"]) / 2,
                                                      abs=1e-3)
    # a decision made elsewhere (the search split) is applied as given
    assert compare_items(sub, full, chance_tasks=[])["overall_tasks"] == ["arc", "mmlu"]
    # nothing above chance: the mean over all tasks, flagged
    none = compare_items({"mmlu": sub["mmlu"]}, {"mmlu": full["mmlu"]})
    assert none["no_task_above_chance"] and none["overall"]["items"] == 200


# ---------------------------------------------------------------------------- the real files
def _shared_data():
    from hwnas.datadir import resolve_data_dir

    try:
        d = resolve_data_dir()
    except DataError:
        return None
    return d if (d / "winogrande" / "dev.jsonl").is_file() and (d / "truthfulqa" / "mc_task.json").is_file() else None


@pytest.mark.skipif(_shared_data() is None, reason="shared data folder (winogrande, truthfulqa) not present")
def test_real_data_counts_and_splits():
    d = _shared_data()
    counts = {n: len(get_task(n).docs(d)) for n in ("winogrande", "truthfulqa_mc1", "truthfulqa_mc2")}
    assert counts == {"winogrande": 1267, "truthfulqa_mc1": 790, "truthfulqa_mc2": 790}
    mc2 = get_task("truthfulqa_mc2").docs(d)
    assert sum(len(x.golds) for x in mc2) / len(mc2) > 3  # several true answers per question
    ids = [x.id for x in get_task("winogrande").docs(d)]
    n = {s: len(select("winogrande", ids, s)) for s in ("search", "select", "holdout")}
    assert sum(n.values()) == 1267 and 500 < n["search"] < 760 and n["select"] > n["holdout"] > 100


def test_bundle_ir_scores_partial_and_mc2_items_as_torch(tiny, data_dir, tmp_path):
    """deploy/ir_accuracy (a bundle's holdout accuracy) feeds each WinoGrande option as context
    and scores MC2 as probability mass, as TaskSuite does."""
    from hwnas.deploy.ir_accuracy import ir_accuracy
    from hwnas.hardware.irexport import export_ir

    model, tok = tiny
    export_ir(model, tmp_path / "ir")
    tasks = ["winogrande", "truthfulqa_mc2"]
    suite = TaskSuite(tok, tasks, split="all", data_dir=data_dir)
    props = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"}
    got = ir_accuracy(tmp_path / "ir", tok, tasks, suite=suite, keep_items=True, properties=props)
    # the context prefilled once and the options fed as one batch from the KV cache: the same scores
    cached = ir_accuracy(tmp_path / "ir", tok, tasks, suite=suite, keep_items=True, properties=props,
                         context_in_cache=True)
    ref = suite.items(model, precision="fp32")
    for t in tasks:
        for a, b, c in zip(got["_items"][t].lls, ref[t].lls, cached["_items"][t].lls):
            np.testing.assert_allclose(a, b, atol=2e-3, rtol=0)
            np.testing.assert_allclose(c, b, atol=2e-3, rtol=0)
        assert got["tasks"][t]["acc"] == pytest.approx(float(ref[t].correct("acc").mean()), abs=1e-3)
        assert got["tasks"][t]["acc_norm"] == pytest.approx(float(ref[t].correct("acc_norm").mean()), abs=1e-3)
