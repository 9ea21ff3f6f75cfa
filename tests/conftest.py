"""Shared fixtures: tiny random LLaMA models and a byte-level tokenizer, built in the test; an isolated
hwnas cache per session, with the real default model's converted folder shared read-only across sessions."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

SHARED_MODELS_ENV = "HWNAS_TEST_MODEL_CACHE"
CONVERSION_CODE = ("hwnas/model/loading.py", "hwnas/model/gguf_tokenizer.py")


def _session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "hwnas-cache"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch, request):
    """Every test writes hwnas's cache into this session's temp folder, never into ~/.cache/hwnas.

    The one exception is read-only: tests marked `slow` (the real default model) see the GGUF's
    converted safetensors folder through a symlink into a folder shared by all test sessions
    (see `shared_real_model`), so only the first session on a machine pays the conversion.
    Set HWNAS_TEST_KEEP_CACHE to use the real cache instead.
    """
    for var in ("COLUMNS", "LOGLEVEL", "TRANSFORMERS_VERBOSITY"):
        # The CLI sets these for its own process; recorded here so they are restored after each test.
        monkeypatch.setenv(var, os.environ.get(var, ""))
        if not os.environ[var]:
            monkeypatch.delenv(var)
    if "HWNAS_TEST_KEEP_CACHE" in os.environ:
        return
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(_session_cache(tmp_path_factory)))
    if request.node.get_closest_marker("slow") is not None:
        request.getfixturevalue("shared_real_model")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture(scope="session")
def shared_real_model(tmp_path_factory) -> Path | None:
    """The default GGUF converted once per machine, shared read-only by every test session.

    Keyed by content: the GGUF's sha256 plus a hash of the conversion code, so a changed model or
    changed conversion gets a new folder. Lives in $HWNAS_TEST_MODEL_CACHE (default
    ~/.cache/hwnas/test-models); converted in a private staging cache next to it and renamed into place whole
    (concurrent sessions race harmlessly); files made read-only. This session's temp cache gets
    models/<name> -> that folder, which is where `load_model("default")` looks. None when the
    default model is not installed (its tests then fail or skip on their own).
    """
    from hwnas.errors import ModelError
    from hwnas.model.loading import default_model_path

    try:
        gguf = default_model_path()
    except ModelError:
        return None
    digest = _sha256(gguf)
    repo = Path(__file__).resolve().parents[1]
    code = hashlib.sha256(b"".join((repo / f).read_bytes() for f in CONVERSION_CODE)).hexdigest()[:8]
    root = Path(os.environ.get(SHARED_MODELS_ENV) or Path.home() / ".cache" / "hwnas" / "test-models")
    shared = root / f"{gguf.stem}-{digest[:16]}-{code}"
    if not (shared / "config.json").is_file():
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=root))  # same file system: rename is atomic
        try:
            _convert_into(shared, staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    link = _session_cache(tmp_path_factory) / "models" / f"{gguf.stem}-{digest[:16]}"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(shared, target_is_directory=True)
    return shared


def _convert_into(shared: Path, private_cache: Path) -> None:
    from hwnas.model.loading import gguf_cache_folder, resolve_model

    old = os.environ.get("HWNAS_CACHE_DIR")
    os.environ["HWNAS_CACHE_DIR"] = str(private_cache)
    try:
        folder = gguf_cache_folder(resolve_model("default"))
    finally:
        if old is None:
            os.environ.pop("HWNAS_CACHE_DIR", None)
        else:
            os.environ["HWNAS_CACHE_DIR"] = old
    for f in folder.rglob("*"):
        if f.is_file():
            f.chmod(0o444)
    shared.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(folder, shared)
    except OSError:
        if not (shared / "config.json").is_file():  # not "another session won the race"
            raise


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


FAMILIES = ("llama", "qwen2", "qwen2-untied", "mistral")


def make_tiny_model(family: str = "llama", layers: int = 4, hidden: int = 64, mlp: int = 128, vocab: int = 300,
                    seed: int = 0):
    """A tiny random model of one supported family (hwnas.model.arch): llama, qwen2 (tied embeddings,
    q/k/v biases, sliding window above layer 2), qwen2-untied, mistral (sliding window)."""
    import torch
    import transformers

    if family == "llama":
        return make_tiny_llama(layers, hidden, mlp, vocab, seed)
    torch.manual_seed(seed)
    common = dict(hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=256,
                  bos_token_id=None, eos_token_id=2, pad_token_id=0)
    if family.startswith("qwen2"):
        cfg = transformers.Qwen2Config(**common, tie_word_embeddings=family == "qwen2", use_sliding_window=True,
                                       sliding_window=64, max_window_layers=2)
        model = transformers.Qwen2ForCausalLM(cfg).eval()
    elif family == "mistral":
        cfg = transformers.MistralConfig(**common, tie_word_embeddings=False, sliding_window=64)
        model = transformers.MistralForCausalLM(cfg).eval()
    else:
        raise ValueError(f"unknown tiny family {family!r}; one of {FAMILIES}")
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.up_proj.weight.mul_((torch.rand(mlp) * 3)[:, None])
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                if proj.bias is not None:  # random init leaves biases at zero; make them matter
                    proj.bias.normal_(0, 0.5)
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
# The same with an f32 KV cache: exact numerics, for comparing an IR's logits with the torch model's.
TINY_TARGET_EXACT = TINY_TARGET.replace('NUM_STREAMS = 1', 'KV_CACHE_PRECISION = "f32"\nNUM_STREAMS = 1')


@contextlib.contextmanager
def bench_module(script: str, name: str):
    """bench/SCRIPT imported as module `name` for the duration (benches are scripts, not a package); its
    dataclasses resolve annotations through sys.modules, so it is registered there while in use."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "bench" / script)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(name, None)


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
    "test_search": "search", "test_predictors": "search", "test_search_cli": "search", "test_search_ray_cli": "search", "test_search_batches": "search", "test_cluster_checks": "hardware", "test_draft_search": "search", "test_search_signal": "search",
    "test_draft_search_cli": "search",
    "test_train": "train", "test_traindata": "train", "test_train_cli": "train", "test_heal": "train",
    "test_heal_cli": "train",
    "test_bundle": "deploy", "test_bundle_manifest": "deploy", "test_quantize_ir": "deploy",
    "test_export_cli": "deploy", "test_deploy_bench": "deploy", "test_deploy_bench_tiny": "deploy",
    "test_serve": "deploy", "test_serve_cli": "deploy", "test_speculative": "deploy", "test_speculative_cli": "deploy",
    "test_paper_tasks": "accuracy", "test_paper_tasks_cli": "accuracy", "test_search_chance": "search",
    "test_export_default_path": "deploy", "test_export_from_search": "deploy", "test_task_mixes": "accuracy",
    "test_rtn": "model", "test_space_genes": "model", "test_genes_ir": "hardware", "test_gene_latency": "hardware",
    "test_search_genes": "search", "test_search_quant_cli": "search", "test_sensitivity": "search",
}


def pytest_configure(config):
    for stage in STAGES:
        config.addinivalue_line("markers", f"{stage}: tests of the hwnas.{stage} stage")


def pytest_collection_modifyitems(config, items):
    for item in items:
        stage = STAGE_OF_MODULE.get(item.module.__name__.rsplit(".", 1)[-1], "shared")
        item.add_marker(getattr(pytest.mark, stage))
