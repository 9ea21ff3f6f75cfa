"""Elastic supernet of a LLaMA-like model (families in `hwnas.model.arch`): any subnet of the search space computed from one set of weights.

`set_subnet(cfg)` keeps the chosen decoder layers (renumbering their KV-cache slots) and makes
each kept MLP use its first `w` intermediate channels by *slicing* the shared weights at
forward time. Nothing is copied or masked, gradients of every subnet land in the same
parameters (which is what one-shot training needs), and `reset()` restores the full model.

At creation the MLP channels of every layer are permuted by importance, measured on
calibration text, so that "the first w channels" are the w most important ones. The
permutation leaves the full model's function unchanged and is recorded in the supernet
metadata so it is applied exactly once.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from hwnas.errors import InvalidSubnetError
from hwnas.model.ordering import ORDER_METHOD
from hwnas.model.space import SearchSpace, SubnetConfig

log = logging.getLogger(__name__)



def _elastic_mlp_class():
    import torch.nn as nn
    import torch.nn.functional as F

    class ElasticMLP(nn.Module):
        """A LlamaMLP / Qwen2MLP / MistralMLP that can run on its first `width` intermediate channels (weights sliced, not copied)."""

        def __init__(self, mlp: nn.Module):
            super().__init__()
            # Same submodule names as LlamaMLP, so state_dict keys are unchanged.
            self.gate_proj = mlp.gate_proj
            self.up_proj = mlp.up_proj
            self.down_proj = mlp.down_proj
            self.act_fn = mlp.act_fn
            self.full_width = mlp.gate_proj.out_features
            self.width = self.full_width
            self.down_override = None  # recovered down_proj weight (hidden x width) of the active subnet
            # fake-quantized gate/up rows [:width] of the active subnet (hwnas.model.fakequant), None = sliced weights
            self.gate_override = None
            self.up_override = None

        def forward(self, x):
            w = self.width
            if w == self.full_width and self.down_override is None and self.gate_override is None:
                return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))
            g, u, d = self.gate_proj, self.up_proj, self.down_proj
            gw = self.gate_override if self.gate_override is not None else g.weight[:w]
            uw = self.up_override if self.up_override is not None else u.weight[:w]
            gate = F.linear(x, gw, None if g.bias is None else g.bias[:w])
            up = F.linear(x, uw, None if u.bias is None else u.bias[:w])
            down = self.down_override if self.down_override is not None else d.weight[:, :w]
            return F.linear(self.act_fn(gate) * up, down, d.bias)

    return ElasticMLP


class Supernet:
    """Wraps a LLaMA-like CausalLM in place; one set of weights serves every subnet."""

    def __init__(self, model: Any, *, space: SearchSpace | None = None, meta: dict[str, Any] | None = None):
        import torch.nn as nn

        from hwnas.model.arch import adapter_for

        self.arch = adapter_for(model.config, what="the supernet's model")
        if getattr(model.config, "hwnas_mlp_widths", None):
            raise InvalidSubnetError("this model is an extracted subnet with per-layer widths; load the full model as the supernet")
        self.model = model
        self.config = model.config
        self.meta: dict[str, Any] = dict(meta or {})
        self._all_layers: list[nn.Module] = list(self.arch.decoder_layers(model))
        self._full_num_layers = len(self._all_layers)
        self._layer_types = list(getattr(self.config, "layer_types", None) or []) or None
        ElasticMLP = _elastic_mlp_class()
        for layer in self._all_layers:
            if not isinstance(layer.mlp, ElasticMLP):
                layer.mlp = ElasticMLP(layer.mlp)
        self.full_width = self._all_layers[0].mlp.full_width
        self.space = space or SearchSpace.from_model_config(self.config)
        self.active: SubnetConfig | None = None
        # Training-free recovery (hwnas.model.recovery.Recoverer) applied whenever a subnet is made
        # concrete: set_subnet, extract, save_subnet. None = subnets are used as sliced.
        self.recoverer: Any = None
        self._restore_weights: Any = None  # undoes the fake quantization of the active subnet's genes

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_loaded(
        cls,
        loaded: Any,
        calib_texts: Sequence[str] | None = None,
        *,
        order: bool = True,
        space: SearchSpace | None = None,
        max_tokens: int = 512,
    ) -> "Supernet":
        """Wrap a LoadedModel; order MLP channels by importance unless already done (recorded in its metadata)."""
        meta = dict(loaded.supernet_meta or {})
        if loaded.subnet is not None:
            raise InvalidSubnetError(
                f"{loaded.source.spec} holds an extracted subnet ({loaded.subnet.describe()}); use the full model as the supernet"
            )
        sn = cls(loaded.model, space=space, meta=meta)
        if space is None and meta.get("space"):
            sn.space = SearchSpace.from_dict(meta["space"])  # the space it was trained on is the space searched
        elif space is None:
            sn.space = SearchSpace.from_model_config(sn.config, base_model=loaded.source.name)
        if order and not meta.get("channels_ordered"):
            if calib_texts is None:
                from hwnas.model.calibration import load_texts

                calib_texts = load_texts(n=8)
            sn.order_channels(loaded.tokenizer, calib_texts, max_tokens=max_tokens)
        if space is None and not meta.get("space") and sn.meta.get("layer_order"):
            # Default: drop layers by measured importance. bench/ordering.py: a 24-layer subnet of
            # the default model keeping the most influential layers has perplexity ~79, keeping
            # the first 24 ~1e7.
            sn.space = sn.space.with_(layer_mode="ranked", layer_order=tuple(sn.meta["layer_order"]))
        return sn

    # ------------------------------------------------------------------ subnet switching
    def set_subnet(self, cfg: SubnetConfig) -> None:
        """Make the model compute `cfg` (structure not enforced: any valid layer subset and allowed width).

        A subnet with weight formats / a head format computes with its weights fake-quantized the way
        they ship (`hwnas.model.fakequant`, after recovery); `reset` restores the float weights."""
        import torch.nn as nn

        self.space.validate(cfg, structure=False)
        down = self.recovered_down(cfg)
        self._undo_genes()
        layers = [self._all_layers[i] for i in cfg.layers]
        for j, (i, layer, w) in enumerate(zip(cfg.layers, layers, cfg.mlp_widths)):
            layer.self_attn.layer_idx = j
            layer.mlp.width = int(w)
            layer.mlp.down_override = down.get(i)
        self.arch.set_decoder_layers(self.model, nn.ModuleList(layers))
        self.config.num_hidden_layers = len(layers)
        if self._layer_types is not None:
            self.config.layer_types = [self._layer_types[i] for i in cfg.layers]
        if cfg.weight_formats is not None or cfg.head_format is not None:
            from hwnas.model.fakequant import apply_genes

            self._restore_weights = apply_genes(self, cfg)
        self.active = cfg

    def _undo_genes(self) -> None:
        if self._restore_weights is not None:
            restore, self._restore_weights = self._restore_weights, None
            restore()

    def reset(self) -> None:
        """Back to the full model (float weights)."""
        import torch.nn as nn

        self._undo_genes()
        for j, layer in enumerate(self._all_layers):
            layer.self_attn.layer_idx = j
            layer.mlp.width = layer.mlp.full_width
            layer.mlp.down_override = None
        self.arch.set_decoder_layers(self.model, nn.ModuleList(self._all_layers))
        self.config.num_hidden_layers = self._full_num_layers
        if self._layer_types is not None:
            self.config.layer_types = list(self._layer_types)
        self.active = None

    @contextlib.contextmanager
    def subnet(self, cfg: SubnetConfig | None) -> Iterator[Any]:
        """Context manager: compute `cfg` inside the block (None = full model), then reset."""
        if cfg is None:
            yield self.model
            return
        self.set_subnet(cfg)
        try:
            yield self.model
        finally:
            self.reset()

    def full_config(self) -> SubnetConfig:
        return SubnetConfig.uniform(self._full_num_layers, self.full_width)

    def base_order(self, layer: int, width: int) -> Any:
        """Positions that put layer `layer`'s first `width` (importance-ordered) MLP channels back in the base
        model's order, or None when they already are (no recorded permutation, or it is the identity there).

        Why: the order of a layer's channels does not change what it computes, but grouped int4 formats
        quantize down_proj's columns in runs of G, and a model that came quantized (a GGUF's Q4_1 blocks)
        is on its own grid only in its own order. Extraction and fake quantization both use this order,
        so what the search scores is what ships, and the full-width layers of a Q4_1 model ship losslessly.
        """
        import numpy as np

        perms = (self.meta.get("channel_order") or {}).get("permutations")
        if not perms or layer >= len(perms):
            return None
        origin = np.asarray(perms[layer][:width])
        pos = np.argsort(origin, kind="stable")
        return None if np.array_equal(pos, np.arange(len(pos))) else pos

    def recovered_down(self, cfg: SubnetConfig) -> dict[int, Any]:
        """Recovered down_proj weights of `cfg` by layer index ({} without a recoverer or for the full model)."""
        if self.recoverer is None or cfg.architecture() == self.full_config():
            return {}
        self.reset()
        return self.recoverer.fit(cfg).down

    def recovery_record(self, cfg: SubnetConfig) -> dict[str, Any] | None:
        """What a manifest records about the recovery of `cfg` (None when subnets are used as sliced)."""
        if self.recoverer is None or cfg.architecture() == self.full_config():
            return None
        return {**self.recoverer.describe(), **self.recoverer.fit(cfg).summary()}

    # ------------------------------------------------------------------ importance ordering
    def order_channels(self, tokenizer: Any, texts: Sequence[str], max_tokens: int = 512) -> None:
        """Permute each layer's MLP channels, most important first, and rank layers by block influence
        (`hwnas.model.ordering.order_channels`); recorded in the metadata so it happens once."""
        from hwnas.model.ordering import order_channels

        order_channels(self, tokenizer, texts, max_tokens=max_tokens)

    # ------------------------------------------------------------------ extraction
    def extract(self, cfg: SubnetConfig, dtype: Any = None) -> Any:
        """A dense standalone model of `cfg` (the base model's family class).

        Unsliced tensors (embeddings, attention, norms) share storage with the supernet and
        row slices are views, so extraction costs only the down_proj column slices; treat the
        result as read-only while the supernet lives (or save it with `save_subnet`).
        """
        from hwnas.model.dense import dense_config, empty_dense_model
        from hwnas.model.loading import rebuild_rotary

        self.space.validate(cfg, structure=False)
        self.reset()
        cfg_dense = dense_config(self.config, cfg.layers, cfg.mlp_widths)
        dtype = dtype or self.model.dtype
        model = empty_dense_model(cfg_dense, dtype=dtype)
        state = dict(self._subnet_tensors(cfg, lambda t: t.to(dtype)))
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
        missing = [m for m in missing if m != f"{self.arch.lm_head}.weight"]
        if missing or unexpected:  # pragma: no cover - internal consistency
            raise RuntimeError(f"extraction mismatch: missing {missing[:3]} unexpected {unexpected[:3]}")
        if cfg_dense.tie_word_embeddings:
            model.get_output_embeddings().weight = model.get_input_embeddings().weight
        rebuild_rotary(model)
        model.generation_config = self.model.generation_config
        model.eval()
        return model

    def _subnet_tensors(self, cfg: SubnetConfig, cast: Callable[[Any], Any]) -> Iterator[tuple[str, Any]]:
        """(name, tensor) of the dense subnet, layer by layer, so saving can stream shards."""
        down = self.recovered_down(cfg)
        m, a = self.model, self.arch
        yield f"{a.embed}.weight", cast(m.get_submodule(a.embed).weight.detach())
        rows = (a.mlp["gate"] + ".", a.mlp["up"] + ".")  # weight and bias sliced by output channel
        for j, (i, w) in enumerate(zip(cfg.layers, cfg.mlp_widths)):
            layer = self._all_layers[i]
            prefix = f"{a.layers}.{j}."
            pos = self.base_order(i, int(w))  # channels back in the base model's order (see base_order)
            for name, p in layer.named_parameters():
                t = p.detach()
                if name.startswith(rows):
                    t = t[:w] if pos is None else t[:w][pos]
                elif name == a.mlp["down"] + ".weight":
                    t = down[i] if i in down else t[:, :w]
                    t = t.contiguous() if pos is None else t[:, pos].contiguous()
                yield prefix + name, cast(t)
        for pname, p in m.get_submodule(a.final_norm).named_parameters():
            yield f"{a.final_norm}.{pname}", cast(p.detach())
        if not self.config.tie_word_embeddings:
            yield f"{a.lm_head}.weight", cast(m.get_submodule(a.lm_head).weight.detach())

    def save_subnet(
        self, cfg: SubnetConfig, out_dir: str | Path, tokenizer: Any, *, dtype: str | None = None,
        shard_bytes: int = 2 << 30, provenance: dict[str, Any] | None = None, force: bool = False,
    ) -> Path:
        """Write `cfg` as a standalone model folder (safetensors shards, config, tokenizer), atomically.

        Tensors are streamed shard by shard, so a 7B model is never held twice in memory.
        """
        import torch
        from safetensors.torch import save_file

        from hwnas.io import atomic_dir
        from hwnas.model.dense import dense_config
        from hwnas.model.loading import SUBNET_FILE

        self.space.validate(cfg, structure=False)
        self.reset()
        torch_dtype = getattr(torch, dtype) if dtype else self.model.dtype
        cfg_dense = dense_config(self.config, cfg.layers, cfg.mlp_widths)
        cfg_dense.dtype = str(torch_dtype).replace("torch.", "")
        with atomic_dir(out_dir, force=force) as tmp:
            shards: list[dict[str, Any]] = [{}]
            size = 0
            for name, t in self._subnet_tensors(cfg, lambda t: t.to(torch_dtype).contiguous().clone()):
                nbytes = t.numel() * t.element_size()
                if shards[-1] and size + nbytes > shard_bytes:
                    shards.append({})
                    size = 0
                shards[-1][name] = t
                size += nbytes
            names = ["model.safetensors"] if len(shards) == 1 else [
                f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
            weight_map = {}
            for fname, shard in zip(names, shards):
                save_file(shard, str(tmp / fname), metadata={"format": "pt"})
                weight_map.update({k: fname for k in shard})
            if len(shards) > 1:
                total = sum(t.numel() * t.element_size() for s in shards for t in s.values())
                (tmp / "model.safetensors.index.json").write_text(
                    json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
            cfg_dense.save_pretrained(tmp)
            self.model.generation_config.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            record = {"schema_version": 1, "subnet": cfg.to_dict(), "key": cfg.key,
                      "n_params": cfg.n_params(self.config), "base_model": self.space.base_model,
                      "supernet": {k: v for k, v in self.meta.items() if k != "channel_order"},
                      "provenance": provenance or {}}
            (tmp / SUBNET_FILE).write_text(json.dumps(record, indent=2))
        return Path(out_dir)

    def save(self, out_dir: str | Path, tokenizer: Any, *, extra_meta: dict[str, Any] | None = None, force: bool = False) -> Path:
        """Save the whole (ordered, possibly trained) supernet as a model folder any command accepts."""
        from hwnas.io import atomic_dir
        from hwnas.model.loading import SUPERNET_FILE

        self.reset()
        meta = dict(self.meta)
        meta.update(extra_meta or {})
        meta["space"] = self.space.to_dict()
        with atomic_dir(out_dir, force=force) as tmp:
            self.model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / SUPERNET_FILE).write_text(json.dumps(meta, indent=2))
        return Path(out_dir)


def load_supernet(spec: str, *, order: bool = True, dtype: str = "auto", calib_texts: Sequence[str] | None = None):
    """Load --model and wrap it as an (importance-ordered) supernet. Returns (LoadedModel, Supernet).

    Ordering a model costs a calibration pass; the ordered weights are cached (keyed by the
    model's weights and tokenizer, the calibration text and the method), so later commands load
    them directly. The tokenizer is part of the key: the cache also serves it, and the calibration
    pass that ordered the channels tokenized its text with it.
    """
    import dataclasses

    from hwnas.model.calibration import load_texts, texts_sha256
    from hwnas.model.loading import cache_dir, load_model, resolve_dtype, resolve_model

    source = resolve_model(spec)
    dtype = resolve_dtype(source, dtype)  # before keying the cache: auto and its value are one entry
    if not order:
        loaded = load_model(source, dtype=dtype)
        return loaded, Supernet.from_loaded(loaded, order=False)
    texts = list(calib_texts) if calib_texts is not None else load_texts(n=8)
    key = hashlib.sha256(
        f"v3|{source.content_sha256()}|{texts_sha256(texts)}|{ORDER_METHOD}|{dtype}".encode()).hexdigest()[:16]
    cached = cache_dir() / "supernets" / f"{source.name}-{key}"
    if (cached / "config.json").is_file():
        with contextlib.suppress(OSError):  # last use, for the cache's LRU size cap (hwnas.cache)
            os.utime(cached)
        loaded = dataclasses.replace(load_model(str(cached), dtype=dtype), source=source)
        return loaded, Supernet.from_loaded(loaded)
    loaded = load_model(source, dtype=dtype)
    sn = Supernet.from_loaded(loaded, texts)
    if loaded.supernet_meta is None or not loaded.supernet_meta.get("channels_ordered"):
        try:
            sn.save(cached, loaded.tokenizer, force=True)
        except OSError as e:  # a cache is an optimisation; never fail the command for it
            log.warning("could not cache the ordered supernet in %s: %s", cached, e)
    return loaded, sn


def resolve_subnet_option(
    subnet: str | None, layers: int | None, mlp_width: int | None, full_width: int,
    space: SearchSpace | None = None,
) -> SubnetConfig | None:
    """The CLI's --subnet SPEC, or the --layers N [--mlp-width W] shorthand (N layers, one width).

    Which N layers the shorthand keeps follows `space`'s layer mode: `ranked` (the default for an
    ordered supernet) keeps the N most important layers, `skip` the layers it always keeps and then
    the first others, `prefix` (or no space given) the first N. See `shorthand_layers`.
    """
    from hwnas.model.space import parse_subnet_spec

    if subnet and (layers is not None or mlp_width is not None):
        raise InvalidSubnetError("give either --subnet or --layers/--mlp-width, not both")
    if subnet:
        return parse_subnet_spec(subnet)
    if layers is None and mlp_width is None:
        return None
    if layers is None:
        raise InvalidSubnetError("--mlp-width needs --layers N (how many layers the subnet keeps)")
    if layers < 1:
        raise InvalidSubnetError(f"--layers must be >= 1, got {layers}")
    width = mlp_width if mlp_width is not None else full_width
    if mlp_width is not None and mlp_width < 1:
        raise InvalidSubnetError(f"--mlp-width must be >= 1, got {mlp_width}")
    if space is None:
        return SubnetConfig.uniform(layers, width)
    if layers > space.num_layers:
        raise InvalidSubnetError(f"--layers {layers} is more than the model's {space.num_layers} layers")
    if width not in space.widths:
        raise InvalidSubnetError(f"--mlp-width {width} is not an allowed width; allowed: {list(space.widths)}")
    kept = shorthand_layers(space, layers)
    return SubnetConfig(kept, (width,) * layers)


def shorthand_layers(space: SearchSpace, n: int) -> tuple[int, ...]:
    """The layers `--layers n` keeps under the space's layer mode (sorted indices)."""
    if space.layer_mode == "ranked" and space.layer_order is not None:
        return tuple(sorted(space.layer_order[:n]))
    if space.layer_mode == "skip":
        keep = [i for i in sorted(set(space.always_keep)) if i < space.num_layers][:n]
        rest = [i for i in range(space.num_layers) if i not in keep]
        return tuple(sorted(keep + rest[: n - len(keep)]))
    return tuple(range(n))
