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


def test_dense_fake_quantization_matches_the_slice_and_restores(setup):
    """What export's generation pre-check runs (the extracted subnet, fake-quantized) is what the search
    scored (the supernet slice, fake-quantized), and the extracted model gets its float weights back."""
    import torch

    from hwnas.model.fakequant import apply_genes_dense

    sn, cfg, _ = setup
    dense = sn.extract(cfg.architecture())
    ids = torch.randint(3, 300, (1, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        lf = dense(ids).logits
        restore = apply_genes_dense(dense, cfg)
        lq = dense(ids).logits
        restore()
        back = dense(ids).logits
        with sn.subnet(cfg) as m:
            ls = m(ids).logits
    torch.testing.assert_close(lq, ls, atol=1e-4, rtol=0)
    assert (lq - lf).abs().max() > 5 * ATOL
    assert torch.equal(back, lf)


def test_generation_precheck_refuses_before_any_ir_and_restores_the_weights(setup):
    """The pre-check scores the fake-quantized dense subnet's generations against the full model; a fail
    raises the one-line error naming the pre-check, and the dense model keeps its float weights."""
    import torch

    from hwnas.accuracy.genquality import DegenerateGenerationError, GenThresholds, reference_generations
    from hwnas.deploy.gencheck import precheck_fake_quantized

    sn, cfg, _ = setup
    sn.reset()
    ref = reference_generations(sn.model, make_tiny_tokenizer(), max_new_tokens=12)
    full = sn.space.largest()
    dense = sn.extract(full)
    ids = torch.randint(3, 300, (1, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = dense(ids).logits
    # the full architecture at int8: its generations are the full model's (a random tiny model's margins
    # between tokens are wide enough for int8)
    int8 = full.with_deploy(tuple(("int8", "int8") for _ in full.layers), "f16", {})
    rep = precheck_fake_quantized(dense, int8, ref, thresholds=GenThresholds(min_prefix=0.5))
    assert rep.passed and rep.aggregate["prefix"] > 0.5
    coarse = full.with_deploy(tuple(("int4_asym_g16", "int4_asym_g16") for _ in full.layers), "int8", {})
    with pytest.raises(DegenerateGenerationError, match="PyTorch pre-check"):
        precheck_fake_quantized(dense, coarse, ref, thresholds=GenThresholds(min_prefix=1.01))
    with torch.no_grad():
        assert torch.equal(dense(ids).logits, before)
