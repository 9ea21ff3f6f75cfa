"""Memory / disk estimates per stage and the up-front refusal (one line, exit 2) when a stage cannot fit."""
from __future__ import annotations

import pytest

from hwnas.model import memory
from hwnas.model.memory import GB, ModelShape, ResourceError, ResourceEstimate, check_fits, estimate

LLAMA_7B = {"model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 11008,
            "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000, "tie_word_embeddings": False}


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen2-untied", "mistral"])
def test_parameter_count_matches_the_model(family):
    from tests.conftest import make_tiny_model

    model = make_tiny_model(family)
    n = sum(p.numel() for p in model.parameters())  # tied weights counted once
    assert ModelShape.from_config(model.config.to_dict()).params() == n


def test_llama2_7b_has_6_7_billion_parameters_and_needs_bf16_to_fit_24_gb():
    assert ModelShape.from_config(LLAMA_7B).params() == 6_738_415_616
    bf16 = estimate("eval", LLAMA_7B, dtype="bfloat16")
    fp32 = estimate("eval", LLAMA_7B, dtype="float32")
    assert 13 < bf16.memory_gb < 22 < fp32.memory_gb
    assert bf16.terms["weights"] == 6_738_415_616 * 2


def test_subnets_and_int4_cost_less_and_export_writes_disk():
    full = estimate("export", LLAMA_7B, quant_bits=8)
    sub = estimate("export", LLAMA_7B, quant_bits=8, subnet_fraction=0.5, ordered_cached=True)
    first = estimate("export", LLAMA_7B, quant_bits=8, subnet_fraction=0.5)
    assert first.disk_bytes - sub.disk_bytes == 6_738_415_616 * 2  # the ordered supernet is cached once
    int4 = estimate("export", LLAMA_7B, quant_bits=4)
    assert sub.disk_bytes < full.disk_bytes and int4.memory_bytes < full.memory_bytes
    assert full.disk_bytes > 6.7e9 * 2  # the float stage IR plus the int8 bundle
    est = ResourceEstimate.from_dict(full.to_dict())
    assert est == full


def test_check_fits_refuses_in_one_line_with_the_numbers(monkeypatch):
    est = estimate("export", LLAMA_7B)
    with pytest.raises(ResourceError) as e:
        check_fits(est, memory_available=8 * GB)
    msg = str(e.value)
    assert "\n" not in msg and f"needs ~{est.memory_gb:.1f} GB of memory" in msg and "has 8.0 GB available" in msg
    check_fits(est, memory_available=est.memory_bytes + 1)  # fits: no error
    with pytest.raises(ResourceError, match="writes ~.* GB, .* has 1.0 GB free"):
        check_fits(est, memory_available=10 ** 12, disk_free=GB, disk_path="/x")
    monkeypatch.setenv(memory.ENV_VAR, "off")
    check_fits(est, memory_available=GB)


def test_cli_refuses_export_before_loading_anything(tiny_model_dir, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from hwnas.cli import main
    from tests.conftest import one_line_error

    monkeypatch.setattr(memory, "available_memory", lambda: int(0.1 * GB))
    calls = []
    import hwnas.model.loading as loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: calls.append(a))
    out = tmp_path / "b"
    res = CliRunner().invoke(main, ["export", "--model", str(tiny_model_dir), "--quant", "int8", "--out", str(out)])
    one_line_error(res, "export of tiny-llama", "GB of memory, this machine has 0.1 GB available")
    assert not calls and not out.exists()
    res = CliRunner().invoke(main, ["extract", "--model", str(tiny_model_dir), "--layers", "2", "--out", str(out)])
    one_line_error(res, "extract of tiny-llama", "0.1 GB available")
    assert not calls and not out.exists()


def test_whole_model_rtn_export_reads_a_mapped_checkpoint_without_holding_it():
    """A bf16 safetensors checkpoint loaded as bf16 is memory-mapped: what must fit is the process, the
    conversion's constants and the integer codes (bench/results/scale_bench_rss.json: anonymous peak
    14.1 GB for the 7B shape), the checkpoint is `mapped_bytes`; a subnet or GPTQ still counts it."""
    W = 6_738_415_616 * 2
    mapped = estimate("export", LLAMA_7B, mapped_weights=True)
    held = estimate("export", LLAMA_7B)
    assert "weights" not in mapped.terms and mapped.mapped_bytes == W
    assert held.memory_bytes - mapped.memory_bytes == W - mapped.terms["mapped_window"]
    assert 14 < mapped.memory_gb < 16 < 22 < held.memory_gb  # admitted on a 24 GB machine only when mapped
    assert estimate("export", LLAMA_7B, mapped_weights=True, subnet_fraction=0.5).terms["weights"] == W
    assert estimate("export", LLAMA_7B, mapped_weights=True, calibrated_quant=True).terms["weights"] == W
    assert ResourceEstimate.from_dict(mapped.to_dict()) == mapped


def test_serve_holds_the_weights_once_and_the_engine_kv_pool():
    ir = 7 * GB
    est = estimate("serve", LLAMA_7B, ir_bytes=ir)
    assert est.terms == {"base": memory.BASE_SERVE, "compiled_weights": ir, "kv_cache": 1 * GB}
    assert est.mapped_bytes == ir and est.memory_bytes == memory.BASE_SERVE + ir + GB


def test_weights_mapped_only_for_safetensors_in_the_loaded_dtype(tmp_path):
    import json

    from hwnas.model.loading import ModelSource
    from hwnas.model.memory import weights_mapped

    (tmp_path / "config.json").write_text(json.dumps({"dtype": "bfloat16"}))
    src = ModelSource(str(tmp_path), "hf", tmp_path)
    assert not weights_mapped(src, "bfloat16")  # no safetensors file
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert weights_mapped(src, "bfloat16") and not weights_mapped(src, "float32")
    assert not weights_mapped(ModelSource("x.gguf", "gguf", tmp_path / "x.gguf"), "float32")


LLAMA_3B = {"model_type": "llama", "num_hidden_layers": 28, "hidden_size": 3072, "intermediate_size": 8192,
            "num_attention_heads": 24, "num_key_value_heads": 8, "vocab_size": 49152, "tie_word_embeddings": False}


def test_heal_counts_the_trained_tensors_in_float32_and_the_rest_in_the_loaded_dtype():
    sub = 24 / 28
    cheap = estimate("heal", LLAMA_3B, dtype="bfloat16", subnet_fraction=sub, batch_tokens=128, ordered_cached=True)
    trained = int(28 * (3072 * 8192 + 2 * 3072) * sub)           # down_proj and the two norms of each kept layer
    assert cheap.terms["trained_fp32"] == trained * 4 * 4          # weight, gradient, two AdamW moments
    assert cheap.terms["student_copies"] == int(28 * sub * 2 * 3072 * 8192 * 2)  # gate and up, reordered, bf16
    assert "student_fp32" not in cheap.terms and cheap.terms["weights"] == cheap.params * 2
    assert cheap.memory_bytes == sum(cheap.terms.values())
    assert cheap.memory_gb < 20  # the 3B shape's cheap heal fits a 24 GB machine (was 28.2 GB with a float32 student)
    every = estimate("heal", LLAMA_3B, dtype="bfloat16", subnet_fraction=sub, batch_tokens=128, train_mode="all")
    assert every.terms["student_copies"] == 0 and every.memory_bytes > cheap.memory_bytes
    fp32 = estimate("heal", LLAMA_3B, dtype="float32", subnet_fraction=sub, batch_tokens=128)
    assert fp32.terms["student_copies"] == 2 * cheap.terms["student_copies"]
    assert fp32.terms["trained_fp32"] == cheap.terms["trained_fp32"]


def test_heal_counts_recovery_only_beyond_the_training_phase():
    # recovery's calibration states are freed before the trained tensors are made: the larger phase counts
    tiny = {**LLAMA_3B, "num_hidden_layers": 2, "vocab_size": 1000}
    est = estimate("heal", tiny, dtype="bfloat16", subnet_fraction=0.5, batch_tokens=128)
    training = sum(v for k, v in est.terms.items() if k not in ("base", "weights", "recovery_over_training"))
    assert est.terms["recovery_over_training"] == memory._recovery_stats(ModelShape.from_config(tiny), 2) - training > 0
