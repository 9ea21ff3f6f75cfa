"""Importance ordering of a supernet: MLP channels by expected contribution, layers by block influence.

Done once per model (the ordered weights are cached by `load_supernet`): after it, "the first w
channels" of a layer's MLP are its w most important ones, and the space's ranked layer order drops
the least influential layers first. The permutation leaves the full model's function unchanged.
"""
from __future__ import annotations

import hashlib
import logging
from typing import Any, Sequence

from hwnas.errors import InvalidSubnetError

log = logging.getLogger(__name__)

ORDER_METHOD = "mean|act| x ||down_col||2"


def order_channels(sn: Any, tokenizer: Any, texts: Sequence[str], max_tokens: int = 512) -> None:
    """Permute each layer's MLP channels, most important first; also score layers (block influence).

    Channel importance = mean |intermediate activation| x L2 norm of the matching down_proj
    column: the expected contribution of the channel to the layer output. Block influence
    = 1 - mean cos(layer input, layer output) (ShortGPT): low means the layer changes little
    and is the first candidate to drop. Both are measured in one pass over `texts`.
    """
    import torch

    if sn.meta.get("channels_ordered"):
        log.info("channels already ordered; skipping")
        return
    sn.reset()
    n = sn._full_num_layers
    act_sum = [torch.zeros(sn.full_width, dtype=torch.float64) for _ in range(n)]
    bi_sum = torch.zeros(n, dtype=torch.float64)
    tokens = 0
    hooks = []

    def mlp_hook(i):
        def hook(mod, args):
            x = args[0]
            h = mod.act_fn(mod.gate_proj(x)) * mod.up_proj(x)
            act_sum[i] += h.detach().abs().reshape(-1, h.shape[-1]).sum(0).double()
        return hook

    def layer_hook(i):
        def hook(mod, args, kwargs, out):
            x = args[0] if args else kwargs["hidden_states"]
            y = out[0] if isinstance(out, tuple) else out
            cos = torch.nn.functional.cosine_similarity(x.float(), y.float(), dim=-1)
            bi_sum[i] += (1 - cos).sum().double()
        return hook

    for i, layer in enumerate(sn._all_layers):
        hooks.append(layer.mlp.register_forward_pre_hook(mlp_hook(i)))
        hooks.append(layer.register_forward_hook(layer_hook(i), with_kwargs=True))
    digest = hashlib.sha256()
    try:
        with torch.inference_mode():
            for text in texts:
                digest.update(text.encode())
                ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_tokens)["input_ids"]
                if ids.shape[1] < 2:
                    continue
                sn.model(input_ids=ids, use_cache=False)
                tokens += ids.shape[1]
    finally:
        for h in hooks:
            h.remove()
    if tokens == 0:
        raise InvalidSubnetError("calibration texts are empty; cannot measure channel importance")
    perms: list[list[int]] = []
    with torch.no_grad():
        for i, layer in enumerate(sn._all_layers):
            mlp = layer.mlp
            col_norm = mlp.down_proj.weight.detach().double().norm(dim=0)
            score = act_sum[i] / tokens * col_norm
            perm = torch.argsort(score, descending=True, stable=True)
            permute_mlp(mlp, perm)
            perms.append(perm.tolist())
    bi = (bi_sum / tokens).tolist()
    order = sorted(range(n), key=lambda i: -bi[i])
    sn.meta.update(
        channels_ordered=True,
        channel_order={"method": ORDER_METHOD, "calibration_sha256": digest.hexdigest(),
                       "calibration_tokens": tokens, "permutations": perms},
        layer_scores={"method": "block influence 1-cos(in,out)", "values": bi},
        layer_order=order,
    )
    sn.space = sn.space.with_(layer_order=tuple(order))
    log.info("ordered MLP channels of %d layers on %d calibration tokens", n, tokens)

def permute_mlp(mlp: Any, perm: Any) -> None:
    """Apply a channel permutation in place: gate/up rows and down columns together."""
    for lin in (mlp.gate_proj, mlp.up_proj):
        lin.weight.data.copy_(lin.weight.data[perm])
        if lin.bias is not None:
            lin.bias.data.copy_(lin.bias.data[perm])
    mlp.down_proj.weight.data.copy_(mlp.down_proj.weight.data[:, perm])
