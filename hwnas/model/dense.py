"""Dense LLaMA models with a different MLP width per layer.

Transformers' ``LlamaConfig`` has one ``intermediate_size``. A dense subnet is kept a stock
``LlamaForCausalLM`` (so it traces and exports to OpenVINO like any Llama, with no
``trust_remote_code``) whose ``intermediate_size`` is the largest kept width and whose
per-layer MLP ``nn.Linear`` modules are narrower. The per-layer widths are stored in the
config as ``hwnas_mlp_widths``; a uniform subnet needs no such field and is a plain Llama
checkpoint any tool can load.
"""
from __future__ import annotations

from typing import Any, Sequence

WIDTHS_KEY = "hwnas_mlp_widths"


def mlp_widths_of(config: Any) -> list[int]:
    """Per-layer MLP widths described by a config (uniform unless hwnas_mlp_widths is set)."""
    widths = getattr(config, WIDTHS_KEY, None)
    if widths:
        return [int(w) for w in widths]
    return [int(config.intermediate_size)] * int(config.num_hidden_layers)


def narrow_mlps(model: Any, widths: Sequence[int]) -> None:
    """Replace each layer's MLP projections by nn.Linear modules of the given width (same device/dtype)."""
    import torch.nn as nn

    layers = model.model.layers
    if len(widths) != len(layers):
        raise ValueError(f"{len(widths)} widths for {len(layers)} layers")
    for layer, w in zip(layers, widths):
        mlp = layer.mlp
        if mlp.gate_proj.out_features == w:
            continue
        ref = mlp.gate_proj.weight
        h = mlp.gate_proj.in_features
        bias = mlp.gate_proj.bias is not None
        kw = dict(device=ref.device, dtype=ref.dtype)
        mlp.gate_proj = nn.Linear(h, w, bias=bias, **kw)
        mlp.up_proj = nn.Linear(h, w, bias=bias, **kw)
        mlp.down_proj = nn.Linear(w, h, bias=mlp.down_proj.bias is not None, **kw)
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = w


def dense_config(base_config: Any, num_layers: int, widths: Sequence[int]) -> Any:
    """A LlamaConfig for a dense subnet: fewer layers, max width, per-layer widths when not uniform."""
    import copy

    cfg = copy.deepcopy(base_config)
    widths = [int(w) for w in widths]
    cfg.num_hidden_layers = num_layers
    cfg.intermediate_size = max(widths)
    if getattr(cfg, "layer_types", None) is not None:
        cfg.layer_types = list(cfg.layer_types)[:num_layers]
    if len(set(widths)) > 1:
        setattr(cfg, WIDTHS_KEY, widths)
    elif hasattr(cfg, WIDTHS_KEY):
        delattr(cfg, WIDTHS_KEY)
    return cfg


def empty_dense_model(config: Any, dtype: Any = None) -> Any:
    """Build a LlamaForCausalLM skeleton on the meta device (no memory) with per-layer MLP widths."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    if dtype is not None:
        model = model.to(dtype=dtype)
    narrow_mlps(model, mlp_widths_of(config))
    return model
