"""`hwnas export / verify / run / bench` through click's CliRunner on a tiny random LLaMA."""
from __future__ import annotations

import json
import logging

import pytest
from click.testing import CliRunner

from hwnas.cli import main
from tests.conftest import TINY_TARGET
from tests.conftest import one_line_error as _one_line_error


@pytest.fixture
def search_dir(tmp_path):
    d = tmp_path / "search"
    d.mkdir()
    recs = [{"key": "l2-a", "subnet": {"layers": [0, 1], "mlp_widths": [128, 64]}, "accuracy": 0.3, "tpot_ms": 1.0}]
    (d / "pareto.json").write_text(json.dumps(recs))
    return d


def test_unknown_quant(tmp_path):
    r = CliRunner().invoke(main, ["export", "--model", "x", "--quant", "int3", "--out", str(tmp_path / "o")])
    _one_line_error(r, "'--quant'", "'int3' is not one of 'int8', 'int4', 'gptq-int4'", "did you mean 'int8'")
    assert not (tmp_path / "o").exists()


def test_bad_gene_in_subnet(tmp_path, tiny_model_dir):
    bad = {"layers": [0, 1], "mlp_widths": [128, 128], "weight_formats": [["int8", "int3"], ["int8", "int8"]]}
    r = CliRunner().invoke(main, ["export", "--model", str(tiny_model_dir), "--subnet", json.dumps(bad),
                                  "--out", str(tmp_path / "o")])
    _one_line_error(r, "'int3'", "int4_sym_gG")
    rt = {"layers": [0, 1], "mlp_widths": [128, 128], "runtime": {"KV_CACHE_PRECISION": "u2"}}
    r = CliRunner().invoke(main, ["export", "--model", str(tiny_model_dir), "--subnet", json.dumps(rt),
                                  "--out", str(tmp_path / "o")])
    _one_line_error(r, "KV_CACHE_PRECISION='u2'", "'u8'")
    grp = {"layers": [0, 1], "mlp_widths": [128, 128], "weight_formats": [["int8", "int8"], ["int4_sym_g256", "int8"]]}
    r = CliRunner().invoke(main, ["export", "--model", str(tiny_model_dir), "--subnet", json.dumps(grp), "--no-accuracy",
                                  "--no-measure", "--no-generation-check", "--quiet", "--out", str(tmp_path / "o")])
    _one_line_error(r, "int4_sym_g256", "does not divide its input width 64")
    assert not (tmp_path / "o").exists()


def test_missing_calibration(tmp_path):
    r = CliRunner().invoke(main, ["export", "--quant", "gptq-int4", "--calibration", str(tmp_path / "c.jsonl"),
                                  "--out", str(tmp_path / "o")])
    _one_line_error(r, "calibration file", "c.jsonl not found")
    assert not (tmp_path / "o").exists()


def test_pick_beyond_front(tmp_path, search_dir):
    r = CliRunner().invoke(main, ["export", "--from", str(search_dir), "--pick", "3", "--out", str(tmp_path / "o")])
    _one_line_error(r, "--pick 3 is beyond the Pareto front", "1 records (0-0)")
    r = CliRunner().invoke(main, ["export", "--from", str(search_dir), "--pick", "fastest-within 1.0", "--out", str(tmp_path / "o")])
    _one_line_error(r, "no full-model accuracy")
    assert not (tmp_path / "o").exists()


def test_nonempty_out_refused(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    r = CliRunner().invoke(main, ["export", "--out", str(out)])
    _one_line_error(r, str(out), "not empty", "--force")
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_export_verify_run_bench(tiny_model_dir, tmp_path):
    target = tmp_path / "tiny.toml"
    target.write_text(TINY_TARGET)
    out = tmp_path / "bundle"
    runner = CliRunner()
    r = runner.invoke(main, ["export", "--model", str(tiny_model_dir), "--subnet", '{"layers": [0, 2], "mlp_widths": [128, 64]}',
                             "--quant", "int8", "--target", str(target), "--out", str(out), "--no-accuracy", "--no-generation-check", "-q"])
    assert r.exit_code == 0, r.output
    assert "RTN int8 sym per-channel" in r.output and "TPOT" in r.output
    r = runner.invoke(main, ["verify", str(out)])
    assert r.exit_code == 0, r.output
    assert "ok    greedy generation of 8 tokens matches the manifest" in r.output
    r = runner.invoke(main, ["run", str(out), "--prompt", "Hello", "--max-new-tokens", "4", "--chat"])
    _one_line_error(r, "--chat: the model in", "has no chat template; run without --chat")  # the tiny tokenizer has none
    r = runner.invoke(main, ["run", str(out), "--prompt", "Hello", "--max-new-tokens", "4"])
    assert r.exit_code == 0 and r.output.strip(), r.output
    r = runner.invoke(main, ["bench", str(out), "--no-torch", "--json", str(tmp_path / "bench.json"), "-q"])
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [x["kind"] for x in rows] == ["openvino-nncf-int8", "bundle"]
    assert rows[0]["decode_speedup"] == pytest.approx(1.0) and rows[1]["size_ratio"] > 1.0  # 2 of 4 layers
    data = bytearray((out / "openvino_model.bin").read_bytes())
    data[-1] ^= 0xFF
    (out / "openvino_model.bin").write_bytes(bytes(data))
    r = runner.invoke(main, ["verify", str(out)])
    assert r.exit_code == 1 and "FAIL  openvino_model.bin" in r.output


def test_bench_shows_no_nncf_progress_without_verbose(tmp_path, tiny_model_dir, monkeypatch, caplog):
    """NNCF draws rich bars outside logging when bench builds its int8 baseline: only with -v do they show."""
    target = tmp_path / "tiny.toml"
    target.write_text(TINY_TARGET)
    out = tmp_path / "b"
    runner = CliRunner()
    r = runner.invoke(main, ["export", "--model", str(tiny_model_dir), "--target", str(target), "--quant", "int8",
                             "--no-accuracy", "--no-measure", "--no-generation-check", "--quiet", "--out", str(out)])
    assert r.exit_code == 0, r.output
    outputs = {}
    for flags in ((), ("-v",)):
        monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path / f"cache{len(flags)}"))  # the baseline is built, not cached
        if flags:   # -v's logging.basicConfig(level=INFO) is a no-op under pytest (root has handlers): set it here
            caplog.set_level(logging.INFO)
        r = runner.invoke(main, [*flags, "bench", str(out), "--no-torch", "-q"])
        assert r.exit_code == 0, r.output
        assert "openvino-nncf-int8" in r.output and "speed-up = TPOT" in r.output
        outputs[flags] = r.output
    assert "Applying Weight Compression" not in outputs[()] and "Statistics of the bitwidth" not in outputs[()]
    assert "━" not in outputs[()]                                   # no bar of any kind (and -q: not ours)
    assert "Applying Weight Compression" in outputs[("-v",)]        # what the first run would have shown
