"""Scoring arithmetic on a tiny random LLaMA: the packed, shared-context path against plain forward passes."""
import math

import numpy as np
import pytest
import torch

from hwnas.accuracy.evaluate import TaskSuite, encode_requests, evaluate, mc_metrics
from hwnas.accuracy.tasks import Doc, MultipleChoiceTask, PerplexityTask
from hwnas.errors import InvalidSubnetError
from hwnas.model.space import SubnetConfig
from hwnas.model.supernet import Supernet
from tests.conftest import make_tiny_llama, make_tiny_tokenizer


def _toy_docs(n=24, seed=0):
    rng = np.random.default_rng(seed)

    def words(k):
        return " ".join("".join(rng.choice(list("abcdefgh"), size=rng.integers(1, 6))) for _ in range(k))

    docs = []
    for i in range(n):
        k = int(rng.integers(2, 5))
        choices = tuple(words(int(rng.integers(1, 4))) for _ in range(k))
        if i % 5 == 0:
            choices = ("y",) + choices[1:]  # a one-token choice (only predicted, never fed)
        docs.append(Doc(str(i), f"Question: {words(int(rng.integers(1, 12)))}\nAnswer:", choices, int(rng.integers(0, k))))
    return docs


def _toy_task(docs, name="toy"):
    return MultipleChoiceTask(name, lambda d: docs)


def _naive_loglikelihoods(model, tok, docs):
    """Hand computation: one full forward pass per (context + choice), summed log-softmax of the choice tokens."""
    out = []
    with torch.no_grad():
        for d in docs:
            ctx = tok(d.context)["input_ids"]
            row = []
            for c in d.choices:
                whole = tok(d.context + " " + c)["input_ids"]
                cont = whole[len(ctx):]
                logp = torch.log_softmax(model(torch.tensor([ctx + cont])).logits[0].double(), -1)
                row.append(sum(float(logp[len(ctx) - 1 + k, t]) for k, t in enumerate(cont)))
            out.append(np.array(row))
    return out


@pytest.fixture(scope="module")
def tiny():
    return make_tiny_llama(), make_tiny_tokenizer()


@pytest.fixture(scope="module")
def toy_reference(tiny):
    """The toy items and their hand-computed log-likelihoods by item id (computed once)."""
    model, tok = tiny
    docs = _toy_docs(16)
    return docs, dict(zip([d.id for d in docs], _naive_loglikelihoods(model, tok, docs)))


@pytest.mark.parametrize("batch_size, row_tokens", [(1, 16), (3, 64), (2, 512)])
def test_packed_scoring_equals_plain_forward(tiny, toy_reference, tmp_path, batch_size, row_tokens):
    model, tok = tiny
    docs, ref = toy_reference
    suite = TaskSuite(tok, [_toy_task(docs)], split="all", data_dir=tmp_path)
    got = suite.loglikelihoods(model, batch_size=batch_size, row_tokens=row_tokens, precision="fp32")["toy"]
    want = [ref[q.id] for q in suite.data["toy"].requests]
    assert len(got) == len(docs)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=2e-4, rtol=0)


def test_context_is_truncated_only_when_the_longest_choice_does_not_fit(tmp_path):
    """Choices are branches after a shared context: the position limit applies to context + the
    longest choice (as lm-eval truncates each request), not to the item's total token count."""
    model, tok = make_tiny_llama(), make_tiny_tokenizer()
    limit = 80
    model.config.max_position_embeddings = limit
    ctx, choices = "Question: " + "ab " * 10 + "\nAnswer:", tuple("choice number %d xy" % i for i in range(4))
    fits = Doc("fits", ctx, choices, 0)  # 48 context tokens + 18 fed per choice: 120 in all, 66 per branch
    over = Doc("over", "Question: " + "ab " * 20 + "\nAnswer:", choices, 1)  # 78 + 18 per branch
    suite = TaskSuite(tok, [_toy_task([fits, over])], split="all", data_dir=tmp_path)
    got = dict(zip([r.id for r in suite.data["toy"].requests], suite.loglikelihoods(model, precision="fp32")["toy"]))
    with torch.no_grad():
        for d in (fits, over):
            g = got[d.id]
            ctx_ids = tok(d.context)["input_ids"]
            for c, val in zip(d.choices, g):
                cont = tok(d.context + " " + c)["input_ids"][len(ctx_ids):]
                keep = min(len(ctx_ids), limit - (len(cont) - 1))  # lm-eval: the last `limit` fed tokens
                ids = (ctx_ids + cont)[len(ctx_ids) - keep:]
                logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
                want = sum(float(logp[keep - 1 + k, t]) for k, t in enumerate(cont))
                assert val == pytest.approx(want, abs=2e-4), (d.id, c)
    n_ctx = [len(tok(d.context)["input_ids"]) for d in (fits, over)]
    longest = max(len(tok(fits.context + " " + c)["input_ids"]) - n_ctx[0] for c in choices) - 1
    assert n_ctx[0] + longest <= limit < n_ctx[0] + 4 * longest  # 'fits' is not cut, though its total exceeds the limit
    assert n_ctx[1] + longest > limit  # 'over' is


def test_metrics_follow_the_loglikelihoods(tiny, toy_reference, tmp_path):
    model, tok = tiny
    docs, ref = toy_reference
    res = evaluate(model, tok, [_toy_task(docs)], split="all", data_dir=tmp_path, precision="fp32")
    lls = [ref[d.id] for d in docs]
    acc = np.mean([np.argmax(ll) == d.gold for ll, d in zip(lls, docs)])
    accn = np.mean([np.argmax(ll / np.array([len(c.encode()) for c in d.choices])) == d.gold for ll, d in zip(lls, docs)])
    r = res["tasks"]["toy"]
    assert r["n"] == len(docs) and r["acc"] == pytest.approx(acc) and r["acc_norm"] == pytest.approx(accn)
    assert res["items"] == len(docs) and res["items_per_second"] > 0 and res["precision"] == "fp32"


def test_mc_metrics_hand_computed():
    lls = [np.array([-1.0, -2.0]), np.array([-6.0, -4.0, -5.0]), np.array([-3.0, -9.0])]
    nbytes = [np.array([1.0, 4.0]), np.array([6.0, 2.0, 10.0]), np.array([1.0, 10.0])]
    gold = [0, 2, 1]
    m = mc_metrics(lls, gold, nbytes)
    # acc: argmax -> 0, 1, 0 -> right, wrong, wrong; acc_norm: -1/1 vs -0.5 -> 1; -1,-2,-0.5 -> 2; -3 vs -0.9 -> 1
    assert m["acc"] == pytest.approx(1 / 3) and m["acc_norm"] == pytest.approx(2 / 3) and m["n"] == 3
    assert m["acc_stderr"] == pytest.approx(math.sqrt((1 / 3) * (2 / 3) * 3 / 2 / 3))  # sample std / sqrt(n)
    assert m["acc_norm_stderr"] == pytest.approx(m["acc_stderr"])


def test_lm_eval_context_continuation_split(tiny):
    _, tok = tiny
    docs = [Doc("a", "Question: x\nAnswer:", ("yes", "no way"), 0), Doc("b", "Trailing space ", ("end",), 0)]
    reqs = encode_requests(tok, "t", docs)
    assert reqs[0].context == tuple(tok("Question: x\nAnswer:")["input_ids"])
    assert reqs[0].continuations == (tuple(tok(" yes")["input_ids"]), tuple(tok(" no way")["input_ids"]))
    assert reqs[0].choice_bytes == (3, 6)
    # trailing spaces of the context move to the continuation (as lm-eval does)
    assert reqs[1].context == tuple(tok("Trailing space")["input_ids"])
    assert reqs[1].continuations == (tuple(tok("  end")["input_ids"]),)


def test_perplexity_equals_plain_loss(tiny, tmp_path):
    model, tok = tiny
    text = "the cat sat on the mat and looked at the dog. " * 30
    (tmp_path / "t.txt").write_text(text)
    task = PerplexityTask("toytext", "t.txt")
    res = evaluate(model, tok, [task], split="all", data_dir=tmp_path, window=64, batch_size=3, precision="fp32")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    nll, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(ids), 64):
            w = ids[s:s + 64]
            if len(w) < 2:
                continue
            out = model(torch.tensor([w]), labels=torch.tensor([w]))
            nll += float(out.loss) * (len(w) - 1)
            count += len(w) - 1
    r = res["tasks"]["toytext"]
    assert r["tokens"] == count and r["windows"] == math.ceil(len(ids) / 64)
    assert r["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-4)
    limited = evaluate(model, tok, [task], split="all", limit=2, data_dir=tmp_path, window=64, precision="fp32")
    assert limited["tasks"]["toytext"]["windows"] == 2


def test_subnet_through_supernet_equals_extracted_model(tmp_path):
    tok = make_tiny_tokenizer()
    sn = Supernet(make_tiny_llama(layers=4))
    cfg = SubnetConfig((0, 2, 3), (128, 64, 96)) if 96 in sn.space.widths else SubnetConfig((0, 2, 3), (128, 64, 64))
    docs = _toy_docs(12, seed=1)
    suite = TaskSuite(tok, [_toy_task(docs)], split="all", data_dir=tmp_path)
    via_supernet = suite.loglikelihoods(sn, subnet=cfg, precision="fp32")["toy"]
    assert len(sn.model.model.layers) == 4 and sn.active is None  # reset afterwards
    dense = sn.extract(cfg)
    extracted = suite.loglikelihoods(dense, precision="fp32")["toy"]
    full = suite.loglikelihoods(sn, precision="fp32")["toy"]
    for a, b in zip(via_supernet, extracted):
        np.testing.assert_allclose(a, b, atol=2e-4)
    assert max(float(np.abs(a - b).max()) for a, b in zip(via_supernet, full)) > 1e-3  # the subnet really differs
    res = suite.evaluate(sn, subnet=cfg.to_dict(), precision="fp32")  # a dict works too
    assert res["tasks"]["toy"]["n"] == 12


def test_subnet_needs_a_supernet(tiny, tmp_path):
    model, tok = tiny
    with pytest.raises(InvalidSubnetError, match="needs a Supernet"):
        evaluate(model, tok, [_toy_task(_toy_docs(3))], subnet=SubnetConfig((0,), (128,)), split="all", data_dir=tmp_path)


def test_bf16_autocast_stays_close(tiny, tmp_path):
    model, tok = tiny
    suite = TaskSuite(tok, [_toy_task(_toy_docs(12))], split="all", data_dir=tmp_path)
    a = suite.loglikelihoods(model, precision="fp32")["toy"]
    b = suite.loglikelihoods(model, precision="bf16")["toy"]
    diff = max(float(np.abs(x - y).max()) for x, y in zip(a, b))
    assert 0 < diff < 0.1
    assert model.model.embed_tokens.weight.dtype == torch.float32  # weights untouched


def test_split_and_limit_reach_the_suite(tiny, tmp_path):
    _, tok = tiny
    docs = _toy_docs(40)
    task = _toy_task(docs)
    s = TaskSuite(tok, [task], split="search", data_dir=tmp_path)
    r = TaskSuite(tok, [task], split="report", data_dir=tmp_path)
    ids_s = {q.id for q in s.data["toy"].requests}
    ids_r = {q.id for q in r.data["toy"].requests}
    assert not ids_s & ids_r and len(ids_s | ids_r) == 40
    lim = TaskSuite(tok, [task], split="search", limit=5, data_dir=tmp_path)
    assert [q.id for q in lim.data["toy"].requests] == [q.id for q in s.data["toy"].requests][:5]
