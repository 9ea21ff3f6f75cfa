"""Heal (distillation of one subnet) on a tiny random LLaMA: it lowers the KL to the full model,
leaves the supernet untouched, resumes from its checkpoint, and is refused where it does not belong."""
from __future__ import annotations

import json

import pytest
import torch

from hwnas.accuracy.fidelity import TokenFidelity
from hwnas.model.space import SubnetConfig
from hwnas.model.supernet import Supernet
from hwnas.model.healed import RECORD_FILE, TENSORS_FILE, HealError, apply_heal, read_record
from hwnas.train.heal import CKPT_FILE, HealConfig, heal, trainable_names
from tests.conftest import make_tiny_llama, make_tiny_tokenizer

TEXTS = [" ".join(f"word{(i * 7 + j) % 50} and more text {j}" for j in range(60)) for i in range(40)]
CFG = SubnetConfig((0, 1, 3, 5), (64, 64, 128, 64))


@pytest.fixture()
def setup():
    torch.manual_seed(0)
    sn = Supernet(make_tiny_llama(layers=6))
    tok = make_tiny_tokenizer()
    held = tok(" ".join(f"word{(j * 3) % 50} text {j}" for j in range(200)))["input_ids"][:4 * 64]
    fid = TokenFidelity(torch.tensor(held).reshape(4, 64), precision="fp32")
    return sn, tok, fid


def _cfg(**kw):
    base = dict(steps=30, seq_len=64, batch_size=4, eval_windows=0, checkpoint_every=10, warmup_steps=2, lr=3e-3)
    return HealConfig(**{**base, **kw})


def test_heal_lowers_the_kl_to_the_full_model_and_leaves_the_supernet_alone(setup, tmp_path):
    sn, tok, fid = setup
    w0 = {n: p.detach().clone() for n, p in sn.model.named_parameters()}
    res = heal(sn, tok, CFG, tmp_path / "h", _cfg(), texts=TEXTS, fidelity=fid, model_record={"sha256": "abc"})
    assert res.steps_done == 30 and res.stopped_by == "steps"
    assert res.fidelity_after["kl"] < 0.8 * res.fidelity_before["kl"], (res.fidelity_before, res.fidelity_after)
    assert all(torch.equal(w0[n], p) for n, p in sn.model.named_parameters())
    rec = read_record(tmp_path / "h")
    assert rec["status"] == "done" and rec["subnet"] == CFG.to_dict() and rec["steps_done"] == 30
    assert (tmp_path / "h" / TENSORS_FILE).is_file() and not (tmp_path / "h" / CKPT_FILE).exists()
    log = [json.loads(x) for x in (tmp_path / "h" / "heal_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "kl" in e] == list(range(1, 31))
    # applying it to a fresh dense subnet reproduces the healed student's fidelity
    dense = sn.extract(CFG)
    info = apply_heal(dense, tmp_path / "h", subnet=CFG, model_sha256="abc")
    assert info["steps"] == 30
    again = fid.measure_model(sn, dense)
    assert again["kl"] == pytest.approx(res.fidelity_after["kl"], rel=1e-4)
    assert all(torch.equal(w0[n], p) for n, p in sn.model.named_parameters())


def test_cheap_mode_trains_only_norms_and_down_proj(setup):
    sn, _, _ = setup
    dense = sn.extract(CFG)
    cheap = trainable_names(dense, "cheap")
    assert cheap and all("layernorm" in n or "down_proj" in n or n == "model.norm.weight" for n in cheap)
    assert sum(".mlp.down_proj." in n for n in cheap) == len(CFG.layers)
    every = trainable_names(dense, "all")
    assert set(cheap) < set(every) and not any("embed_tokens" in n for n in every)


def test_resume_continues_from_the_checkpoint_to_the_same_result(setup, tmp_path, monkeypatch):
    sn, tok, fid = setup
    full = heal(sn, tok, CFG, tmp_path / "a", _cfg(steps=20), texts=TEXTS, fidelity=fid)

    import hwnas.train.heal as H

    real = H.kl_loss
    calls = {"n": 0}

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] > 13:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(H, "kl_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        heal(sn, tok, CFG, tmp_path / "b", _cfg(steps=20), texts=TEXTS, fidelity=fid)
    assert read_record(tmp_path / "b")["status"] == "running" and (tmp_path / "b" / CKPT_FILE).is_file()
    monkeypatch.setattr(H, "kl_loss", real)
    with pytest.raises(HealError, match="not empty"):
        heal(sn, tok, CFG, tmp_path / "b", _cfg(steps=20), texts=TEXTS, fidelity=fid)
    with pytest.raises(HealError, match="subnet"):
        heal(sn, tok, SubnetConfig((0, 1), (64, 64)), tmp_path / "b", _cfg(steps=20), texts=TEXTS, fidelity=fid,
             resume=True)
    resumed = heal(sn, tok, CFG, tmp_path / "b", _cfg(steps=20), texts=TEXTS, fidelity=fid, resume=True)
    assert resumed.steps_done == 20
    assert resumed.fidelity_after["kl"] == pytest.approx(full.fidelity_after["kl"], rel=1e-3)


def test_heal_is_refused_for_another_subnet_or_model(setup, tmp_path):
    sn, tok, fid = setup
    heal(sn, tok, CFG, tmp_path / "h", _cfg(steps=3), texts=TEXTS, fidelity=fid, model_record={"sha256": "abc"})
    other = SubnetConfig((0, 1, 3, 5), (64, 64, 64, 64))
    with pytest.raises(HealError, match="made for subnet"):
        apply_heal(sn.extract(other), tmp_path / "h", subnet=other, model_sha256="abc")
    with pytest.raises(HealError, match="made for model"):
        apply_heal(sn.extract(CFG), tmp_path / "h", subnet=CFG, model_sha256="def")
    with pytest.raises(HealError, match="full model needs no heal"):
        heal(sn, tok, sn.full_config(), tmp_path / "f", _cfg(steps=3), texts=TEXTS, fidelity=fid)
    with pytest.raises(HealError, match="train 'some'"):
        HealConfig(train="some")
    with pytest.raises(HealError, match="not a heal folder"):
        read_record(tmp_path)


def test_time_budget_fits_the_schedule(setup, tmp_path):
    sn, tok, fid = setup
    res = heal(sn, tok, CFG, tmp_path / "t", _cfg(steps=10_000, minutes=0.02), texts=TEXTS, fidelity=None)
    # 1.2 s of budget: a loaded host may finish fewer than the 3 steps the schedule is fitted after
    assert res.stopped_by in ("steps", "time") and 1 <= res.steps_done < 10_000
    assert res.total_steps < 10_000
    assert (tmp_path / "t" / RECORD_FILE).is_file()


@pytest.mark.parametrize("mode", ["cheap", "all"])
def test_bf16_student_keeps_frozen_tensors_as_loaded_and_still_heals(tmp_path, mode):
    """A bf16 model's student: frozen tensors bf16 and shared with the supernet (no float32 copy), trained
    tensors float32 with float32 gradients; a forward and backward run, and healing lowers the KL."""
    from hwnas.train.heal import make_student

    torch.manual_seed(0)
    sn = Supernet(make_tiny_llama(layers=6).to(torch.bfloat16))
    tok = make_tiny_tokenizer()
    held = tok(" ".join(f"word{(j * 3) % 50} text {j}" for j in range(200)))["input_ids"][:4 * 64]
    fid = TokenFidelity(torch.tensor(held).reshape(4, 64), precision="fp32")
    dense = sn.extract(CFG)
    params = make_student(dense, mode)
    for name, p in dense.named_parameters():
        want = torch.float32 if name in params else torch.bfloat16
        assert p.dtype == want and p.requires_grad == (name in params), name
    embed = dense.get_input_embeddings().weight
    assert embed.data_ptr() == sn.model.get_input_embeddings().weight.data_ptr()
    logits = dense(input_ids=torch.tensor(held[:64])[None], use_cache=False).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
    logits.float().pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and p.grad.abs().sum() > 0 for p in params.values())

    res = heal(sn, tok, CFG, tmp_path / "h", _cfg(train=mode), texts=TEXTS, fidelity=fid)
    assert res.fidelity_after["kl"] < 0.8 * res.fidelity_before["kl"], (res.fidelity_before, res.fidelity_after)
    entries = [json.loads(x) for x in (tmp_path / "h" / "heal_log.jsonl").read_text().splitlines()]
    log = [e["kl"] for e in entries if "kl" in e]
    assert sum(log[-5:]) < 0.7 * sum(log[:5])  # the training KL falls too (~0.5x over 30 steps)


def test_heal_frees_the_recoverers_caches_and_starts_from_the_recovered_subnet(setup, tmp_path):
    """The recoverer's calibration states are freed once the student is extracted; the heal still starts
    from the recovered down_proj, and the recoverer refits on its next use."""
    from hwnas.model.recovery import Recoverer, RecoveryConfig

    sn, tok, fid = setup
    sn.recoverer = Recoverer(sn, tok, TEXTS, RecoveryConfig(tokens=1024, window=64))
    recovered = {i: t.clone() for i, t in sn.recovered_down(CFG).items()}
    res = heal(sn, tok, CFG, tmp_path / "h", _cfg(steps=2, lr=1e-12), texts=TEXTS, fidelity=fid)
    assert sn.recoverer._teacher is None and not sn.recoverer._cache
    assert res.fidelity_after["kl"] == pytest.approx(res.fidelity_before["kl"], rel=1e-3)
    assert all(torch.allclose(sn.recovered_down(CFG)[i], t) for i, t in recovered.items())
    assert res.fidelity_before["kl"] == pytest.approx(fid.measure(sn, CFG)["kl"], rel=1e-4)  # the recovered subnet
