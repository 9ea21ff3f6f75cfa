"""What differs between the model families hwnas accepts, in one place (one adapter per family).

Every stage asks `adapter_for(config)` instead of testing ``model_type`` itself: which transformers
class builds the family, where its decoder layers, attention and MLP projections, norms and
embeddings live, whether q/k/v carry biases, which config fields a subnet (fewer layers, other MLP
widths) must rewrite, and the AWQ absorb pairs (which norm or projection feeds which projections).
Modelled on optimum's ``NormalizedConfigManager`` and llm-compressor's per-architecture mappings.

LLaMA, Qwen2 and Mistral share the LLaMA module layout; they differ in q/k/v biases (Qwen2), tied
embeddings (small Qwen2 models tie them), and sliding-window attention (Mistral's
``sliding_window``; Qwen2's ``use_sliding_window`` / ``max_window_layers`` / ``layer_types``).
Adding a family is one adapter here plus its tiny-config test.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from hwnas.errors import ModelError


@dataclass(frozen=True)
class ArchAdapter:
    """One model family: names and config rules the supernet, recovery, quantization and export use."""

    model_type: str                     # config.model_type
    class_name: str                     # transformers class (architectures[0])
    gguf_names: tuple[str, ...]         # GGUF general.architecture values transformers maps to this family
    qkv_bias: bool = False              # q/k/v projections carry biases (Qwen2)
    # module paths (relative to the CausalLM, then to one decoder layer)
    layers: str = "model.layers"
    embed: str = "model.embed_tokens"
    final_norm: str = "model.norm"
    lm_head: str = "lm_head"
    attn: Mapping[str, str] = field(default_factory=lambda: {
        "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj"})
    mlp: Mapping[str, str] = field(default_factory=lambda: {
        "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"})
    norms: Mapping[str, str] = field(default_factory=lambda: {
        "attn": "input_layernorm", "mlp": "post_attention_layernorm"})
    # per-layer config fields (lists with one entry per layer) a subnet keeps the entries of
    per_layer_fields: tuple[str, ...] = ("layer_types",)
    # a count of leading layers with a property (Qwen2: layers below max_window_layers use full attention)
    leading_count_field: str | None = None

    @property
    def mlp_module(self) -> str:
        return self.mlp["gate"].rsplit(".", 1)[0]

    def model_class(self) -> Any:
        import transformers

        return getattr(transformers, self.class_name)

    def decoder_layers(self, model: Any) -> Any:
        return model.get_submodule(self.layers)

    def set_decoder_layers(self, model: Any, layers: Any) -> None:
        """Replace the decoder's layer list (a ModuleList) in place."""
        parent, _, child = self.layers.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layers)

    def awq_absorb(self) -> dict[str, Any]:
        """INC AWQ `absorb_layer_dict`: scales fold into each norm / up_proj and divide the projections it feeds.

        v_proj -> o_proj is left out: with grouped KV heads the shapes do not line up."""
        a, m = self.attn, self.mlp
        return {self.norms["attn"]: (a["q"], a["k"], a["v"]),
                self.norms["mlp"]: (m["gate"], m["up"]),
                m["up"]: m["down"]}

    def subnet_config(self, base_config: Any, kept: Sequence[int], widths: Sequence[int]) -> Any:
        """A deep copy of `base_config` describing the dense subnet keeping base layers `kept` (sorted)
        with MLP widths `widths` (the caller records non-uniform widths; here: layer-indexed fields)."""
        import copy

        cfg = copy.deepcopy(base_config)
        kept = [int(i) for i in kept]
        cfg.num_hidden_layers = len(kept)
        cfg.intermediate_size = max(int(w) for w in widths)
        for name in self.per_layer_fields:
            vals = getattr(cfg, name, None)
            if isinstance(vals, (list, tuple)) and vals:
                setattr(cfg, name, [vals[i] for i in kept])
        if self.leading_count_field and getattr(cfg, self.leading_count_field, None) is not None:
            n = int(getattr(cfg, self.leading_count_field))
            setattr(cfg, self.leading_count_field, sum(1 for i in kept if i < n))
        return cfg

    def describe(self) -> str:
        return f"{self.model_type} ({self.class_name})"


ADAPTERS: dict[str, ArchAdapter] = {a.model_type: a for a in (
    ArchAdapter("llama", "LlamaForCausalLM", ("llama",)),
    ArchAdapter("qwen2", "Qwen2ForCausalLM", ("qwen2",), qkv_bias=True, leading_count_field="max_window_layers"),
    ArchAdapter("mistral", "MistralForCausalLM", ("mistral",)),
)}
SUPPORTED_MODEL_TYPES = tuple(ADAPTERS)


def supported_text() -> str:
    """'llama (LlamaForCausalLM), qwen2 (...), mistral (...)' for error messages."""
    return ", ".join(a.describe() for a in ADAPTERS.values())


def adapter_for(config_or_type: Any, *, what: str = "the model") -> ArchAdapter:
    """The adapter of a config (or model, or model_type string); ModelError naming the supported families."""
    if isinstance(config_or_type, str):
        model_type = config_or_type
    else:
        cfg = getattr(config_or_type, "config", config_or_type)
        model_type = cfg.get("model_type") if isinstance(cfg, Mapping) else getattr(cfg, "model_type", None)
    adapter = ADAPTERS.get(str(model_type))
    if adapter is None:
        raise ModelError(f"{what} has architecture {model_type!r}; hwnas supports {supported_text()}")
    return adapter


def adapter_for_gguf(arch: str, *, what: str = "the model") -> ArchAdapter:
    """The adapter for a GGUF `general.architecture` value."""
    for a in ADAPTERS.values():
        if arch in a.gguf_names:
            return a
    raise ModelError(f"{what} has GGUF architecture {arch!r}; hwnas supports {supported_text()}")
