"""Shared fixtures: tiny random LLaMA models and a byte-level tokenizer, built in the test."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Tests never write to the user's ~/.cache/hwnas, except the real-model cache (shared, read-mostly)."""
    if "HWNAS_TEST_KEEP_CACHE" not in os.environ:
        monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "hwnas-cache"))


def make_tiny_llama(layers: int = 4, hidden: int = 64, mlp: int = 128, vocab: int = 300, seed: int = 0, tie: bool = True):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=256, tie_word_embeddings=tie,
        bos_token_id=None, eos_token_id=2, pad_token_id=0,
    )
    model = LlamaForCausalLM(cfg).eval()
    # Random init gives near-uniform MLPs; scale some channels so importance ordering matters.
    with torch.no_grad():
        for layer in model.model.layers:
            s = torch.rand(mlp) * 3
            layer.mlp.up_proj.weight.mul_(s[:, None])
    return model


def make_tiny_tokenizer(vocab: int = 300):
    """A byte-level tokenizer over 256 bytes + specials, vocab fits the tiny model."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # sorted: alphabet() comes in hash-set order, which differs from one process to the next
    byte_vocab = {t: i + 3 for i, t in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    byte_vocab.update({"<pad>": 0, "<s>": 1, "</s>": 2})
    tok = Tokenizer(models.BPE(vocab=byte_vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", bos_token="<s>")


# A target for tiny models: f32 numerics, a short workload, few repeats (fast, deterministic enough).
TINY_TARGET = """
name = "tiny"
[openvino]
INFERENCE_PRECISION_HINT = "f32"
NUM_STREAMS = 1
[workload]
prompt_tokens = 8
new_tokens = 4
batch_sizes = [1]
[measure]
warmup = 1
repeats = 2
max_remeasure = 0
"""


def one_line_error(result, *needles):
    """The CLI's error contract: exit code 2, one line starting with "Error: ", naming the bad value."""
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture
def tiny_llama():
    return make_tiny_llama()


@pytest.fixture
def tiny_tokenizer():
    return make_tiny_tokenizer()


@pytest.fixture
def tiny_model_dir(tmp_path):
    """A tiny random LLaMA saved as a Hugging Face folder (model + tokenizer)."""
    model = make_tiny_llama()
    tok = make_tiny_tokenizer()
    d = tmp_path / "tiny-llama"
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


# Each test module belongs to one pipeline stage (hwnas/<stage>/), so `pytest -m search` runs the
# search stage's unit, integration and CLI tests together; unit / integration / cli stay folders.
STAGES = ("model", "accuracy", "hardware", "search", "train", "deploy", "shared")
STAGE_OF_MODULE = {
    "test_space": "model", "test_supernet": "model", "test_gguf_tokenizer": "model", "test_extract_cli": "model",
    "test_real_model": "model", "test_recovery": "model",
    "test_tasks": "accuracy", "test_scoring": "accuracy", "test_eval_cli": "accuracy", "test_paired": "accuracy",
    "test_fidelity": "accuracy", "test_genquality": "accuracy", "test_genquality_bundle": "accuracy",
    "test_genquality_real": "accuracy",
    "test_targets": "hardware", "test_latency_model": "hardware", "test_irexport": "hardware",
    "test_measure": "hardware", "test_profile_cli": "hardware", "test_speedups": "hardware", "test_robust": "hardware",
    "test_search": "search", "test_predictors": "search", "test_search_cli": "search",
    "test_train": "train", "test_traindata": "train", "test_train_cli": "train",
    "test_bundle": "deploy", "test_bundle_manifest": "deploy", "test_quantize_ir": "deploy",
    "test_export_cli": "deploy",
    "test_serve": "deploy", "test_serve_cli": "deploy", "test_speculative": "deploy", "test_speculative_cli": "deploy",
}


def pytest_configure(config):
    for stage in STAGES:
        config.addinivalue_line("markers", f"{stage}: tests of the hwnas.{stage} stage")


def pytest_collection_modifyitems(config, items):
    for item in items:
        stage = STAGE_OF_MODULE.get(item.module.__name__.rsplit(".", 1)[-1], "shared")
        item.add_marker(getattr(pytest.mark, stage))
