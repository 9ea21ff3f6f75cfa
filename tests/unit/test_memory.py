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
