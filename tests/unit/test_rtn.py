"""model/rtn.py computes the codes INC's RTN writes, for the configuration hwnas.deploy gives INC."""
from __future__ import annotations

import numpy as np
import pytest

from hwnas.errors import InvalidSubnetError
from hwnas.model.formats import parse_weight_format
from hwnas.model.rtn import fake_quantize, fake_quantize_head, quantize_rtn

FORMATS = ["int8", "int4_sym_g32", "int4_asym_g32", "int4_sym_g16", "int4_asym_g64"]


def _inc_quantize(weight: np.ndarray, fmt_name: str):
    """INC's RTN on one nn.Linear holding `weight`, configured exactly as hwnas.deploy.quantize does."""
    import torch
    import torch.nn as nn

    from hwnas.deploy.quantize import _inc_config, from_inc_module, make_recipe
    from neural_compressor.torch.quantization import convert, prepare

    fmt = parse_weight_format(fmt_name)
    recipe = make_recipe("int8" if fmt.bits == 8 else "int4",
                         group_size=-1 if fmt.group_size is None else fmt.group_size, sym=fmt.sym)
    model = nn.Sequential(nn.Linear(weight.shape[1], weight.shape[0], bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(weight))
    model = convert(prepare(model, _inc_config(recipe, "/tmp")))
    mods = [(n, m) for n, m in model.named_modules() if type(m).__name__.endswith("WeightOnlyLinear")]
    assert len(mods) == 1
    return from_inc_module("0", mods[0][1])


@pytest.mark.parametrize("fmt", FORMATS)
def test_rtn_codes_equal_inc(fmt):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((48, 128)) * 0.05).astype(np.float32)
    w[3, :] = 0.0                                  # an all-zero row: INC's 1 / -1 fallback
    w[5, :64] = np.abs(w[5, :64])                  # a row positive in its first groups (asym wmin clamp)
    ours = quantize_rtn(w, fmt, name="0")
    inc = _inc_quantize(w, fmt)
    assert ours.bits == inc.bits and ours.group_size == inc.group_size
    np.testing.assert_array_equal(ours.scale, inc.scale)
    np.testing.assert_array_equal(ours.zero_point, inc.zero_point)
    mismatch = np.mean(ours.codes != inc.codes)
    assert mismatch == 0.0, f"{fmt}: {mismatch:.2%} codes differ"
    np.testing.assert_array_equal(fake_quantize(w, fmt), inc.dequantize())


@pytest.mark.parametrize("fmt,max_rel", [("int8", 0.02), ("int4_sym_g32", 0.2), ("int4_asym_g32", 0.2), ("f16", 1e-3)])
def test_fake_quantize_error_scales_with_bits(fmt, max_rel):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((32, 64)).astype(np.float32)
    deq = fake_quantize(w, fmt)
    rel = np.linalg.norm(deq - w) / np.linalg.norm(w)
    assert 0 < rel < max_rel
    assert deq.dtype == np.float32 and deq.shape == w.shape


def test_sym_full_range_keeps_the_extreme_exactly():
    w = np.array([[0.5, -0.25, 0.1, 0.0] * 4], dtype=np.float32)
    q = quantize_rtn(w, "int4_sym_g16")
    assert q.symmetric
    deq = q.dequantize()
    assert deq[0, 0] == pytest.approx(0.5, abs=1e-3)       # maps to -8 with a negative scale
    assert float(q.scale[0, 0]) < 0


def test_head_formats():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((20, 16)).astype(np.float32)
    assert np.abs(fake_quantize_head(w, "int8") - w).max() < np.abs(w).max() / 127 + 1e-3
    np.testing.assert_array_equal(fake_quantize_head(w, "f16"), w.astype(np.float16).astype(np.float32))
    with pytest.raises(InvalidSubnetError, match="head format"):
        fake_quantize_head(w, "int4")


def test_refuses_what_rtn_cannot_do():
    w = np.zeros((4, 48), dtype=np.float32)
    with pytest.raises(InvalidSubnetError, match="does not divide"):
        quantize_rtn(w, "int4_sym_g32")
    with pytest.raises(InvalidSubnetError, match="calibration"):
        quantize_rtn(np.zeros((4, 64), np.float32), "gptq-int4_sym_g32")


def _q4_1_grid(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Weights as a GGUF Q4_1 tensor holds them: per block of 32, f16 d and m, codes 0..15 with both ends used."""
    rng = np.random.default_rng(seed)
    g = cols // 32
    d = (rng.uniform(0.002, 0.02, (rows, g))).astype(np.float16).astype(np.float32)
    m = (-7.3 * d + rng.normal(0, 0.01, (rows, g))).astype(np.float16).astype(np.float32)
    q = rng.integers(0, 16, (rows, g, 32)).astype(np.float32)
    q[:, :, 0], q[:, :, 1] = 0, 15
    return (d[:, :, None] * q + m[:, :, None]).reshape(rows, cols).astype(np.float32), q.reshape(rows, cols)


def test_minmax_gives_back_a_q4_1_grid():
    """int4_minmax_g32 on weights dequantized from Q4_1 finds the file's own codes and scales: no second
    rounding (what int4_asym_g32, INC's integer zero point, cannot do on the same weights)."""
    w, codes = _q4_1_grid(16, 128)
    q = quantize_rtn(w, "int4_minmax_g32")
    assert q.float_zero and q.zero_point.dtype == np.float16 and not q.symmetric
    np.testing.assert_array_equal(q.codes, codes.astype(np.uint8))
    step = q.scale.astype(np.float32).repeat(32, axis=1)
    assert np.max(np.abs(q.dequantize() - w) / step) < 0.01           # f16 zero point: < 1% of a step
    inc_grid = np.abs(quantize_rtn(w, "int4_asym_g32").dequantize() - w) / step
    assert inc_grid.max() > 0.2                                        # INC's grid re-rounds by up to half a step
    assert q.nbytes() == 16 * 128 // 2 + 2 * (16 * 4) * 2              # codes + f16 scales + f16 zero points


def test_minmax_on_any_weights_maps_each_groups_range():
    rng = np.random.default_rng(2)
    w = (rng.standard_normal((8, 64)) * 0.05).astype(np.float32)
    w[2, :32] = 0.25                                                   # a constant group: scale 1, code 0
    q = quantize_rtn(w, "int4_minmax_g16")
    g = q.codes.reshape(8, 4, 16)
    assert g[[0, 1, 3]].min(axis=2).max() == 0 and g[[0, 1, 3]].max(axis=2).min() == 15
    assert np.allclose(q.dequantize()[2, :32], 0.25, atol=1e-3)
    rel = np.linalg.norm(q.dequantize() - w) / np.linalg.norm(w)
    assert 0 < rel < 0.12


def test_the_default_gguf_is_q4_1_and_minmax_reads_its_codes_back():
    """The default model's decoder linears are Q4_1 blocks: `lossless_formats` names int4_minmax_g32, and on a
    tensor dequantized from the file (as transformers loads it) minmax finds the file's own 4-bit codes."""
    import gguf

    from hwnas.model.loading import resolve_model
    from hwnas.model.source_grid import lossless_formats

    source = resolve_model("default")
    assert lossless_formats(source) == ("int4_minmax_g32",)
    assert lossless_formats({"kind": "hf", "path": "/nowhere"}) == ()
    t = next(t for t in gguf.GGUFReader(str(source.path)).tensors if t.name == "blk.0.ffn_up.weight")
    rows = int(t.shape[1])
    w = gguf.dequantize(t.data, t.tensor_type).reshape(rows, -1)
    blocks = np.asarray(t.data).reshape(rows, -1, 20)[:, :, 4:]
    codes = np.concatenate([blocks & 15, blocks >> 4], axis=-1).reshape(rows, -1)
    q = quantize_rtn(w, "int4_minmax_g32")
    np.testing.assert_array_equal(q.codes, codes)
