"""Training-free recovery on a tiny random LLaMA: it moves the subnet towards the full model,
applies wherever a subnet is made concrete, and leaves the full model and the supernet alone."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hwnas.model.recovery import Recoverer, RecoveryConfig
from hwnas.model.space import SubnetConfig
from hwnas.model.supernet import Supernet
from tests.conftest import make_tiny_llama, make_tiny_tokenizer

TEXTS = [" ".join(f"word{(i * 7 + j) % 50} and more text {j}" for j in range(40)) for i in range(30)]
CFG = SubnetConfig((0, 1, 3, 5), (64, 64, 128, 64))


@pytest.fixture()
def setup():
    torch.manual_seed(0)
    sn = Supernet(make_tiny_llama(layers=6))
    tok = make_tiny_tokenizer()
    rc = Recoverer(sn, tok, TEXTS, RecoveryConfig(tokens=2048, window=64, ridge=1e-3))
    return sn, tok, rc


def _kl_to_full(sn, cfg, ids):
    with torch.no_grad():
        with sn.subnet(None) as lm:
            p = torch.log_softmax(lm(ids).logits.float(), -1)
        with sn.subnet(cfg) as lm:
            q = torch.log_softmax(lm(ids).logits.float(), -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


def test_recovery_brings_the_subnet_closer_to_the_full_model(setup):
    sn, tok, rc = setup
    held_out = torch.tensor(tok(" ".join(f"word{(j * 3) % 50} text {j}" for j in range(30)))["input_ids"])[None, :96]
    before = _kl_to_full(sn, CFG, held_out)
    sn.recoverer = rc
    after = _kl_to_full(sn, CFG, held_out)
    rec = rc.fit(CFG)
    assert set(rec.down) == set(CFG.layers)
    assert all(rec.residual_after[i] <= rec.residual_before[i] + 1e-9 for i in CFG.layers)
    assert after < 0.8 * before, (before, after)


def test_full_model_and_supernet_weights_are_untouched(setup):
    sn, tok, rc = setup
    ids = torch.randint(3, 250, (1, 20))
    with torch.no_grad(), sn.subnet(None) as lm:
        ref = lm(ids).logits.clone()
    w0 = [layer.mlp.down_proj.weight.detach().clone() for layer in sn._all_layers]
    sn.recoverer = rc
    with torch.no_grad(), sn.subnet(CFG):
        pass
    with torch.no_grad(), sn.subnet(None) as lm:
        assert torch.equal(lm(ids).logits, ref)
    assert all(torch.equal(a, layer.mlp.down_proj.weight) for a, layer in zip(w0, sn._all_layers))
    assert all(layer.mlp.down_override is None for layer in sn._all_layers)
    assert sn.recovered_down(sn.full_config()) == {}


def test_extracted_subnet_computes_what_the_recovered_slice_computes(setup):
    sn, tok, rc = setup
    sn.recoverer = rc
    ids = torch.randint(3, 250, (2, 24))
    with torch.no_grad():
        with sn.subnet(CFG) as lm:
            sliced = lm(ids).logits
        dense = sn.extract(CFG)
        out = dense(ids).logits
    assert torch.allclose(sliced, out, atol=1e-4)
    # without recovery the extraction differs: the refit weights are what ships
    sn.recoverer = None
    with torch.no_grad():
        plain = sn.extract(CFG)(ids).logits
    assert not torch.allclose(plain, out, atol=1e-3)


def test_recovery_is_cached_and_fingerprinted(setup):
    sn, tok, rc = setup
    a = rc.fit(CFG)
    assert rc.fit(CFG) is a
    other = Recoverer(sn, tok, TEXTS[:-1], RecoveryConfig(tokens=2048, window=64, ridge=1e-3))
    assert other.fingerprint() != rc.fingerprint()
    sn.recoverer = rc
    rec = sn.recovery_record(CFG)
    assert rec["layers_refit"] == 4 and rec["calibration_fingerprint"] == rc.fingerprint()
    assert np.isfinite(rec["final_relative_error_after"])


def test_bad_recovery_settings_are_one_line_errors():
    from hwnas.errors import InvalidSubnetError

    with pytest.raises(InvalidSubnetError, match="ridge must be > 0"):
        RecoveryConfig(ridge=0)
    with pytest.raises(InvalidSubnetError, match="at least one window"):
        RecoveryConfig(tokens=10, window=64)
