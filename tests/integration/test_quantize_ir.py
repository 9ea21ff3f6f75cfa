"""INC-quantized tiny LLaMA -> OpenVINO IR with integer weight constants, numerically checked.

Tolerance (stated): with f32 inference, f32 KV cache and dynamic activation quantization off,
the IR's logits match the INC-quantized PyTorch model within 2e-3 absolute (logits here are
~0.7 at most; measured ~3e-4) and give the same greedy token at every position. With the CPU
plugin's defaults (dynamic int8 activation quantization for compressed layers) the difference
is ~1e-2, which is why `EXACT` is pinned.

One float IR is exported per module and each recipe swaps its own integer weights into a fresh
read of it: only the replaced weights differ between the float and the quantized model.
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from tests.conftest import make_tiny_llama, make_tiny_tokenizer

EXACT = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
ATOL = 2e-3


def _nonuniform_model():
    """4 layers, MLP widths 128/96/64/128: a dense subnet like Supernet.extract returns."""
    from hwnas.model.dense import narrow_mlps

    m = make_tiny_llama(layers=4, mlp=128, seed=1)
    full = copy.deepcopy(m)
    narrow_mlps(m, [128, 96, 64, 128])
    import torch

    with torch.no_grad():  # keep trained-looking weights: slice the full ones
        for lf, ln in zip(full.model.layers, m.model.layers):
            w = ln.mlp.gate_proj.out_features
            ln.mlp.gate_proj.weight.copy_(lf.mlp.gate_proj.weight[:w])
            ln.mlp.up_proj.weight.copy_(lf.mlp.up_proj.weight[:w])
            ln.mlp.down_proj.weight.copy_(lf.mlp.down_proj.weight[:, :w])
    return m.eval()


@pytest.fixture(scope="module")
def float_ir(tmp_path_factory):
    from hwnas.hardware.irexport import export_ir

    model = _nonuniform_model()
    d = tmp_path_factory.mktemp("ir") / "float"
    export_ir(model, d)
    return model, d


@pytest.fixture(scope="module")
def calib_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "light", "model", "token", "cloud"]
    p = tmp_path_factory.mktemp("calib") / "calib.jsonl"
    with open(p, "w") as f:
        for _ in range(12):
            f.write(json.dumps({"text": " ".join(rng.choice(words, size=40))}) + "\n")
    return p


def _ir_logits(model_xml_dir, ids):
    import openvino as ov

    compiled = ov.Core().compile_model(str(model_xml_dir / "openvino_model.xml"), "CPU", EXACT)
    req = compiled.create_infer_request()
    req.reset_state()
    t = ids.shape[1]
    res = req.infer({"input_ids": ids, "attention_mask": np.ones((1, t), np.int64),
                     "position_ids": np.arange(t, dtype=np.int64)[None], "beam_idx": np.zeros(1, np.int32)})
    return res[compiled.output("logits")].copy(), compiled


def _quantize_into_ir(float_ir, recipe, tmp_path, calibration=None):
    import openvino as ov

    from hwnas.hardware.ov_compress import compress_ir
    from hwnas.deploy.quantize import materialize, quantize_model

    model, ir_dir = float_ir
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    res = quantize_model(model, recipe, calibration)
    if res.float_model:  # RTN ran layer by layer on copies: the caller's model is untouched, and
        # INC run on the whole model at once gives the model its forward is compared with below
        import torch
        from neural_compressor.torch.quantization import convert, prepare

        from hwnas.deploy.quantize import _inc_config

        assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
        with torch.no_grad():
            inc_model = convert(prepare(copy.deepcopy(model), _inc_config(res.recipe, str(tmp_path), model)))
    else:
        inc_model = copy.deepcopy(res.model)
    mat = materialize(res)
    ov_model = ov.Core().read_model(str(ir_dir / "openvino_model.xml"))
    summary = compress_ir(ov_model, res.weights, head_f16=res.head_f16)
    out = tmp_path / "q"
    out.mkdir()
    ov.save_model(ov_model, str(out / "openvino_model.xml"), compress_to_fp16=False)
    return res, inc_model, mat, summary, out


RECIPES = [
    # name, kwargs, expected decoder element type
    ("int8", dict(sym=True), "i8"),
    ("int8", dict(sym=False), "u8"),
    ("int4", dict(sym=True, group_size=32), "i4"),
    ("int4", dict(sym=False, group_size=32), "u4"),
]


@pytest.mark.parametrize("name,kw,etype", RECIPES, ids=["int8-sym", "int8-asym", "int4-sym", "int4-asym"])
def test_ir_matches_inc_torch(float_ir, tmp_path, name, kw, etype):
    import torch

    from hwnas.hardware.ov_compress import runtime_weight_types, weight_element_types
    from hwnas.deploy.quantize import make_recipe

    res, inc_model, mat, summary, out = _quantize_into_ir(float_ir, make_recipe(name, head="f32", **kw), tmp_path)
    import openvino as ov

    types = weight_element_types(ov.Core().read_model(str(out / "openvino_model.xml")))
    decoder = {k: v for k, v in types.items() if ".layers." in k}
    assert len(decoder) == 4 * 7 and set(decoder.values()) == {etype}
    assert types["lm_head"] == "f32" and types["model.embed_tokens"] == "f32"
    assert summary.to_dict()["max_rel_error"] < 0.2  # the float IR vs quantized weights: quantization noise only

    ids = np.random.default_rng(0).integers(3, 300, size=(1, 24)).astype(np.int64)
    lo, compiled = _ir_logits(out, ids)
    with torch.no_grad():
        l_inc = inc_model(torch.from_numpy(ids)).logits.numpy()
        l_mat = mat(torch.from_numpy(ids)).logits.numpy()
    np.testing.assert_allclose(lo, l_mat, atol=ATOL, rtol=0)
    assert (lo.argmax(-1) == l_mat.argmax(-1)).all()
    if (name, kw.get("sym")) == ("int8", False):
        # INC's own WeightOnlyLinear forward (recover()) overflows int8 for asymmetric codes:
        # the IR follows the codes, not INC's broken float weights.
        assert np.abs(l_inc - l_mat).max() > 50 * ATOL
    else:
        np.testing.assert_allclose(lo, l_inc, atol=ATOL, rtol=0)
    # The CPU plugin runs the decoder's linears as compressed FullyConnected layers.
    rt = runtime_weight_types(compiled)
    assert rt.get(f"FullyConnected:{etype}", 0) == 28


def test_int8_head_and_gptq_with_calibration(float_ir, tmp_path, calib_file):
    import torch

    from hwnas.hardware.ov_compress import weight_element_types
    from hwnas.deploy.quantize import load_calibration, make_recipe

    tok = make_tiny_tokenizer()
    calib = load_calibration(tok, calib_file, n_samples=6, seq_len=32, seed=0)
    again = load_calibration(tok, calib_file, n_samples=6, seq_len=32, seed=0)
    other = load_calibration(tok, calib_file, n_samples=6, seq_len=32, seed=1)
    assert calib.info.sha256 == again.info.sha256 != other.info.sha256
    assert calib.info.n_samples == 6 and all(x.shape[1] <= 32 for x in calib.input_ids)

    res, inc_model, mat, summary, out = _quantize_into_ir(
        float_ir, make_recipe("gptq-int4", group_size=32, sym=False, head="int8"), tmp_path, calibration=calib)
    assert res.recipe.calibration == calib.info and res.recipe.group_size == 32
    import openvino as ov

    types = weight_element_types(ov.Core().read_model(str(out / "openvino_model.xml")))
    assert types["model.embed_tokens"] == "i8" and types["lm_head"] == "i8"  # tied: one int8 constant
    assert {v for k, v in types.items() if ".layers." in k} == {"u4"}
    ids = np.random.default_rng(1).integers(3, 300, size=(1, 20)).astype(np.int64)
    lo, _ = _ir_logits(out, ids)
    with torch.no_grad():
        l_mat = mat(torch.from_numpy(ids)).logits.numpy()
    np.testing.assert_allclose(lo, l_mat, atol=ATOL, rtol=0)


def test_gptq_without_calibration_and_bad_group_size(float_ir):
    from hwnas.deploy.quantize import make_recipe, quantize_model
    from hwnas.errors import ExportError

    model, _ = float_ir
    with pytest.raises(ExportError, match="needs calibration data"):
        quantize_model(model, make_recipe("gptq-int4", group_size=32))
    with pytest.raises(ExportError) as e:
        quantize_model(model, make_recipe("int4", group_size=64))  # down_proj of layer 1 is 96 wide
    assert "96" in str(e.value) and "accepted for this model: -1, 16, 32" in str(e.value)


def test_compress_refuses_mismatched_weights(float_ir):
    import openvino as ov

    from hwnas.hardware.ov_compress import compress_ir
    from hwnas.deploy.quantize import make_recipe, quantize_model
    from hwnas.errors import ExportError

    model, ir_dir = float_ir
    res = quantize_model(model, make_recipe("int8", head="f32"))
    w = dict(res.weights)
    a, b = "model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"
    w[a], w[b] = w[b], w[a]  # same shape, wrong layer
    with pytest.raises(ExportError, match="does not match its quantized weights"):
        compress_ir(ov.Core().read_model(str(ir_dir / "openvino_model.xml")), w)
    w = dict(res.weights)
    w["model.layers.9.mlp.up_proj"] = w[a]
    with pytest.raises(ExportError, match="not found in the IR"):
        compress_ir(ov.Core().read_model(str(ir_dir / "openvino_model.xml")), w)


def test_awq_folds_scales_and_ir_matches(tmp_path, calib_file):
    """AWQ folds its scales into the RMSNorm / up_proj weights, so the IR is exported from the
    materialized model (not the float one) and must still match it."""
    import openvino as ov
    import torch

    from hwnas.hardware.ov_compress import compress_ir, weight_element_types
    from hwnas.deploy.quantize import load_calibration, make_recipe, materialize, quantize_model
    from hwnas.hardware.irexport import export_ir

    model = _nonuniform_model()
    calib = load_calibration(make_tiny_tokenizer(), calib_file, n_samples=2, seq_len=16)
    res = quantize_model(model, make_recipe("awq-int4", group_size=32, head="f32"), calib)
    mat = materialize(res)
    norm0 = model.model.layers[0].input_layernorm.weight
    assert not torch.equal(mat.model.layers[0].input_layernorm.weight, norm0)  # not a silent RTN
    export_ir(mat, tmp_path / "f")
    om = ov.Core().read_model(str(tmp_path / "f" / "openvino_model.xml"))
    compress_ir(om, res.weights)
    (tmp_path / "q").mkdir()
    ov.save_model(om, str(tmp_path / "q" / "openvino_model.xml"), compress_to_fp16=False)
    types = weight_element_types(ov.Core().read_model(str(tmp_path / "q" / "openvino_model.xml")))
    assert {v for k, v in types.items() if ".layers." in k} == {"u4"}
    ids = np.random.default_rng(2).integers(3, 300, size=(1, 16)).astype(np.int64)
    lo, _ = _ir_logits(tmp_path / "q", ids)
    with torch.no_grad():
        np.testing.assert_allclose(lo, mat(torch.from_numpy(ids)).logits.numpy(), atol=ATOL, rtol=0)
