"""Token-level fidelity: zero for the full model, exact when k covers the vocabulary, a lower bound otherwise."""
from __future__ import annotations

import pytest
import torch

from hwnas.accuracy.fidelity import TokenFidelity
from hwnas.model.space import SubnetConfig
from hwnas.model.supernet import Supernet
from tests.conftest import make_tiny_llama


@pytest.fixture()
def sn():
    return Supernet(make_tiny_llama(layers=6))


def _exact_kl(sn, cfg, windows):
    with torch.no_grad():
        with sn.subnet(None) as lm:
            p = torch.log_softmax(lm(windows).logits[:, :-1].float(), -1)
        with sn.subnet(cfg) as lm:
            q = torch.log_softmax(lm(windows).logits[:, :-1].float(), -1)
    return float((p.exp() * (p - q)).sum(-1).mean()), float((p.argmax(-1) == q.argmax(-1)).double().mean())


def test_full_model_is_perfectly_faithful(sn):
    fid = TokenFidelity(torch.randint(3, 290, (4, 24)), precision="fp32", topk=16)
    r = fid.measure(sn, None)
    assert r["kl"] == pytest.approx(0, abs=1e-6) and r["top1_agreement"] == 1.0 and r["tokens"] == 4 * 23


def test_kl_is_exact_with_the_whole_vocabulary_and_a_lower_bound_with_top_k(sn):
    windows = torch.randint(3, 290, (3, 20))
    cfg = SubnetConfig((0, 2, 5), (64, 128, 64))
    exact, agree = _exact_kl(sn, cfg, windows)
    full_k = TokenFidelity(windows, precision="fp32", topk=300).measure(sn, cfg)
    assert full_k["kl"] == pytest.approx(exact, rel=1e-3) and full_k["top1_agreement"] == pytest.approx(agree)
    small_k = TokenFidelity(windows, precision="fp32", topk=8).measure(sn, cfg)
    assert 0 < small_k["kl"] <= exact + 1e-6


def test_more_damage_more_divergence(sn):
    fid = TokenFidelity(torch.randint(3, 290, (4, 24)), precision="fp32", topk=32)
    mild = fid.measure(sn, SubnetConfig((0, 1, 2, 3, 4), (128,) * 5))["kl"]
    heavy = fid.measure(sn, SubnetConfig((0, 5), (64, 64)))["kl"]
    assert heavy > mild > 0
