"""The paper's tasks through the CLI on a tiny model: `hwnas eval` scores WinoGrande and TruthfulQA as
lm-eval does, and `hwnas search --tasks winogrande` optimises and picks for that one task, honest about
chance level."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from hwnas.cli import main
from hwnas.io import read_jsonl
from tests.conftest import TINY_TARGET
from tests.unit.test_paper_tasks import TQA, WINO, _naive_partial


@pytest.fixture
def data_dir(tmp_path):
    root = tmp_path / "data"
    (root / "winogrande").mkdir(parents=True)
    wino = [dict(r, qID=f"{r['qID']}-{k}") for k in range(5) for r in WINO]  # 20 items
    (root / "winogrande" / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in wino))
    (root / "truthfulqa").mkdir()
    (root / "truthfulqa" / "mc_task.json").write_text(json.dumps(TQA * 4))
    return root


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_eval_scores_the_paper_tasks_as_lm_eval(tiny_model_dir, data_dir, tmp_path):
    from hwnas.accuracy.tasks import get_task
    from hwnas.model.loading import load_model

    out = tmp_path / "e.json"
    r = run("eval", "--model", str(tiny_model_dir), "--tasks", "winogrande,truthfulqa_mc1,truthfulqa_mc2",
            "--split", "all", "--data-dir", str(data_dir), "--precision", "fp32", "--out", str(out), "-q")
    assert r.exit_code == 0, r.output
    assert "winogrande" in r.output and "truthfulqa_mc2" in r.output
    res = json.loads(out.read_text())["tasks"]
    loaded = load_model(str(tiny_model_dir))
    docs = get_task("winogrande").docs(data_dir)
    want = np.mean([int(np.argmax(_naive_partial(loaded.model, loaded.tokenizer, d))) == d.gold for d in docs])
    assert res["winogrande"]["n"] == 20 and res["winogrande"]["acc"] == pytest.approx(want)
    assert res["winogrande"]["acc_norm"] == res["winogrande"]["acc"]
    assert res["truthfulqa_mc1"]["n"] == res["truthfulqa_mc2"]["n"] == 8
    assert 0 < res["truthfulqa_mc2"]["acc"] < 1 and res["truthfulqa_mc2"]["acc"] not in (0.25, 0.5, 0.75)


def test_eval_subnet_verdict_is_honest_about_chance(tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "s.json"
    r = run("eval", "--model", str(tiny_model_dir), "--subnet", '{"layers": [0, 2], "mlp_widths": [64, 64]}',
            "--tasks", "winogrande,truthfulqa_mc2", "--split", "all", "--data-dir", str(data_dir),
            "--precision", "fp32", "--out", str(out), "-q")
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    vs = res["vs_full"]["acc_norm"]
    assert res["vs_full"]["verdict"].startswith("within 1 point(s): no claim")
    # a random tiny model is not above chance anywhere: every task is named, and `overall` is flagged
    assert sorted(vs["chance_tasks"]) == ["truthfulqa_mc2", "winogrande"] and vs["no_task_above_chance"]
    assert vs["tasks"]["winogrande"]["chance"]["chance"] == pytest.approx(0.5)
    from hwnas.accuracy.paired import comparison_verdict

    assert comparison_verdict(vs, 1.0).startswith("within 1 point(s): no claim; the full model is not above chance")


@pytest.mark.parametrize("include", [False, True])
def test_search_on_one_task_picks_for_it_alone(tiny_model_dir, data_dir, tmp_path, monkeypatch, include):
    """`--tasks winogrande`: every record's accuracy is WinoGrande's; at chance the pick is the full
    model and summary.md says why; with --include-chance-tasks the task stays in the pick rule."""
    from hwnas.search.validation import SubnetValidator

    def latency(self, cfg):
        return {"tpot_ms": 1.0 + cfg.num_layers, "ttft_ms": 10.0, "throughput_tok_s": 100.0,
                "latency_source": "measured", "n_params": 1, "weight_bytes": 1}

    monkeypatch.setattr(SubnetValidator, "latency", latency)  # timing is tested in test_search_cli.py
    monkeypatch.setattr(SubnetValidator, "remeasure", lambda self, cfgs: {})
    target = tmp_path / "tiny.toml"
    target.write_text(TINY_TARGET)
    out = tmp_path / "s"
    r = run("search", "--target", str(target), "--model", str(tiny_model_dir), "--tasks", "winogrande",
            "--data-dir", str(data_dir), "--evaluations", "3", "--population", "3", "--limit", "6",
            "--report-limit", "6", "--metric", "acc", "--no-recovery", "--out", str(out), "--no-progress",
            *(["--include-chance-tasks"] if include else []))
    assert r.exit_code == 0, r.output
    recs = read_jsonl(out / "candidates.jsonl")
    assert len(recs) == 3 and all(set(x["tasks"]) == {"winogrande"} for x in recs)
    assert all(x["accuracy"] == x["tasks"]["winogrande"] for x in recs)
    full = next(x for x in recs if x["full_model"])
    assert full["chance"]["winogrande"]["above_chance"] is False and full["include_chance_tasks"] is include
    summary = (out / "summary.md").read_text()
    assert "## Chance level" in summary and "winogrande: full model" in summary
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["identity"]["include_chance_tasks"] is include
    if include:
        assert "Kept in the pick rule on request (--include-chance-tasks): winogrande" in summary
        assert all("at_chance" not in x["paired"] for x in recs)
    else:
        assert "above chance on no task" in summary
        assert all(x["paired"].get("at_chance") for x in recs)
        for pts in ("0.5", "1", "2"):
            assert f"- fastest within {pts} pt of the full model: no subnet qualifies; the full model" in summary
