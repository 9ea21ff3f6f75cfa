"""Every task mix of `eval`, `search --tasks` and `export --tasks` works or is refused in one line:
perplexity only, one multiple-choice task, several, and perplexity mixed with multiple-choice, on a
tiny model (the default export path with several tasks runs in tests/cli/test_export_default_path.py)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hwnas.cli import main
from hwnas.io import read_jsonl
from tests.conftest import TINY_TARGET
from tests.conftest import one_line_error

SUBNET = '{"layers": [0, 2], "mlp_widths": [128, 64]}'
MIXES = {"perplexity only": "wikitext2", "one multiple-choice": "qa_a.jsonl", "several multiple-choice": "qa_a.jsonl,qa_b.jsonl",
         "mixed": "qa_a.jsonl,wikitext2,qa_b.jsonl"}

pytestmark = pytest.mark.precision_free  # OpenVINO paths or explicit --precision: one pass of make test


@pytest.fixture
def data(tmp_path):
    """A data folder with WikiText-2 text and two local multiple-choice task files."""
    (tmp_path / "wikitext2_raw").mkdir()
    (tmp_path / "wikitext2_raw" / "wiki.test.raw").write_text(" = Stars = \n Stars are hot balls of gas . " * 400)
    for name, offset in (("qa_a", 1), ("qa_b", 2)):
        with open(tmp_path / f"{name}.jsonl", "w") as f:
            for i in range(40):
                f.write(json.dumps({"id": str(i), "question": f"what is {i} plus {offset}?",
                                    "choices": [str(i + offset), str(i + 7), "blue"], "answer": i % 3}) + "\n")
    return tmp_path


def tasks_arg(mix: str, data) -> str:
    return ",".join(t if t == "wikitext2" else str(data / t) for t in MIXES[mix].split(","))


def kinds(mix: str) -> tuple[set[str], set[str]]:
    """(multiple-choice task names, perplexity task names) of a mix."""
    names = MIXES[mix].split(",")
    return {n.removesuffix(".jsonl") for n in names if n != "wikitext2"}, {n for n in names if n == "wikitext2"}


@pytest.mark.parametrize("mix", list(MIXES))
def test_eval_of_a_subnet_pairs_every_mix(mix, data, tiny_model_dir, tmp_path):
    out = tmp_path / "eval.json"
    r = CliRunner().invoke(main, ["eval", "--model", str(tiny_model_dir), "--subnet", SUBNET, "--tasks", tasks_arg(mix, data),
                                  "--data-dir", str(data), "--limit", "6", "--no-recovery", "--precision", "fp32",
                                  "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    mc, ppl = kinds(mix)
    assert set(res["tasks"]) == mc | ppl
    vs = res["vs_full"]
    if mc:
        assert set(vs["acc_norm"]["tasks"]) == mc and vs["acc_norm"]["overall"]["items"] == 6 * len(mc)
        assert "same items (paired)" in " ".join(r.output.split())
    else:
        assert "acc_norm" not in vs and "acc" not in vs
    if ppl:
        ratio = vs["perplexity_ratio"]["wikitext2"]
        assert ratio == pytest.approx(res["tasks"]["wikitext2"]["perplexity"] / vs["full_perplexity"]["wikitext2"], rel=1e-3)
        assert f"(x{ratio:.3f} full)" in r.output
    else:
        assert "perplexity_ratio" not in vs


@pytest.fixture
def stub_latency(monkeypatch):
    """OpenVINO timing replaced by a formula (test_search_cli measures it for real): the mixes are about tasks."""
    from hwnas.search.validation import SubnetValidator

    def latency(self, cfg):
        return {"tpot_ms": 1.0 + cfg.num_layers + sum(cfg.mlp_widths) / 1000, "ttft_ms": 10.0,
                "throughput_tok_s": 100.0, "latency_source": "measured", "n_params": 1, "weight_bytes": 1}

    monkeypatch.setattr(SubnetValidator, "latency", latency)
    monkeypatch.setattr(SubnetValidator, "remeasure", lambda self, cfgs: {})


@pytest.mark.parametrize("mix", list(MIXES))
def test_search_runs_on_multiple_choice_mixes_and_refuses_perplexity_in_one_line(mix, data, tiny_model_dir, tmp_path,
                                                                                  stub_latency):
    target = tmp_path / "tiny.toml"
    target.write_text(TINY_TARGET)
    out = tmp_path / "s"
    r = CliRunner().invoke(main, ["search", "--target", str(target), "--model", str(tiny_model_dir), "--tasks",
                                  tasks_arg(mix, data), "--data-dir", str(data), "--evaluations", "3", "--population", "2",
                                  "--limit", "6", "--report-limit", "4", "--no-recovery", "--out", str(out), "--no-progress",
                                  "--include-chance-tasks"])  # a random tiny model is at chance; score the report anyway
    mc, ppl = kinds(mix)
    if ppl:
        one_line_error(r, "--tasks", "wikitext2 is a perplexity task", "`hwnas search` does not score",
                       "--metric token_kl")
        assert not out.exists()
        return
    assert r.exit_code == 0, r.output
    recs = read_jsonl(out / "candidates.jsonl")
    assert len(recs) == 3
    for x in recs:
        assert set(x["tasks"]) == mc and x["items"] == 6 * len(mc)
        assert x["accuracy"] == pytest.approx(sum(x["tasks"].values()) / len(mc), abs=1e-6)
    assert all(p["report"]["items"] == 4 * len(mc) for p in json.loads((out / "pareto.json").read_text()))


@pytest.mark.parametrize("mix", ["perplexity only", "mixed"])
def test_export_refuses_perplexity_tasks_in_one_line_before_loading(mix, data, tmp_path):
    """export scores multiple-choice tasks on the bundle's IR; a perplexity task would be silently unused."""
    out = tmp_path / "bundle"
    r = CliRunner().invoke(main, ["export", "--model", "no-such-model", "--tasks", tasks_arg(mix, data),
                                  "--data-dir", str(data), "--out", str(out)])
    one_line_error(r, "--tasks", "wikitext2 is a perplexity task", "`hwnas export` does not score",
                   "keep only" if mix == "mixed" else "give at least one multiple-choice task")
    assert not out.exists()
    r = CliRunner().invoke(main, ["export", "--model", "no-such-model", "--tasks", "wikitext2", "--no-accuracy",
                                  "--out", str(out)])
    assert "perplexity task" not in r.output  # --no-accuracy scores no task: nothing to refuse
