"""The family adapters: lookup by model_type, one-line refusal of other architectures, subnet config rules."""
from __future__ import annotations

import json

import pytest

from hwnas.errors import ModelError
from hwnas.model.arch import ADAPTERS, adapter_for, adapter_for_gguf, supported_text


def test_lookup_by_model_type_config_and_gguf_name():
    from transformers import MistralConfig, Qwen2Config

    assert adapter_for("llama").class_name == "LlamaForCausalLM"
    assert adapter_for(Qwen2Config()).qkv_bias is True
    assert adapter_for({"model_type": "mistral"}).class_name == "MistralForCausalLM"
    assert adapter_for(MistralConfig()).qkv_bias is False
    assert adapter_for_gguf("qwen2").model_type == "qwen2"
    assert set(ADAPTERS) == {"llama", "qwen2", "mistral"}


@pytest.mark.parametrize("bad", ["gpt2", None, "phi3"])
def test_other_architectures_are_refused_naming_the_supported_ones(bad):
    with pytest.raises(ModelError) as e:
        adapter_for({"model_type": bad}, what="model 'x'")
    msg = str(e.value)
    assert "\n" not in msg and repr(bad) in msg
    for name in ("llama (LlamaForCausalLM)", "qwen2 (Qwen2ForCausalLM)", "mistral (MistralForCausalLM)"):
        assert name in msg and name in supported_text()


def test_qwen2_subnet_config_keeps_the_layer_types_of_kept_layers():
    from transformers import Qwen2Config

    cfg = Qwen2Config(num_hidden_layers=6, use_sliding_window=True, max_window_layers=3, intermediate_size=64)
    sub = adapter_for(cfg).subnet_config(cfg, [0, 2, 4, 5], [64, 32, 64, 48])
    assert sub.num_hidden_layers == 4 and sub.intermediate_size == 64
    assert sub.layer_types == ["full_attention", "full_attention", "sliding_attention", "sliding_attention"]
    assert sub.max_window_layers == 2
    assert cfg.num_hidden_layers == 6 and len(cfg.layer_types) == 6  # the base config is untouched


def test_awq_absorb_pairs_follow_the_module_names():
    absorb = adapter_for("qwen2").awq_absorb()
    assert absorb["input_layernorm"] == ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
    assert absorb["mlp.up_proj"] == "mlp.down_proj"


def test_cli_refuses_an_unsupported_folder_in_one_line(tmp_path):
    from click.testing import CliRunner

    from hwnas.cli import main
    from tests.conftest import one_line_error

    d = tmp_path / "gpt2-like"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    res = CliRunner().invoke(main, ["extract", "--model", str(d), "--layers", "2", "--out", str(tmp_path / "o")])
    one_line_error(res, "'gpt2'", "llama (LlamaForCausalLM)", "qwen2 (Qwen2ForCausalLM)", "mistral (MistralForCausalLM)")
