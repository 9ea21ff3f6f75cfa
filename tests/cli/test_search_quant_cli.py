"""`hwnas search --quant auto` on a tiny random LLaMA: deployment genes searched end to end, measured with
OpenVINO as integer IRs with their runtime settings; resume with the same genes; a different gene set refused."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hwnas.cli import main
from hwnas.io import read_jsonl
from hwnas.model.space import SubnetConfig
from tests.conftest import TINY_TARGET
from tests.conftest import one_line_error


@pytest.fixture
def tiny_task(tmp_path):
    path = tmp_path / "tinyqa.jsonl"
    with open(path, "w") as f:
        for i in range(40):
            f.write(json.dumps({"id": str(i), "question": f"what is {i} plus one?",
                                "choices": [str(i + 1), str(i + 7), "blue"], "answer": 0}) + "\n")
    return path


def test_quant_auto_on_a_tiny_model(tmp_path, tiny_model_dir, tiny_task):
    target = tmp_path / "tiny.toml"
    target.write_text(TINY_TARGET)
    out = tmp_path / "s"
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"deploy": {"runtime": {"KV_CACHE_PRECISION": ["u8", "f32"],
                                                        "DYNAMIC_QUANTIZATION_GROUP_SIZE": [0],
                                                        "INFERENCE_PRECISION_HINT": []}}}))
    args = ["search", "--quant", "auto", "--space", str(space), "--target", str(target), "--model", str(tiny_model_dir),
            "--tasks", str(tiny_task), "--data-dir", str(tmp_path), "--population", "2", "--limit", "8",
            "--report-limit", "4", "--metric", "choice_kl", "--out", str(out), "--no-progress"]
    r = CliRunner().invoke(main, args + ["--evaluations", "3"])
    assert r.exit_code == 0, r.output
    recs = read_jsonl(out / "candidates.jsonl")
    assert len(recs) == 3
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["quant"] == "auto" and cfg["space"]["schema_version"] == 2
    assert cfg["space"]["deploy"]["attention_formats"] == ["int8", "int4_asym_g64", "int4_sym_g64"]
    full = next(x for x in recs if x["full_model"])
    assert full["subnet"]["weight_formats"] == [["int8", "int8"]] * 4 and full["subnet"]["head_format"] == "f16"
    for x in recs:
        sub = SubnetConfig.from_dict(x["subnet"])
        assert sub.weight_formats is not None and len(sub.weight_formats) == len(sub.layers)
        assert x["latency_source"] == "measured" and x["tpot_ms"] > 0
        # timed with its own runtime settings on top of the target's
        assert x["timed_properties"] == {"DYNAMIC_QUANTIZATION_GROUP_SIZE": 0,
                                         "KV_CACHE_PRECISION": dict(sub.runtime)["KV_CACHE_PRECISION"]}
        assert 0 < x["weight_bytes"] < 4 * x["n_params"]        # shipped bytes, not the float IR's
        assert x["paired"]["items"] == 8 and x["choice_kl"] >= 0
    # the full model in int8 (f16 head) differs from the float reference only by quantization noise
    assert full["choice_kl"] < 0.05
        # the KV-cache gene's numeric effect comes from the IR (measured once), added to the torch choice KL
        kv = dict(sub.runtime)["KV_CACHE_PRECISION"]
        assert x["choice_kl"] == pytest.approx(max(0.0, x["choice_kl_weights"] + x["runtime_kl"]), abs=2e-6)
        if kv == "f32":
            assert x["runtime_kl"] == 0.0
    pareto = json.loads((out / "pareto.json").read_text())
    assert all("weight_formats" in p["subnet"] for p in pareto)
    # the report (select) split of quantized candidates is scored through their IR with their runtime settings
    scored = [p for p in pareto if p.get("report")]
    assert scored and all(p["report"]["scored_with"] == "openvino" and p["report"]["items"] == 4 for p in scored)
    assert "## Deployment genes" in (out / "summary.md").read_text()
    # resume with the same genes validates only what is new
    r = CliRunner().invoke(main, args + ["--evaluations", "4", "--resume"])
    assert r.exit_code == 0, r.output
    assert len(read_jsonl(out / "candidates.jsonl")) == 4
    # a different gene set is refused in one line
    space.write_text(json.dumps({"deploy": {"formats": ["int8"]}}))
    r = CliRunner().invoke(main, args + ["--evaluations", "5", "--resume"])
    one_line_error(r, "different space")
    # export's --pick hands the genes to the deploy side
    from hwnas.search.picking import pick_from_search

    pick = pick_from_search(out, "fastest-within 100")
    assert pick.subnet.weight_formats is not None and pick.subnet.runtime
