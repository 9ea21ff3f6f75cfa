"""Stateful OpenVINO IR export of dense subnets: layout, numerics against PyTorch, caching."""
import json

import numpy as np
import pytest
import torch

from hwnas.errors import OutputError
from hwnas.hardware.irexport import META_FILE, check_ir, export_ir, export_ir_cached, model_fingerprint
from hwnas.model.space import SearchSpace, SubnetConfig
from hwnas.model.supernet import Supernet
from tests.conftest import make_tiny_llama, make_tiny_tokenizer

# Non-uniform widths and a skipped layer (1): the hard case for export.
CFG = SubnetConfig((0, 2, 3), (96, 32, 128))
F32 = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"}


def tiny_subnet(cfg=CFG, seed=0):
    model = make_tiny_llama(seed=seed)
    sn = Supernet(model, space=SearchSpace(num_layers=4, full_width=128, widths=(32, 64, 96, 128), min_layers=1))
    return sn.extract(cfg)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    sub = tiny_subnet()
    out = export_ir(sub, tmp_path_factory.mktemp("ir") / "subnet", make_tiny_tokenizer())
    return sub, out


def torch_greedy(model, ids, steps):
    """Prefill + `steps` greedy decode steps with the KV cache; last-position logits of each call."""
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
        logits = [out.logits[:, -1].numpy()]
        past = out.past_key_values
        toks = []
        for _ in range(steps):
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
            toks.append(tok.numpy())
            out = model(input_ids=tok, past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits.append(out.logits[:, -1].numpy())
    return logits, toks


def ov_greedy(folder, ids, steps):
    import openvino as ov

    compiled = ov.Core().compile_model(str(folder / "openvino_model.xml"), "CPU", F32)
    req = compiled.create_infer_request()
    b, p = ids.shape
    beam = np.arange(b, dtype=np.int32)
    req.reset_state()
    req.infer({"input_ids": ids, "attention_mask": np.ones((b, p), np.int64),
               "position_ids": np.tile(np.arange(p), (b, 1)), "beam_idx": beam})
    logits = [req.get_tensor("logits").data[:, -1].copy()]
    toks = []
    for i in range(steps):
        tok = logits[-1].argmax(-1).reshape(b, 1).astype(np.int64)
        toks.append(tok)
        req.infer({"input_ids": tok, "attention_mask": np.ones((b, p + i + 1), np.int64),
                   "position_ids": np.full((b, 1), p + i), "beam_idx": beam})
        logits.append(req.get_tensor("logits").data[:, -1].copy())
    return logits, toks


def test_layout_matches_optimum_intel(exported):
    sub, out = exported
    names = {p.name for p in out.iterdir()}
    for f in ("openvino_model.xml", "openvino_model.bin", "config.json", "generation_config.json",
              "openvino_tokenizer.xml", "openvino_detokenizer.xml", "tokenizer.json", META_FILE):
        assert f in names, f
    assert not any(n.endswith(".partial") for n in names)
    meta = json.loads((out / META_FILE).read_text())
    assert meta["stateful"] is True
    assert meta["structure"]["mlp_widths"] == [96, 32, 128]
    assert meta["structure"]["num_layers"] == 3
    assert meta["versions"]["openvino"].startswith("2026")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 3 and cfg["hwnas_mlp_widths"] == [96, 32, 128]
    check_ir(out)  # stateful, with input_ids/attention_mask/position_ids/beam_idx


def test_logits_match_pytorch_for_prefill_and_decode(exported):
    sub, out = exported
    ids = torch.randint(3, 300, (2, 9), generator=torch.Generator().manual_seed(0))
    ref_logits, ref_toks = torch_greedy(sub, ids, steps=5)
    got_logits, got_toks = ov_greedy(out, ids.numpy(), steps=5)
    assert len(got_logits) == 6
    for step, (r, g) in enumerate(zip(ref_logits, got_logits)):
        np.testing.assert_allclose(g, r, atol=1e-4, rtol=1e-4, err_msg=f"step {step}")
    for r, g in zip(ref_toks, got_toks):
        np.testing.assert_array_equal(g, r)


def test_openvino_genai_runs_the_folder(exported):
    import openvino_genai as og

    sub, out = exported
    pipe = og.LLMPipeline(str(out), "CPU", ATTENTION_BACKEND="SDPA", INFERENCE_PRECISION_HINT="f32",
                          KV_CACHE_PRECISION="f32")
    cfg = og.GenerationConfig()
    cfg.max_new_tokens = 4
    cfg.min_new_tokens = 4
    enc = pipe.get_tokenizer().encode("hello")
    ids = np.array(enc.input_ids.data, dtype=np.int64)
    assert ids.tolist() == [make_tiny_tokenizer()("hello")["input_ids"]]  # the IR's tokenizer is the model's
    res = pipe.generate(enc, cfg)
    assert res.perf_metrics.get_num_generated_tokens() == 4
    # the tokens openvino-genai generates are PyTorch's greedy tokens for the same subnet
    _, ref = torch_greedy(sub, torch.from_numpy(ids), steps=4)
    assert list(res.tokens[0]) == [int(t[0, 0]) for t in ref]


def test_export_refuses_a_non_empty_folder(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(OutputError, match="not empty"):
        export_ir(tiny_subnet(), out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_cache_exports_each_model_once(tmp_path, monkeypatch):
    import hwnas.hardware.irexport as irx

    calls = []
    real = irx._export_into

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(irx, "_export_into", counting)
    sub = tiny_subnet(SubnetConfig((0, 1), (64, 128)))
    p1, fresh1 = export_ir_cached(sub, cache_dir=tmp_path)
    p2, fresh2 = export_ir_cached(sub, cache_dir=tmp_path)
    assert (fresh1, fresh2) == (True, False) and p1 == p2 and len(calls) == 1
    check_ir(p1)
    # same structure, other weights: another entry; an explicit key is used as given
    other = tiny_subnet(SubnetConfig((0, 1), (64, 128)), seed=1)
    assert model_fingerprint(other) != model_fingerprint(sub)
    assert model_fingerprint(other, weights=False) == model_fingerprint(sub, weights=False)
    p3, fresh3 = export_ir_cached(other, cache_dir=tmp_path)
    assert fresh3 and p3 != p1
    p4, fresh4 = export_ir_cached(other, key="my-model-l2", cache_dir=tmp_path)
    assert fresh4 and p4.name.startswith("my-model-l2-")
    assert not list(tmp_path.glob("*.partial"))
    assert len(calls) == 3
    # with key + build, the model is built only on a miss (extraction is GBs for a 7B model)
    builds = []

    def build():
        builds.append(1)
        return other

    p5, fresh5 = export_ir_cached(key="my-model-l2", build=build, cache_dir=tmp_path)
    assert (p5, fresh5, builds) == (p4, False, [])
    p6, fresh6 = export_ir_cached(key="my-model-l2b", build=build, cache_dir=tmp_path)
    assert fresh6 and builds == [1] and len(calls) == 4
    with pytest.raises(ValueError, match="a key and a build function"):
        export_ir_cached(build=build, cache_dir=tmp_path)


@pytest.mark.slow
def test_default_model_subnet_matches_pytorch():
    """The real default model: a 15-layer subnet with mixed widths and skipped layers, exported and
    compared with PyTorch for the prefill and two decode steps (f32 precision and KV cache)."""
    from hwnas.model.loading import load_model

    loaded = load_model("default")
    sn = Supernet.from_loaded(loaded, order=False)
    layers = tuple(range(0, 30, 2))
    widths = tuple(sn.space.widths[i % len(sn.space.widths)] for i in range(len(layers)))
    sub = sn.extract(SubnetConfig(layers, widths))
    ir, _ = export_ir_cached(sub)
    ids = torch.tensor([loaded.tokenizer("The capital of France is Paris, and the capital of Italy is")["input_ids"]])
    ref_logits, ref_toks = torch_greedy(sub, ids, steps=2)
    got_logits, got_toks = ov_greedy(ir, ids.numpy(), steps=2)
    for r, g in zip(ref_logits, got_logits):
        assert np.abs(g - r).max() < 2e-3
    for r, g in zip(ref_toks, got_toks):
        np.testing.assert_array_equal(g, r)
