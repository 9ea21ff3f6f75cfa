"""Put Neural Compressor's integer weights into an OpenVINO IR, as weights the CPU plugin runs compressed.

`compress_ir(ov_model, weights)` replaces the float weight of each linear layer (MatMul) and of
the embedding (Gather), found by the torch module name the exporter records in node names, with
the weight-decompression subgraph OpenVINO's CPU plugin fuses into a compressed FullyConnected /
Gather (the same pattern NNCF emits):

    per channel:  Constant(i8|u8 [out, in]) -> Convert(f16) [-> Subtract(Convert(zp u8 [out, 1]))]
                  -> Multiply(scale f16 [out, 1]) -> Convert(f32)
    grouped:      Constant(i4|u4 [out, G, gs]) -> Convert(f16) [-> Subtract(Convert(zp u4 [out, G, 1]))]
                  -> Multiply(scale f16 [out, G, 1]) -> Reshape([out, in]) -> Convert(f32)
    minmax:       as grouped u4, with the zero point an f16 constant [out, G, 1] (no Convert)

Symmetric codes (every zero point at the mid-point) are stored signed with no Subtract.
Constants are built from C-contiguous numpy arrays and their element type is checked after
creation (a non-contiguous float16 array once produced an int16 constant silently).
Each replaced weight is compared with the IR's float weight it replaces, which catches a
mapping error (the relative error must stay below `max_rel_error`).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from hwnas.model.quantized import QuantizedLinear
from hwnas.errors import ExportError

log = logging.getLogger(__name__)

# aten:: for a float32 trace; ov_ext:: when a bf16/f16 model is traced with OpenVINO's 16-bit patch
_MATMUL_RE = re.compile(r"^__module\.(.+?)/(?:aten|ov_ext)::linear/MatMul")
_GATHER_RE = re.compile(r"^__module\.(.+?)/(?:aten|ov_ext)::embedding/Gather")
_CONST_RE = re.compile(r"^self\.(.+)\.(?:weight|_openvino_orig_weight)$")
MAX_REL_ERROR = 0.3  # a wrong layer gives ~1.4; int4 quantization noise ~0.1


@dataclass
class CompressedWeight:
    name: str                 # torch module name(s), "+"-joined for a tied weight
    element_type: str         # "u8" | "i8" | "u4" | "i4" | "f16"
    shape: tuple[int, ...]    # of the integer constant
    rel_error: float          # ||W_ir - W_q|| / ||W_ir|| against the float weight replaced


@dataclass
class CompressionSummary:
    weights: list[CompressedWeight] = field(default_factory=list)
    float_weights: list[str] = field(default_factory=list)   # weight constants left in float

    def element_types(self) -> dict[str, str]:
        return {w.name: w.element_type for w in self.weights}

    def to_dict(self) -> dict:
        counts: dict[str, int] = {}
        for w in self.weights:
            counts[w.element_type] = counts.get(w.element_type, 0) + 1
        return {"compressed": counts, "float_weights": list(self.float_weights),
                "max_rel_error": max((w.rel_error for w in self.weights), default=0.0)}


def _ov():
    import openvino as ov
    import openvino.opset13 as ops

    return ov, ops


def _constant(values: np.ndarray, ov_type: Any, name: str) -> Any:
    """A Constant of exactly `ov_type` from a contiguous array; raises if OpenVINO picked another type."""
    ov, ops = _ov()
    arr = np.ascontiguousarray(values)
    const = ops.constant(arr, dtype=ov_type, name=name)
    if const.get_output_element_type(0) != ov_type:
        raise ExportError(f"OpenVINO made a {const.get_output_element_type(0)} constant for {name}, expected {ov_type}")
    if tuple(const.get_output_shape(0)) != arr.shape:
        raise ExportError(f"OpenVINO made constant {name} of shape {tuple(const.get_output_shape(0))}, expected {arr.shape}")
    return const


def decompression_subgraph(q: QuantizedLinear, name: str, out_type: Any = None) -> tuple[Any, str, tuple]:
    """Build the decompression subgraph for `q`; returns (output, element type name, constant shape)."""
    ov, ops = _ov()
    out_type = out_type or ov.Type.f32
    out, inp = q.shape
    grouped = q.group_size != inp
    if q.bits not in (4, 8):
        raise ExportError(f"{q.name}: {q.bits}-bit weights are not supported; use 4 or 8")
    shape = (out, q.n_groups, q.group_size) if grouped else (out, inp)
    sshape = (out, q.n_groups, 1) if grouped else (out, 1)
    signed = q.symmetric
    tname = ("i" if signed else "u") + str(q.bits)
    ov_type = {"i4": ov.Type.i4, "u4": ov.Type.u4, "i8": ov.Type.i8, "u8": ov.Type.u8}[tname]
    codes = (q.signed_codes() if signed else q.codes).reshape(shape)
    w = _constant(codes, ov_type, name)
    x = ops.convert(w, ov.Type.f16)
    if q.float_zero:  # fractional zero point (GGUF Q4_1's grid): an f16 constant, fused by the CPU plugin alike
        zp = _constant(q.zero_point.reshape(sshape), ov.Type.f16, f"{name}/zero_point")
        x = ops.subtract(x, zp, name=f"{name}/zero_point/subtract")
    elif not signed:
        zp = _constant(q.zero_point.reshape(sshape), ov_type, f"{name}/zero_point")
        x = ops.subtract(x, ops.convert(zp, ov.Type.f16), name=f"{name}/zero_point/subtract")
    scale = _constant(q.scale.reshape(sshape), ov.Type.f16, f"{name}/scale")
    x = ops.multiply(x, scale, name=f"{name}/fq_weights")
    if grouped:
        x = ops.reshape(x, ops.constant(np.array([out, inp], dtype=np.int64)), special_zero=False)
    if out_type != ov.Type.f16:
        x = ops.convert(x, out_type, name=f"{name}/fq_weights/convert")
    return x.output(0), tname, shape


@dataclass
class _WeightSite:
    const: Any                       # the Constant node
    output: Any                      # output feeding the consumers (the constant's, or a Convert's)
    names: list[str] = field(default_factory=list)   # torch module names using it


def find_weight_sites(model: Any) -> dict[str, _WeightSite]:
    """Float weight constants of linear layers and embeddings, keyed by constant friendly name."""
    sites: dict[str, _WeightSite] = {}
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind == "MatMul":
            port, rx = 1, _MATMUL_RE
        elif kind == "Gather":
            port, rx = 0, _GATHER_RE
        else:
            continue
        src = op.input(port).get_source_output()
        node = src.get_node()
        if node.get_type_name() == "Convert":
            inner = node.input(0).get_source_output().get_node()
            if inner.get_type_name() != "Constant":
                continue
            const = inner
        elif node.get_type_name() == "Constant":
            const = node
        else:
            continue
        if len(const.get_output_shape(0)) != 2 or not const.get_output_element_type(0).is_real():
            continue
        m = rx.match(op.get_friendly_name()) or _CONST_RE.match(const.get_friendly_name())
        if not m:
            continue
        if kind == "MatMul" and not op.get_attributes().get("transpose_b", False):
            raise ExportError(f"MatMul {op.get_friendly_name()} does not use a [out, in] weight (transpose_b false)")
        site = sites.setdefault(const.get_friendly_name(), _WeightSite(const=const, output=src))
        if m.group(1) not in site.names:
            site.names.append(m.group(1))
    return sites


CHECK_ROWS = 512  # rows per weight compared with the IR's float weight (a wrong layer shows on any rows)


def _check_rows(n: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(n, CHECK_ROWS)).astype(np.int64))


def _float_data(const: Any, rows: np.ndarray | None = None) -> np.ndarray:
    data = np.asarray(const.get_data())
    if rows is not None:
        data = data[rows]
    if str(const.get_output_element_type(0)) in ("<Type: 'bfloat16'>", "bf16"):
        # OpenVINO hands bf16 constants out as float16 arrays of the same bits: reinterpret them
        return (np.ascontiguousarray(data).view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return data.astype(np.float32)


def compress_ir(model: Any, weights: Mapping[str, QuantizedLinear], *, head_f16: Sequence[str] = (),
                max_rel_error: float = MAX_REL_ERROR, strict: bool = True) -> CompressionSummary:
    """Replace float weights in `model` (an openvino.Model, changed in place) by `weights`.

    weights: QuantizedLinear by torch module name ("model.layers.0.mlp.up_proj", "model.embed_tokens",
    "lm_head"); head_f16: module names whose weight is stored as f16 instead. With `strict`, every
    entry of `weights` must be found in the IR (ExportError otherwise).
    """
    ov, ops = _ov()
    sites = find_weight_sites(model)
    summary = CompressionSummary()
    used: set[str] = set()
    for cname, site in sites.items():
        qs = [weights[n] for n in site.names if n in weights]
        label = "+".join(site.names)
        if qs:
            q = qs[0]
            if len(qs) > 1 and any(not np.array_equal(o.codes, q.codes) for o in qs[1:]):
                raise ExportError(f"tied weight {label} has different quantized values per module")
            ir_shape = tuple(site.const.get_output_shape(0))
            if ir_shape != q.shape:
                raise ExportError(f"IR weight of {label} has shape {ir_shape}, quantized weights {q.shape}")
            rows = _check_rows(q.shape[0])  # a sample of rows: the check is for mapping errors
            ir_w = _float_data(site.const, rows)
            deq = q.dequantize_rows(rows)
            rel = float(np.linalg.norm(ir_w - deq) / max(np.linalg.norm(ir_w), 1e-12))
            if rel > max_rel_error:
                raise ExportError(f"IR weight of {label} does not match its quantized weights (relative error {rel:.3f}); "
                                  "was the IR exported from the same model?")
            new, tname, shape = decompression_subgraph(q, cname, site.output.get_element_type())
            used.update(n for n in site.names if n in weights)
        elif any(n in head_f16 for n in site.names):
            data = _float_data(site.const).astype(np.float16)
            c = _constant(data, ov.Type.f16, cname)
            new = ops.convert(c, site.output.get_element_type()).output(0)
            tname, shape, rel = "f16", data.shape, 0.0
            used.update(n for n in site.names if n in head_f16)
        else:
            summary.float_weights.append(label)
            continue
        for target in list(site.output.get_target_inputs()):
            target.replace_source_output(new)
        summary.weights.append(CompressedWeight(name=label, element_type=tname, shape=tuple(shape), rel_error=rel))
    missing = [n for n in list(weights) + list(head_f16) if n not in used]
    if missing and strict:
        raise ExportError(f"{len(missing)} quantized layers not found in the IR (e.g. {missing[0]}); "
                          f"IR weight sites: {', '.join(sorted(n for s in sites.values() for n in s.names)[:6])}...")
    model.validate_nodes_and_infer_types()
    log.info("compressed %d weights in the IR (%s); %d left float", len(summary.weights),
             summary.to_dict()["compressed"], len(summary.float_weights))
    return summary


def weight_element_types(model: Any) -> dict[str, str]:
    """Element type of the weight constant behind every linear/embedding of an IR (for checks and tests).

    Follows Convert/Subtract/Multiply/Reshape back from each MatMul weight input (port 1) and
    Gather data input (port 0) to the first Constant of rank >= 2.
    """
    out: dict[str, str] = {}
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in ("MatMul", "Gather"):
            continue
        rx = _MATMUL_RE if kind == "MatMul" else _GATHER_RE
        m = rx.match(op.get_friendly_name())
        if not m:
            continue
        node = op.input(1 if kind == "MatMul" else 0).get_source_output().get_node()
        while node.get_type_name() in ("Convert", "Subtract", "Multiply", "Reshape"):
            node = node.input(0).get_source_output().get_node()
        if node.get_type_name() == "Constant" and len(node.get_output_shape(0)) >= 2:
            out[m.group(1)] = node.get_output_element_type(0).get_type_name()
    return out


def runtime_weight_types(compiled: Any) -> dict[str, int]:
    """Count the compiled model's FullyConnected/Gather layers by the element type of their weight input.

    A compressed layer shows its integer type ("FullyConnected:u4"); one that was decompressed to
    float at load time would show "FullyConnected:f32"/"bf16" instead.
    """
    counts: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        kind = rt["layerType"].astype(str) if "layerType" in rt else op.get_type_name()
        if kind not in ("FullyConnected", "Gather") or op.get_input_size() < 2:
            continue
        src = op.input(1 if kind == "FullyConnected" else 0).get_source_output()
        if len(src.get_partial_shape()) < 2:
            continue
        key = f"{kind}:{src.get_element_type().get_type_name()}"
        counts[key] = counts.get(key, 0) + 1
    return counts
