"""A subnet with deployment genes: the fake-quantized supernet slice (what the search scores) and the
integer IR of the same SubnetConfig (what is timed and shipped) compute the same logits; the IR's
element type per layer follows the genes; runtime genes reach the compiled model.

Tolerance (stated): with f32 inference, f32 KV cache and dynamic quantization off the two agree
within 2e-3 absolute on logits of size ~1 (same tolerance as test_quantize_ir.py) and give the same
greedy token at every position.
"""
from __future__ import annotations

import numpy as np
import pytest

from hwnas.model.deploy_space import DeploySpace
from hwnas.model.space import SearchSpace, SubnetConfig
from tests.conftest import make_tiny_llama, make_tiny_tokenizer

TEXTS = ["The quick brown fox jumps over the lazy dog. " * 4, "Pack my box with five dozen liquor jugs! " * 4]

EXACT = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
ATOL = 2e-3
FORMATS = (("int8", "int4_sym_g32"), ("int4_asym_g32", "int4_minmax_g32"), ("f16", "int4_asym_g16"))
ETYPE = {"int8": "i8", "int4_sym_g32": "i4", "int4_asym_g32": "u4", "int4_asym_g16": "u4", "f16": "f16",
         "int4_minmax_g32": "u4"}


def _space():
    dep = DeploySpace(("int8", "int4_asym_g32", "f16"), ("int8", "int4_sym_g32", "int4_asym_g16", "int4_minmax_g32"),
                      ("int8", "f16"), (("KV_CACHE_PRECISION", ("u8", "f32")),))
    return SearchSpace(num_layers=4, full_width=128, widths=(32, 64, 96, 128), min_layers=1, layer_mode="skip",
                       deploy=dep)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from hwnas.hardware.irexport import export_ir
    from hwnas.model.supernet import Supernet

    model = make_tiny_llama(seed=3)
    sn = Supernet(model, space=_space())
    sn.order_channels(make_tiny_tokenizer(), TEXTS)  # MLP channels permuted: extraction puts them back in order
    cfg = SubnetConfig((0, 2, 3), (128, 64, 96)).with_deploy(FORMATS, "int8", {"KV_CACHE_PRECISION": "f32"})
    sn.space.validate(cfg)
    d = tmp_path_factory.mktemp("ir") / "float"
    export_ir(sn.extract(cfg.architecture()), d)
    return sn, cfg, d


def _ir_logits(ov_model, ids, props):
    import openvino as ov

    compiled = ov.Core().compile_model(ov_model, "CPU", props)
    req = compiled.create_infer_request()
    req.reset_state()
    t = ids.shape[1]
    res = req.infer({"input_ids": ids, "attention_mask": np.ones((1, t), np.int64),
                     "position_ids": np.arange(t, dtype=np.int64)[None], "beam_idx": np.zeros(1, np.int32)})
    return res[compiled.output("logits")].copy(), compiled


def test_fake_quantized_slice_matches_integer_ir(setup):
    import torch

    from hwnas.hardware.ov_compress import weight_element_types
    from hwnas.hardware.quant_ir import quantized_model

    sn, cfg, float_dir = setup
    ids = np.random.default_rng(0).integers(3, 300, size=(1, 24)).astype(np.int64)
    qmodel, summary = quantized_model(float_dir, cfg)
    types = weight_element_types(qmodel)
    for j, (afmt, mfmt) in enumerate(FORMATS):
        for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
            assert types[f"model.layers.{j}.self_attn.{p}"] == ETYPE[afmt]
        for p in ("gate_proj", "up_proj", "down_proj"):
            assert types[f"model.layers.{j}.mlp.{p}"] == ETYPE[mfmt]
    assert types["model.embed_tokens"] == "i8" and types["lm_head"] == "i8"
    lo, _ = _ir_logits(qmodel, ids, EXACT)
    with sn.subnet(cfg) as m, torch.no_grad():
        lt = m(torch.from_numpy(ids)).logits.numpy()
    with sn.subnet(cfg.architecture()) as m, torch.no_grad():
        lf = m(torch.from_numpy(ids)).logits.numpy()
    np.testing.assert_allclose(lo, lt, atol=ATOL, rtol=0)
    assert (lo.argmax(-1) == lt.argmax(-1)).all()
    assert np.abs(lt - lf).max() > 5 * ATOL            # the genes did change the numbers (int4 layers)


def test_reset_restores_float_weights(setup):
    import torch

    sn, cfg, _ = setup
    before = {n: p.detach().clone() for n, p in sn.model.named_parameters()}
    ids = torch.randint(3, 300, (1, 12))
    with torch.no_grad():
        ref = sn.model(ids).logits
        with sn.subnet(cfg):
            pass
        after = sn.model(ids).logits
    for n, p in sn.model.named_parameters():
        assert torch.equal(p, before[n]), n
    assert torch.equal(ref, after)
    assert all(layer.mlp.gate_override is None and layer.mlp.down_override is None for layer in sn._all_layers)


def _kv(compiled):
    v = compiled.get_property("KV_CACHE_PRECISION")
    return v.get_type_name() if hasattr(v, "get_type_name") else str(v).lower()


def test_runtime_genes_reach_the_compiled_model(setup):
    from hwnas.hardware.quant_ir import quantized_model, runtime_properties

    sn, cfg, float_dir = setup
    props = runtime_properties({"KV_CACHE_PRECISION": "u8", "INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": 1}, cfg)
    assert props["KV_CACHE_PRECISION"] == "f32" and props["NUM_STREAMS"] == 1
    ids = np.random.default_rng(1).integers(3, 300, size=(1, 8)).astype(np.int64)
    qmodel, _ = quantized_model(float_dir, cfg)
    _, compiled = _ir_logits(qmodel, ids, {k: str(v) for k, v in props.items()})
    assert _kv(compiled) == "f32"
    qmodel, _ = quantized_model(float_dir, cfg)
    _, compiled = _ir_logits(qmodel, ids, {"KV_CACHE_PRECISION": "u8"})
    assert _kv(compiled) == "u8"
