"""Round-to-nearest weight quantization in numpy, code for code what Intel Neural Compressor's RTN writes.

Why a numpy copy of INC's RTN: the search scores thousands of (subnet, per-layer format)
candidates; running INC's `prepare`/`convert` on a deep copy of each slice would cost seconds and
a second model in memory per candidate. `quantize_rtn` computes the same codes, scales and zero
points as `neural_compressor.torch.algorithms.weight_only.utility.quant_tensor` does for the
configuration `hwnas.deploy.quantize` gives INC (`RTNConfig(bits, use_sym, group_size,
use_full_range=use_sym)`), so what the search scored is what the bundle ships:

- symmetric (full range): per group ``amax = max(|max|, |min|)`` (1 when 0), ``scale = amax / 2**(b-1)``,
  negated when ``|max| > |min|`` (so the larger side maps onto -2**(b-1), nothing is clipped);
  ``q = clip(round(w / scale), -2**(b-1), 2**(b-1) - 1)``, stored unsigned as ``q + 2**(b-1)``
  with the mid-point as zero point (INC's optimum packing);
- asymmetric: ``wmin = min(min, 0)``, ``wmax = max(max, 0)`` (-1/+1 when both 0),
  ``scale = (wmax - wmin) / (2**b - 1)``, ``zp = round(-wmin / scale)``,
  ``q = clip(round(w / scale) + zp, 0, 2**b - 1)``.

- minmax (``int4_minmax_gG``, not an INC grid): per group ``scale = (max - min) / (2**b - 1)`` (1 when 0),
  ``q = clip(round((w - min) / scale), 0, 2**b - 1)``, the zero point ``-min / scale`` kept fractional (f16).
  This is GGUF's Q4_1: on weights dequantized from a Q4_1 tensor it gives back the file's own codes and
  scales, so a Q4_1 model ships without a second rounding (the zero point's f16 rounding moves a weight
  by < 0.5% of its step).

Everything is float32 as in INC (round half to even, like torch.round); the scale is then stored
as f16 (`QuantizedLinear`), and `fake_quantize` dequantizes the way OpenVINO's decompression
does: ``f16(code - zp) * f16 scale``. Data-aware algorithms (gptq-, awq-) need calibration and
are INC's job (`hwnas.deploy.quantize`); here they are refused.
"""
from __future__ import annotations

import numpy as np

from hwnas.errors import InvalidSubnetError
from hwnas.model.formats import WeightFormat, parse_weight_format
from hwnas.model.quantized import QuantizedLinear


def _as_format(fmt: WeightFormat | str) -> WeightFormat:
    return parse_weight_format(fmt) if isinstance(fmt, str) else fmt


def quantize_rtn(weight: np.ndarray, fmt: WeightFormat | str, name: str = "weight") -> QuantizedLinear:
    """Integer weights of one [out, in] matrix in `fmt` (RTN), as INC would produce them."""
    fmt = _as_format(fmt)
    if not fmt.quantized:
        raise InvalidSubnetError(f"{name}: format {fmt.name} is unquantized; nothing to round")
    if fmt.algorithm != "rtn":
        raise InvalidSubnetError(f"{name}: format {fmt.name} needs calibration data (INC {fmt.algorithm}); "
                                 "round-to-nearest covers f16, int8, int4_sym_gG and int4_asym_gG")
    w = np.asarray(weight, dtype=np.float32)
    if w.ndim != 2:
        raise InvalidSubnetError(f"{name}: expected a 2-D weight matrix, got shape {w.shape}")
    out, inp = w.shape
    gs = inp if fmt.group_size is None else int(fmt.group_size)
    if inp % gs:
        raise InvalidSubnetError(f"{name}: group size {gs} of {fmt.name} does not divide the input width {inp}")
    bits = int(fmt.bits)
    g = w.reshape(out * (inp // gs), gs)
    if fmt.float_zero:
        return _quantize_minmax(w, bits, gs, name)
    if fmt.sym:
        maxq, minq = np.float32(2 ** (bits - 1) - 1), np.float32(-(2 ** (bits - 1)))
        mx, mn = g.max(axis=1), g.min(axis=1)
        flip = np.abs(mx) > np.abs(mn)
        amax = np.maximum(np.abs(mx), np.abs(mn))
        amax = np.where(amax == 0, np.float32(1), amax).astype(np.float32)
        scale = (amax / -minq).astype(np.float32)
        scale = np.where(flip, -scale, scale).astype(np.float32)
        q = np.clip(np.rint(g / scale[:, None]), minq, maxq) + np.float32(2 ** (bits - 1))
        zp = np.full(scale.shape, 2 ** (bits - 1), dtype=np.float32)
    else:
        maxq = np.float32(2 ** bits - 1)
        zeros = np.zeros(g.shape[0], dtype=np.float32)
        wmin = np.minimum(g.min(axis=1), zeros)
        wmax = np.maximum(g.max(axis=1), zeros)
        both0 = (wmin == 0) & (wmax == 0)
        wmin = np.where(both0, np.float32(-1), wmin).astype(np.float32)
        wmax = np.where(both0, np.float32(1), wmax).astype(np.float32)
        scale = ((wmax - wmin) / maxq).astype(np.float32)
        zp = np.rint(-wmin / scale).astype(np.float32)
        q = np.clip(np.rint(g / scale[:, None]) + zp[:, None], 0, maxq)
    groups = inp // gs
    return QuantizedLinear(name=name, bits=bits, group_size=gs,
                           codes=q.reshape(out, inp).astype(np.uint8),
                           scale=scale.reshape(out, groups).astype(np.float16),
                           zero_point=zp.reshape(out, groups).astype(np.uint8))


def _quantize_minmax(w: np.ndarray, bits: int, gs: int, name: str) -> QuantizedLinear:
    """Each group's [min, max] onto codes 0 .. 2**bits - 1, fractional zero point (GGUF Q4_1's grid)."""
    out, inp = w.shape
    g = w.reshape(out * (inp // gs), gs)
    maxq = np.float32(2 ** bits - 1)
    mn, mx = g.min(axis=1), g.max(axis=1)
    scale = ((mx - mn) / maxq).astype(np.float32)
    scale = np.where(scale == 0, np.float32(1), scale).astype(np.float16)  # stored f16: round with it
    s32 = scale.astype(np.float32)
    q = np.clip(np.rint((g - mn[:, None]) / s32[:, None]), 0, maxq)
    zp = (-mn / s32).astype(np.float16)
    groups = inp // gs
    return QuantizedLinear(name=name, bits=bits, group_size=gs, codes=q.reshape(out, inp).astype(np.uint8),
                           scale=scale.reshape(out, groups), zero_point=zp.reshape(out, groups))


def fake_quantize(weight: np.ndarray, fmt: WeightFormat | str) -> np.ndarray:
    """float32 weights as the deployed layer sees them: RTN codes dequantized like OpenVINO, f16 rounding for f16."""
    fmt = _as_format(fmt)
    w = np.asarray(weight, dtype=np.float32)
    if not fmt.quantized:
        return w.astype(np.float16).astype(np.float32)
    return quantize_rtn(w, fmt).dequantize()


def fake_quantize_head(weight: np.ndarray, head_format: str) -> np.ndarray:
    """Embeddings/lm_head as shipped: per-row symmetric int8 (`rtn_int8_rows`, as deploy does) or f16."""
    from hwnas.model.quantized import rtn_int8_rows

    w = np.asarray(weight, dtype=np.float32)
    if head_format == "int8":
        return rtn_int8_rows("head", w).dequantize()
    if head_format == "f16":
        return w.astype(np.float16).astype(np.float32)
    raise InvalidSubnetError(f"unknown head format {head_format!r}; accepted: int8, f16")
