"""Dense LLaMA-like models (LLaMA, Qwen2, Mistral) with a different MLP width per layer.

Transformers' configs have one ``intermediate_size``. A dense subnet is kept a stock
``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` / ``MistralForCausalLM`` (the family's class from
`hwnas.model.arch`; so it traces and exports to OpenVINO like the base model, with no
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

    from hwnas.model.arch import adapter_for

    arch = adapter_for(model.config)
    layers = arch.decoder_layers(model)
    if len(widths) != len(layers):
        raise ValueError(f"{len(widths)} widths for {len(layers)} layers")
    for layer, w in zip(layers, widths):
        mlp = layer.get_submodule(arch.mlp_module)
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


def dense_config(base_config: Any, layers: int | Sequence[int], widths: Sequence[int]) -> Any:
    """The config of a dense subnet: the kept layers (base indices, or a count = the first N), max
    width, per-layer widths when not uniform; per-layer fields follow the family's adapter."""
    from hwnas.model.arch import adapter_for

    kept = list(range(layers)) if isinstance(layers, int) else [int(i) for i in layers]
    widths = [int(w) for w in widths]
    cfg = adapter_for(base_config).subnet_config(base_config, kept, widths)
    if len(set(widths)) > 1:
        setattr(cfg, WIDTHS_KEY, widths)
    elif hasattr(cfg, WIDTHS_KEY):
        delattr(cfg, WIDTHS_KEY)
    return cfg


def empty_dense_model(config: Any, dtype: Any = None) -> Any:
    """Build the family's CausalLM skeleton on the meta device (no memory) with per-layer MLP widths."""
    import torch

    from hwnas.model.arch import adapter_for

    with torch.device("meta"):
        model = adapter_for(config).model_class()(config)
    if dtype is not None:
        model = model.to(dtype=dtype)
    narrow_mlps(model, mlp_widths_of(config))
    return model
