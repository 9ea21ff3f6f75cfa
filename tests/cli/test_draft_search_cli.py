"""`hwnas search --objective speculative` on a tiny random LLaMA, its bad inputs (one line, exit 2,
nothing written), and `hwnas export --speculative --from` reading its result."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hwnas.cli import main
from tests.conftest import TINY_TARGET, one_line_error


@pytest.mark.parametrize("args,needles", [
    (["--objective", "speculative", "--tasks", "piqa"], ["--tasks does not apply to --objective speculative"]),
    (["--objective", "speculative", "--evaluations", "4"], ["--evaluations does not apply to --objective speculative"]),
    (["--draft", '{"layers": [0], "mlp_widths": [8]}'], ["--draft does not apply to --objective pareto",
                                                         "option of --objective speculative"]),
    (["--max-draft-tokens", "4"], ["--max-draft-tokens does not apply to --objective pareto"]),
    (["--objective", "speculative", "--max-draft-tokens", "0"], ["--max-draft-tokens 0 is invalid; accepted: 1 to 16"]),
    (["--objective", "speculative", "--max-draft-tokens", "17"], ["--max-draft-tokens 17 is invalid"]),
    (["--objective", "speculative", "--prompts", "0"], ["--prompts 0 is invalid"]),
    (["--objective", "speculative", "--new-tokens", "1"], ["--new-tokens 1 is invalid"]),
    (["--objective", "speculative", "--target", "nosuch"], ["nosuch"]),
    (["--objective", "speculative", "--draft", "{not json"], ["{not json"]),
])
def test_bad_inputs_one_line_nothing_written(tmp_path, args, needles):
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["search", *args, "--model", "nosuch-model", "--out", str(out)])
    one_line_error(r, *needles)
    assert not out.exists()


def test_from_without_pareto_and_bad_calibration(tmp_path):
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["search", "--objective", "speculative", "--from", str(tmp_path), "--out", str(out)])
    one_line_error(r, f"--from {tmp_path} holds no pareto.json")
    r = CliRunner().invoke(main, ["search", "--objective", "speculative", "--calibration", str(tmp_path / "none.txt"),
                                  "--out", str(out)])
    one_line_error(r, "none.txt not found")
    assert not out.exists()


def test_export_from_draft_search_needs_speculative_and_a_real_pick(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "speculative.json").write_text(json.dumps({"kind": "speculative-draft-search", "identity": {},
                                                    "full_model": {"tokens_per_s": 10.0}, "chosen": {"key": "a"},
                                                    "candidates": [{"key": "a", "subnet": {"layers": [0], "mlp_widths": [8]},
                                                                    "best_k": 2, "best_tokens_per_s": 12.0,
                                                                    "best_speedup_vs_full": 1.2}]}))
    r = CliRunner().invoke(main, ["export", "--from", str(d), "--out", str(tmp_path / "o")])
    one_line_error(r, f"--from {d} is a draft search", "use it with --speculative")
    r = CliRunner().invoke(main, ["export", "--speculative", "--from", str(d), "--pick", "3", "--out", str(tmp_path / "o")])
    one_line_error(r, "--pick 3 is beyond the 1 candidates")
    assert not (tmp_path / "o").exists()


def test_draft_search_on_a_tiny_model(tiny_model_dir, tmp_path):
    target = tmp_path / "tiny.toml"
    target.write_text(TINY_TARGET)
    calib = tmp_path / "calib.txt"
    calib.write_text("\n".join(f"Document {i}: the quick brown fox jumps over the lazy dog, again and again." for i in range(6)))
    out = tmp_path / "drafts"
    args = ["search", "--objective", "speculative", "--model", str(tiny_model_dir), "--target", str(target),
            "--calibration", str(calib), "--prompts", "3", "--new-tokens", "12", "--max-draft-tokens", "3",
            "--no-recovery", "--out", str(out), "-q"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "speculative.json").read_text())
    rows = doc["candidates"]
    # 4 layers: the default rule / half cut (2 layers), the 1- and 3-layer ranked cuts; never the full model
    assert sorted(len(c["subnet"]["layers"]) for c in rows) == [1, 2, 3]
    assert doc["agreement"] == {"prompts": 3, "prompt_tokens": 32, "new_tokens": 12, "positions": 36}
    assert sorted(doc["verify_ms_of_k"], key=int) == ["1", "2", "3"] and doc["full_model"]["tpot_ms"] > 0
    speeds = {(c["key"], p["k"]): p["tokens_per_s"] for c in rows for p in c["predicted"]}
    assert len(speeds) == 9
    assert (doc["chosen"]["key"], doc["chosen"]["k"]) == max(speeds, key=speeds.get)
    assert doc["pays"] == (doc["chosen"]["tokens_per_s"] > doc["full_model"]["tokens_per_s"])
    assert ("no draft beats the full model" in r.output) != doc["pays"]
    acc = [json.loads(line) for line in (out / "acceptance.jsonl").read_text().splitlines()]
    assert len(acc) == 3 and all(len(a["agreement"]) == 3 and all(len(s) == 12 for s in a["agreement"]) for a in acc)
    for a in acc:  # the acceptance rate is the share of agreeing positions
        row = next(c for c in rows if c["key"] == a["key"])
        assert row["acceptance_rate"] == pytest.approx("".join(a["agreement"]).count("1") / 36, abs=1e-6)
    # the deeper the draft, the more it agrees with the full model (a random model, but nested layers)
    by_layers = {len(c["subnet"]["layers"]): c["acceptance_rate"] for c in rows}
    assert by_layers[3] >= by_layers[1]

    # resume: acceptance is not measured again (a changed line would be kept), the ranking is redone
    (out / "speculative.json").unlink()
    r = CliRunner().invoke(main, args + ["--resume"])
    assert r.exit_code == 0, r.output
    assert (out / "acceptance.jsonl").read_text().count("\n") == 3
    assert json.loads((out / "speculative.json").read_text())["candidates"][0]["acceptance_rate"] is not None
    r = CliRunner().invoke(main, [a if a != "12" else "16" for a in args] + ["--resume"])
    one_line_error(r, "--resume", "different agreement")
    r = CliRunner().invoke(main, args)
    one_line_error(r, "is not empty; pass --resume")


def test_export_speculative_takes_the_chosen_draft_and_k(tiny_model_dir, tmp_path):
    from hwnas.model.loading import resolve_model

    target = tmp_path / "tiny.toml"
    target.write_text(TINY_TARGET)
    d = tmp_path / "d"
    d.mkdir()
    chosen = {"layers": [0, 2], "mlp_widths": [128, 128]}
    rows = [{"key": "l2-x", "subnet": chosen, "best_k": 5, "best_tokens_per_s": 12.0, "best_speedup_vs_full": 1.2},
            {"key": "l1-y", "subnet": {"layers": [0], "mlp_widths": [128]}, "best_k": 2, "best_tokens_per_s": 9.0,
             "best_speedup_vs_full": 0.9}]
    doc = {"kind": "speculative-draft-search", "identity": {"model_sha256": resolve_model(str(tiny_model_dir)).sha256()},
           "full_model": {"tokens_per_s": 10.0}, "chosen": {"key": "l2-x"}, "candidates": rows}
    (d / "speculative.json").write_text(json.dumps(doc))
    out = tmp_path / "spec"
    r = CliRunner().invoke(main, ["export", "--speculative", "--from", str(d), "--model", str(tiny_model_dir), "--target",
                                  str(target), "--out", str(out), "--no-accuracy", "--no-measure", "--no-generation-check", "-q"])
    assert r.exit_code == 0, r.output
    spec = json.loads((out / "hwnas_speculative.json").read_text())
    assert spec["num_assistant_tokens"] == 5 and spec["draft"]["layers"] == [0, 2]
    assert spec["draft_rule"].startswith(f"draft search {d}: best predicted speed (k=5")
    assert "with 5 draft tokens per step" in r.output
    # another model than the one the draft search measured: refused before anything is built
    doc["identity"]["model_sha256"] = "0" * 64
    (d / "speculative.json").write_text(json.dumps(doc))
    r = CliRunner().invoke(main, ["export", "--speculative", "--from", str(d), "--model", str(tiny_model_dir),
                                  "--out", str(tmp_path / "o2")])
    one_line_error(r, "chose a draft for another model")
    assert not (tmp_path / "o2").exists()
