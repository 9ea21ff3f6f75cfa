"""bench/deploy_bench.py end to end on a tiny random LLaMA: every row kind is built, scored on the same report
items, paired with (b), written to the results files; a rerun takes every row's per-item results from the cache."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TINY_TARGET, bench_module

SUBNET = {"layers": [0, 2], "mlp_widths": [128, 64]}


@pytest.fixture()
def bench():
    with bench_module("deploy_bench.py", "deploy_bench_e2e") as mod:
        yield mod


def _heal_folder(model_dir: Path, out: Path) -> Path:
    from hwnas.model.loading import load_model
    from hwnas.model.space import SubnetConfig
    from hwnas.model.supernet import load_supernet
    from hwnas.train.heal import HealConfig, heal

    loaded, sn = load_supernet(str(model_dir))
    texts = [" ".join(f"word{(i * 7 + j) % 50} and more {j}" for j in range(60)) for i in range(8)]
    heal(sn, loaded.tokenizer, SubnetConfig.from_dict(SUBNET), out,
         HealConfig(steps=2, seq_len=32, batch_size=2, eval_windows=0, checkpoint_every=10, warmup_steps=1),
         texts=texts, model_record={"sha256": load_model(str(model_dir)).source.sha256()})
    return out


def test_deploy_bench_on_a_tiny_model(bench, tiny_model_dir, tmp_path):
    from hwnas.datadir import resolve_data_dir
    from hwnas.errors import DataError

    try:
        resolve_data_dir()
    except DataError:
        pytest.skip("evaluation data not available")
    target = tmp_path / "tiny.toml"
    target.write_text(TINY_TARGET)
    heal = _heal_folder(tiny_model_dir, tmp_path / "heal")
    res_dir = tmp_path / "results"
    argv = ["--model", str(tiny_model_dir), "--subnet", json.dumps(SUBNET), "--whole", "--heal", str(heal),
            "--quant", "int8", "--target", str(target), "--limit", "3", "--tasks", "arc_easy,mmlu", "--repeats", "1",
            "--out", str(tmp_path / "out"), "--results", str(res_dir), "--reuse"]
    assert bench.main(argv) == 0
    res = json.loads((res_dir / "deploy_bench.json").read_text())
    rows = {r["key"]: r for r in res["rows"]}
    assert list(rows) == ["pytorch", "nncf", "whole model int8", "subnet int8", "healed subnet int8"]
    assert res["items"] == {"arc_easy": 3, "mmlu": 3} and res["items_total"] == 6 and res["recovery"] is True
    assert rows["nncf"]["accuracy"]["vs_b"] is None and rows["nncf"]["kind"] == "openvino-nncf-int8"
    for key in ("pytorch", "whole model int8", "subnet int8", "healed subnet int8"):
        acc = rows[key]["accuracy"]
        assert acc["vs_b"]["acc_norm"]["overall"]["items"] == 6 and acc["pct"]["acc"]["overall"]["items"] == 6, key
        assert set(acc["vs_b"]["acc_norm"]["tasks"]) == {"arc_easy", "mmlu"}
    assert rows["subnet int8"]["recovery"] and rows["subnet int8"]["recovery_on"] is True
    assert rows["subnet int8"]["subnet_key"] == rows["healed subnet int8"]["subnet_key"]
    assert rows["healed subnet int8"]["heal"]["folder"] == str(heal) and rows["whole model int8"]["subnet_key"] is None
    assert all(rows[k]["accuracy_seconds"] is not None for k in rows)  # each row scored (None: from the cache)
    md = (res_dir / "deploy_bench.md").read_text()
    assert "Δ acc_norm vs (b) ± stderr [95% CI] (items)" in md and "the same 6 items in every row" in md
    assert "(e) healed subnet" in md and "hwnas INC int8, 2 heal steps |" in md and "recovery on" in md
    # a rerun reuses the bundles and scores nothing again
    assert bench.main(argv) == 0
    again = {r["key"]: r for r in json.loads((res_dir / "deploy_bench.json").read_text())["rows"]}
    assert all(again[k]["accuracy_seconds"] is None for k in again)
    assert again["subnet int8"]["accuracy"] == rows["subnet int8"]["accuracy"]
