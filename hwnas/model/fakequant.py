"""Score a subnet as it ships: its supernet slice with every linear's weights fake-quantized in its format.

`apply_genes(supernet, cfg)` is called by `Supernet.set_subnet` after the layers, widths and
recovered down_proj weights of `cfg` are in place. For each kept layer it replaces the attention
projections' weights (q, k, v, o) by their round-to-nearest dequantized values in the layer's
attention format, and the MLP's sliced gate/up rows and (recovered) down_proj by their values in
its MLP format (`hwnas.model.rtn`, code for code what INC ships, dequantized as OpenVINO does);
embeddings/lm_head get the head format (per-row int8 as deploy does, or f16). The float weights
are not copied: the parameters are swapped and the originals kept by reference, and the returned
callable swaps them back (`Supernet.reset`). Quantization happens after recovery, as at export.

What torch cannot show here (runtime settings such as a u8 KV cache or dynamic activation
quantization) is measured through the IR instead (see `hwnas.search.validation`).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

from hwnas.model.rtn import fake_quantize, fake_quantize_head
from hwnas.model.space import SubnetConfig

log = logging.getLogger(__name__)

ATTENTION_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj")


def _fq_tensor(weight: Any, fmt: str, cols: Any = None) -> Any:
    """`weight` fake-quantized in `fmt`; with `cols` (positions, `Supernet.base_order`) its columns are
    grouped in that order, as the extracted model ships them, and returned in the slice's own order."""
    import numpy as np
    import torch

    w = weight.detach().float().cpu().numpy()
    if cols is None:
        return torch.from_numpy(fake_quantize(w, fmt)).to(weight.dtype)
    out = np.empty_like(w)
    out[:, cols] = fake_quantize(np.ascontiguousarray(w[:, cols]), fmt)
    return torch.from_numpy(out).to(weight.dtype)


def apply_genes(supernet: Any, cfg: SubnetConfig) -> Callable[[], None]:
    """Fake-quantize the active subnet's weights per `cfg`'s genes; returns the function that restores them."""
    import torch
    import torch.nn as nn

    t0 = time.perf_counter()
    swapped: list[tuple[Any, str, Any]] = []   # (module, attribute, original value)
    swap = _swapper(swapped)

    with torch.no_grad():
        if cfg.weight_formats is not None:
            for i, w, (afmt, mfmt) in zip(cfg.layers, cfg.mlp_widths, cfg.weight_formats):
                layer = supernet._all_layers[i]
                attn = layer.self_attn
                for name in ATTENTION_PROJ:
                    lin = getattr(attn, name)
                    swap(lin, "weight", nn.Parameter(_fq_tensor(lin.weight, afmt), requires_grad=False))
                mlp = layer.mlp
                w = int(w)
                down = mlp.down_override if mlp.down_override is not None else mlp.down_proj.weight[:, :w]
                swap(mlp, "gate_override", _fq_tensor(mlp.gate_proj.weight[:w], mfmt))
                swap(mlp, "up_override", _fq_tensor(mlp.up_proj.weight[:w], mfmt))
                swap(mlp, "down_override", _fq_tensor(down, mfmt, supernet.base_order(i, w)))
        if cfg.head_format is not None:
            _swap_head(supernet.model, cfg.head_format, swap)
    log.debug("fake-quantized %s in %.2f s", cfg.key, time.perf_counter() - t0)
    return _restorer(swapped)


def apply_genes_dense(model: Any, cfg: SubnetConfig) -> Callable[[], None]:
    """The same on an extracted dense subnet (`Supernet.extract`: layer j is cfg's j-th kept layer, MLP
    channels already in the base order, so down_proj groups run as shipped); returns the restore function.
    Lets export judge a candidate's weight formats in torch before building its IR."""
    import torch
    import torch.nn as nn

    swapped: list[tuple[Any, str, Any]] = []   # (module, attribute, original value)
    swap = _swapper(swapped)

    with torch.no_grad():
        if cfg.weight_formats is not None:
            layers = model.model.layers
            if len(layers) != len(cfg.weight_formats):
                raise ValueError(f"model has {len(layers)} layers, subnet {cfg.key} {len(cfg.weight_formats)}")
            for layer, (afmt, mfmt) in zip(layers, cfg.weight_formats):
                for mod, fmt in ([(getattr(layer.self_attn, n), afmt) for n in ATTENTION_PROJ]
                                 + [(getattr(layer.mlp, n), mfmt) for n in ("gate_proj", "up_proj", "down_proj")]):
                    swap(mod, "weight", nn.Parameter(_fq_tensor(mod.weight, fmt), requires_grad=False))
        if cfg.head_format is not None:
            _swap_head(model, cfg.head_format, swap)
    return _restorer(swapped)


def _swap_head(model: Any, fmt: str, swap: Callable[[Any, str, Any], None]) -> None:
    """Embeddings and lm_head (once when tied) fake-quantized in the head format."""
    import torch
    import torch.nn as nn

    emb = model.get_input_embeddings()
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is emb.weight
    q = torch.from_numpy(fake_quantize_head(emb.weight.detach().float().cpu().numpy(), fmt))
    new = nn.Parameter(q.to(emb.weight.dtype), requires_grad=False)
    swap(emb, "weight", new)
    if head is not None:
        if tied:
            swap(head, "weight", new)
        else:
            hq = fake_quantize_head(head.weight.detach().float().cpu().numpy(), fmt)
            swap(head, "weight", nn.Parameter(torch.from_numpy(hq).to(head.weight.dtype), requires_grad=False))


def _swapper(swapped: list[tuple[Any, str, Any]]) -> Callable[[Any, str, Any], None]:
    def swap(module: Any, attr: str, value: Any) -> None:
        swapped.append((module, attr, getattr(module, attr)))
        setattr(module, attr, value)

    return swap


def _restorer(swapped: list[tuple[Any, str, Any]]) -> Callable[[], None]:
    def restore() -> None:
        for module, attr, value in reversed(swapped):
            setattr(module, attr, value)
        swapped.clear()

    return restore


def fake_quantize_part(supernet: Any, layer: int, part: str, fmt: str) -> Callable[[], None]:
    """On the full model (supernet reset): one layer's attention (``part="attention"``) or MLP (``"mlp"``)
    alone fake-quantized in `fmt`; returns the restore function. For per-layer sensitivity."""
    import torch
    import torch.nn as nn

    if part not in ("attention", "mlp"):
        raise ValueError(f"part must be 'attention' or 'mlp', got {part!r}")
    swapped: list[tuple[Any, str, Any]] = []   # (module, attribute, original value)
    swap = _swapper(swapped)

    blk = supernet._all_layers[layer]
    with torch.no_grad():
        if part == "attention":
            for name in ATTENTION_PROJ:
                lin = getattr(blk.self_attn, name)
                swap(lin, "weight", nn.Parameter(_fq_tensor(lin.weight, fmt), requires_grad=False))
        else:
            mlp = blk.mlp
            swap(mlp, "gate_override", _fq_tensor(mlp.gate_proj.weight, fmt))
            swap(mlp, "up_override", _fq_tensor(mlp.up_proj.weight, fmt))
            swap(mlp, "down_override", _fq_tensor(mlp.down_proj.weight, fmt, supernet.base_order(layer, mlp.full_width)))
    return _restorer(swapped)
