"""Every supported family (LLaMA, Qwen2 tied and untied, Mistral) through the whole path on tiny random
configs: supernet slicing, extraction, reload, recovery, heal, INC int8 bundle with integer weights that
loads in openvino-genai and OVModelForCausalLM; logits checked against the sliced supernet."""
from __future__ import annotations

import json

import pytest
import torch

from hwnas.model.space import SubnetConfig
from tests.conftest import FAMILIES, make_tiny_model, make_tiny_tokenizer
from tests.conftest import TINY_TARGET_EXACT  # noqa: E402

CFG = SubnetConfig((0, 2, 3), (128, 64, 128))
OV_EXACT = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
TARGET = TINY_TARGET_EXACT
CLASS = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen2-untied": "Qwen2ForCausalLM",
         "mistral": "MistralForCausalLM"}
TIED = {"llama": True, "qwen2": True, "qwen2-untied": False, "mistral": False}


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


@pytest.fixture(scope="module", params=FAMILIES)
def family_dir(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param) / request.param
    make_tiny_model(request.param).save_pretrained(d)
    make_tiny_tokenizer().save_pretrained(d)
    return request.param, d


@pytest.fixture()
def ids():
    g = torch.Generator().manual_seed(1)
    return torch.randint(3, 300, (1, 24), generator=g)


def test_slice_extract_and_reload_match(family_dir, ids, tmp_path):
    from hwnas.model.loading import load_model
    from hwnas.model.supernet import load_supernet

    fam, d = family_dir
    loaded, sn = load_supernet(str(d))
    assert type(loaded.model).__name__ == CLASS[fam] and sn.arch.model_type == fam.split("-")[0]
    with sn.subnet(CFG) as m:
        ref = _logits(m, ids)
    full = _logits(sn.model, ids)
    assert (ref - full).abs().max() > 1e-3  # the subnet is a different function
    dense = sn.extract(CFG)
    assert type(dense).__name__ == CLASS[fam]
    torch.testing.assert_close(_logits(dense, ids), ref, rtol=0, atol=1e-5)
    out = sn.save_subnet(CFG, tmp_path / "sub", loaded.tokenizer)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == fam.split("-")[0] and cfg["num_hidden_layers"] == 3
    assert cfg["hwnas_mlp_widths"] == [128, 64, 128]
    if fam.startswith("qwen2"):  # kept layers 0, 2, 3 of [full, full, sliding, sliding]
        assert cfg["layer_types"] == ["full_attention", "sliding_attention", "sliding_attention"]
        assert cfg["max_window_layers"] == 1
        assert dense.model.layers[0].self_attn.q_proj.bias is not None
    assert cfg["tie_word_embeddings"] == TIED[fam]
    again = load_model(str(out))
    assert type(again.model).__name__ == CLASS[fam]
    torch.testing.assert_close(_logits(again.model, ids), ref, rtol=0, atol=1e-5)


def test_recovery_and_heal_run_on_the_family(family_dir, ids, tmp_path):
    from hwnas.model.recovery import make_recoverer
    from hwnas.model.supernet import load_supernet
    from hwnas.train.heal import HealConfig, heal, trainable_names

    fam, d = family_dir
    loaded, sn = load_supernet(str(d))
    with sn.subnet(CFG) as m:
        plain = _logits(m, ids)
    sn.recoverer = make_recoverer(sn, loaded.tokenizer)
    with sn.subnet(CFG) as m:
        recovered = _logits(m, ids)
    full = _logits(sn.model, ids)
    # recovery refits down_proj towards the full model: closer on held-out tokens
    assert (recovered - full).pow(2).mean() < (plain - full).pow(2).mean()
    dense = sn.extract(CFG)
    names = trainable_names(dense, "all")
    assert ("model.layers.0.self_attn.q_proj.bias" in names) == fam.startswith("qwen2")
    texts = [" ".join(f"word{(i * 7 + j) % 50} text {j}" for j in range(60)) for i in range(8)]
    res = heal(sn, loaded.tokenizer, CFG, tmp_path / "h",
               HealConfig(steps=2, seq_len=32, batch_size=2, eval_windows=0, checkpoint_every=0, warmup_steps=1),
               texts=texts, model_record={"sha256": "x"})
    assert res.steps_done == 2


@pytest.mark.parametrize("quant,head,atol", [("none", "f32", 1e-4), ("int8", "int8", 5e-2)])
def test_bundle_logits_match_sliced_supernet(family_dir, ids, tmp_path, quant, head, atol):
    import openvino_genai
    from optimum.intel import OVModelForCausalLM

    from hwnas.deploy.export import export_bundle
    from hwnas.deploy.quantize import make_recipe
    from hwnas.model.supernet import load_supernet

    fam, d = family_dir
    _, sn = load_supernet(str(d))
    with sn.subnet(CFG) as m:
        ref = _logits(m, ids)
    target = tmp_path / "tiny.toml"
    target.write_text(TARGET)
    res = export_bundle(str(d), tmp_path / "b", recipe=make_recipe(quant, head=head), subnet=CFG, target=str(target),
                        measure=False, generation_check=False, recovery=False)
    compressed = res.manifest.ir["compressed"]
    n_linear = 3 * 7 + (0 if TIED[fam] else 1) + 1  # 7 per layer, lm_head when untied, embeddings
    assert sum(compressed.values()) == (n_linear if quant == "int8" else 0)
    ov = OVModelForCausalLM.from_pretrained(str(res.path), ov_config=OV_EXACT)
    got = ov(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    err = (got - ref).abs().max().item()
    assert err < atol, err
    if quant == "int8":
        assert err > 1e-5  # integer weights really are in the IR
    pipe = openvino_genai.LLMPipeline(str(res.path), "CPU", **{k: v for k, v in OV_EXACT.items() if "KV" in k or "INF" in k})
    gc = openvino_genai.GenerationConfig()
    gc.max_new_tokens, gc.do_sample, gc.ignore_eos = 4, False, True
    out = pipe.generate(["Hello world"], gc)
    assert len(out.texts) == 1


def test_bf16_checkpoint_loads_bf16_and_exports_int8_from_the_16bit_trace(tmp_path, ids, monkeypatch):
    """A bf16 checkpoint stays bf16 (dtype auto) and its int8 bundle is traced with the 16-bit patch
    (ov_ext:: weight sites, bf16 constants read correctly); logits match the bf16 torch model.
    $HWNAS_PRECISION=fp32 (make test's first pass) would force float32, so the test unsets it."""
    monkeypatch.delenv("HWNAS_PRECISION", raising=False)
    from optimum.intel import OVModelForCausalLM

    from hwnas.deploy.export import export_bundle
    from hwnas.deploy.quantize import make_recipe
    from hwnas.model.loading import load_model

    d = tmp_path / "bf16"
    m = make_tiny_model("qwen2-untied").to(torch.bfloat16)
    m.config.dtype = "bfloat16"
    m.save_pretrained(d)
    make_tiny_tokenizer().save_pretrained(d)
    loaded = load_model(str(d))
    assert loaded.model.dtype == torch.bfloat16
    ref = _logits(loaded.model, ids).float()
    target = tmp_path / "tiny.toml"
    target.write_text(TARGET)
    res = export_bundle(str(d), tmp_path / "b", recipe=make_recipe("int8"), target=str(target), measure=False,
                        generation_check=False)
    assert res.manifest.ir["compressed"] == {"i8": 4 * 7 + 2} and res.manifest.ir["max_rel_error"] < 0.02
    ov = OVModelForCausalLM.from_pretrained(str(res.path), ov_config=OV_EXACT)
    got = ov(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert (got - ref).abs().max().item() < 5e-2
