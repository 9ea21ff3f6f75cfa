"""`hwnas search` through click's CliRunner: bad input, the full flow on a synthetic objective, resume,
and one real run (tiny random LLaMA, local task file, OpenVINO measurement)."""
from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from hwnas.cli import main
from hwnas.cli.search_cmd import DEFAULT_LIMIT
from hwnas.io import read_jsonl
from hwnas.model.space import SearchSpace
from hwnas.search.config import SearchConfig
from hwnas.search.loop import run_search
from hwnas.search.synthetic import SyntheticValidator
from tests.conftest import TINY_TARGET
from tests.conftest import one_line_error as _one_line_error

SPACE = SearchSpace(num_layers=10, full_width=256, widths=(64, 128, 192, 256), min_layers=5, always_keep=(0, 9))


@pytest.fixture
def tiny_task(tmp_path):
    path = tmp_path / "tinyqa.jsonl"
    with open(path, "w") as f:
        for i in range(40):
            f.write(json.dumps({"id": str(i), "question": f"what is {i} plus one?",
                                "choices": [str(i + 1), str(i + 7), "blue"], "answer": 0}) + "\n")
    return path


@pytest.fixture
def synthetic(monkeypatch):
    """Replace model loading and real validation by the synthetic objective on a small space."""
    import hwnas.cli.search_cmd as sc

    calls = {"validate": 0}

    def fake_prepare(target_spec, model, tasks, metric, limit, profile_path, data_dir, quant="int8"):
        from hwnas.hardware.targets import load_target

        target = load_target(target_spec)
        return {"target": target, "identity": {"model_sha256": f"sha-of-{model}", "tasks": tasks.split(","),
                                               "limit": limit, "target": target.name, "latency_source": "synthetic",
                                               "metric": metric}}

    def fake_build(setup, space_file, report_limit, seed, status, recovery=True, quant="int8", generation_check=True):
        v = SyntheticValidator(SPACE)

        def validate(cfg):
            calls["validate"] += 1
            return v(cfg)

        report = (lambda cfg: {"accuracy": v(cfg)["accuracy"] - 0.01, "tasks": {}}) if report_limit else None
        return SPACE, validate, report, {"model": {"spec": "synthetic"}}

    monkeypatch.setattr(sc, "prepare_search", fake_prepare)
    monkeypatch.setattr(sc, "build_validation", fake_build)
    monkeypatch.setattr(sc, "check_resources", lambda *a, **k: None)  # no model file behind the synthetic specs
    return calls


SMALL = ["--evaluations", "12", "--population", "4", "--no-progress"]


def test_search_writes_every_output(tmp_path, synthetic):
    out = tmp_path / "s"
    r = CliRunner().invoke(main, ["search", "--target", "xeon", "--out", str(out), *SMALL])
    assert r.exit_code == 0, r.output
    assert synthetic["validate"] == 12
    assert "Pareto front" in r.output and "fastest within 1 point" in r.output
    for f in ("candidates.jsonl", "pareto.json", "history.jsonl", "pareto.png", "summary.md", "config.json"):
        assert (out / f).is_file(), f
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["search"]["evaluations"] == 12 and cfg["search"]["seed"] == 0
    assert cfg["identity"]["model_sha256"] == "sha-of-default" and cfg["space"]["num_layers"] == 10
    assert "pymoo" in cfg["versions"] and "scikit-learn" in cfg["versions"]
    pareto = json.loads((out / "pareto.json").read_text())
    assert all("report" in p and "vs_full" in p for p in pareto)
    # export's --pick reads the same file
    from hwnas.search.picking import pick_from_search

    p = pick_from_search(out, "fastest-within 1.0")
    assert p.record["key"] in {x["key"] for x in pareto}


def test_live_display_runs(tmp_path, synthetic):
    r = CliRunner().invoke(main, ["search", "--out", str(tmp_path / "s"), "--evaluations", "8", "--population", "4"])
    assert r.exit_code == 0, r.output
    assert "validated 8/8" in r.output and "best accuracy at each latency" in r.output


def test_resume_finishes_without_duplicates(tmp_path, synthetic):
    out = tmp_path / "s"
    # a first run that stopped after 6 subnets (as if killed), then --resume with the full budget
    run_search(SPACE, SyntheticValidator(SPACE), SearchConfig(evaluations=6, population=4, metric="choice_kl"), out=out,
               identity={"model_sha256": "sha-of-default", "tasks": ["arc_easy", "arc_challenge", "mmlu", "piqa"],
                         "limit": DEFAULT_LIMIT, "target": "xeon", "latency_source": "synthetic", "metric": "choice_kl"})
    r = CliRunner().invoke(main, ["search", "--out", str(out), "--resume", *SMALL])
    assert r.exit_code == 0, r.output
    keys = [x["key"] for x in read_jsonl(out / "candidates.jsonl")]
    assert len(keys) == len(set(keys)) == 12 and synthetic["validate"] == 6


def test_bad_input_is_one_line_and_leaves_results_untouched(tmp_path, synthetic):
    out = tmp_path / "s"
    r = CliRunner().invoke(main, ["search", "--out", str(out), *SMALL])
    assert r.exit_code == 0, r.output
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    cases = [
        (["--target", "itanium"], ("unknown target 'itanium'", "xeon")),
        (["--objectives", "accuracy,latency"], ("'--objectives'", "'latency' is not one of", "tpot_ms")),
        (["--evaluations", "3"], ("--evaluations 3 is smaller than --population 4",)),
        (["--strategy", "bayes"], ("'--strategy'", "'bayes' is not one of", "'linas'")),
        (["--min-accuracy", "145"], ("--min-accuracy",)),
        ([], ("is not empty", "--resume")),
        (["--resume", "--model", "other"], ("--resume", "different model_sha256")),
        (["--resume", "--seed", "3"], ("--resume", "different seed")),
        (["--resume", "--metric", "acc_norm"], ("--resume", "different metric", '"choice_kl" there, "acc_norm" now')),
    ]
    for extra, needles in cases:
        args = ["search", "--out", str(out), "--evaluations", "12", "--population", "4", "--no-progress", *extra]
        r = CliRunner().invoke(main, args)
        _one_line_error(r, *needles)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_real_validation_on_a_tiny_model(tmp_path, tiny_model_dir, tiny_task):
    """Accuracy through the supernet on a local task file, latency measured with OpenVINO."""
    target = tmp_path / "tiny.toml"
    target.write_text(TINY_TARGET)
    out = tmp_path / "s"
    args = ["search", "--target", str(target), "--model", str(tiny_model_dir), "--tasks", str(tiny_task),
            "--data-dir", str(tmp_path), "--evaluations", "3", "--population", "2", "--limit", "8",
            "--report-limit", "4", "--metric", "acc_norm", "--out", str(out), "--no-progress",
            "--include-chance-tasks"]  # a random tiny model is at chance: keep its task in the pick rule so the report split is scored
    # the search ranks by acc_norm here: it is compared with eval's acc_norm below
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    recs = read_jsonl(out / "candidates.jsonl")
    assert len(recs) == 3
    full = next(x for x in recs if x["full_model"])
    assert full["subnet"] == {"layers": [0, 1, 2, 3], "mlp_widths": [128] * 4}
    for x in recs:
        assert x["latency_source"] == "measured" and x["tpot_ms"] > 0 and x["ttft_ms"] > 0
        assert set(x["tasks"]) == {"tinyqa"} and x["items"] == 8
        assert x["weight_bytes"] > 0 and x["n_params"] > 0
        # the search's accuracy of each subnet is what `hwnas eval` scores for it (same items, acc_norm)
        ev = tmp_path / f"eval-{x['key']}.json"
        r = CliRunner().invoke(main, ["eval", "--model", str(tiny_model_dir), "--subnet", json.dumps(x["subnet"]),
                                      "--tasks", str(tiny_task), "--data-dir", str(tmp_path), "--limit", "8",
                                      "--out", str(ev), "-q"])
        assert r.exit_code == 0, r.output
        want = json.loads(ev.read_text())["tasks"]["tinyqa"]
        assert want["n"] == 8 and x["accuracy"] == pytest.approx(want["acc_norm"]) and x["tasks"]["tinyqa"] == pytest.approx(want["acc_norm"])
    pareto = json.loads((out / "pareto.json").read_text())
    # a front record is scored on the report split's 4 items or says why no pick rule needed it (measured timings on a busy host can put a subnet behind the full model)
    assert pareto
    for p in pareto:
        assert (p.get("report") or {}).get("items") == 4 or p["report_skipped"], p
    reports = {x["key"]: x["report"] for x in read_jsonl(out / "report.jsonl")}
    assert reports[full["key"]]["items"] == 4   # the full model is always scored: every pick is paired with it
    # every subnet scored on the report split passed the generation screen first (generation_screen.jsonl)
    screens = {x["key"]: x["screen"] for x in read_jsonl(out / "generation_screen.jsonl")}
    scored = [k for k in reports if k != full["key"]]
    assert all(screens[k]["passed"] and screens[k]["summary"].startswith("20 prompts") for k in scored)
    assert full["key"] not in screens
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["target"]["name"] == "tiny" and cfg["items"]["search"] == {"tinyqa": 8}


@pytest.mark.parametrize("metric", ["choice_kl", "token_kl"])
def test_a_fidelity_metric_ranks_a_real_tiny_search(tmp_path, tiny_model_dir, tiny_task, monkeypatch, metric):
    """--metric choice_kl / token_kl end to end on a tiny model: records keep acc_norm and the paired
    figures, the optimiser's signal is -ln(1 + KL), and every output says what ranked the search.
    Latency is stubbed (the test above measures it with OpenVINO)."""
    from hwnas.search.validation import SubnetValidator

    (tmp_path / "wikitext2_raw").mkdir()
    (tmp_path / "wikitext2_raw" / "wiki.test.raw").write_text(" = Stars = \n Stars are hot balls of gas . " * 2000)

    def latency(self, cfg):
        return {"tpot_ms": 1.0 + cfg.num_layers + sum(cfg.mlp_widths) / 1000, "ttft_ms": 10.0,
                "throughput_tok_s": 100.0, "latency_source": "measured", "n_params": 1, "weight_bytes": 1}

    monkeypatch.setattr(SubnetValidator, "latency", latency)
    monkeypatch.setattr(SubnetValidator, "remeasure", lambda self, cfgs: {})
    target = tmp_path / "tiny.toml"
    target.write_text(TINY_TARGET)
    out = tmp_path / "s"
    r = CliRunner().invoke(main, ["search", "--metric", metric, "--target", str(target), "--model",
                                  str(tiny_model_dir), "--tasks", str(tiny_task), "--data-dir", str(tmp_path),
                                  "--evaluations", "4", "--population", "2", "--limit", "8", "--report-limit", "4",
                                  "--no-recovery", "--out", str(out), "--no-progress", "--no-generation-check"])
    assert r.exit_code == 0, r.output
    assert f"accuracy ranked by {metric}" in r.output
    assert not (out / "generation_screen.jsonl").exists()   # --no-generation-check: no screen before the report split
    recs = read_jsonl(out / "candidates.jsonl")
    assert len(recs) == 4
    for x in recs:
        assert x["signal_metric"] == metric and x["accuracy_metric"] == "acc_norm" and x["items"] == 8
        kl = x["choice_kl"] if metric == "choice_kl" else x["token_fidelity"]["kl"]
        assert x["signal"] == pytest.approx(-math.log1p(kl), abs=1e-6)
        assert x["paired"]["items"] == 8 and x["accuracy"] == x["tasks"]["tinyqa"]
        if metric == "token_kl":
            assert x["token_fidelity"]["tokens"] == 8 * 255
    full = next(x for x in recs if x["full_model"])
    assert full["signal"] == pytest.approx(0, abs=1e-6) and min(x["signal"] for x in recs) < 0
    assert any(x["predicted"] and "signal" in x["predicted"] for x in recs)  # iteration 1 was proposed on the signal
    pareto = json.loads((out / "pareto.json").read_text())
    assert pareto and all(p["signal_metric"] == metric and "vs_full" in p for p in pareto)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["search"]["metric"] == metric and cfg["identity"]["metric"] == metric and cfg["generation_check"] is False
    assert f"ranked by: {metric}" in (out / "summary.md").read_text()
