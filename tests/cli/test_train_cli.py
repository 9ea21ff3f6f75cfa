import json

import pytest
from click.testing import CliRunner

from hwnas.cli import main

TINY = ["--seq-len", "32", "--batch-size", "2", "--val-sequences", "2", "--device", "cpu"]


@pytest.fixture
def alpaca(tmp_path):
    recs = [{"instruction": f"Repeat the number {i}.", "input": "", "output": f"{i} {i} {i}"} for i in range(30)]
    f = tmp_path / "alpaca.json"
    f.write_text(json.dumps(recs, indent=2))
    return f


def run(*args):
    return CliRunner().invoke(main, ["train", *map(str, args)], catch_exceptions=False)


def test_train_writes_a_model_folder_other_commands_accept(tiny_model_dir, alpaca, tmp_path):
    out = tmp_path / "trained"
    r = run("--model", tiny_model_dir, "--data", alpaca, "--steps", 2, "--out", out, "--distill", "--k", 1, *TINY)
    assert r.exit_code == 0, r.output
    assert "trained 2 steps" in r.output and "smallest" in r.output and "->" in r.output
    meta = json.loads((out / "hwnas_supernet.json").read_text())
    assert meta["training"]["data"]["format"] == "alpaca" and meta["training"]["config"]["distill"] is True
    assert meta["channels_ordered"] and meta["space"]["num_layers"] == 4
    from hwnas.model.loading import load_model

    loaded = load_model(str(out))
    assert loaded.supernet_meta["training"]["config"]["steps"] == 2
    # the trained folder is itself a valid --model for training
    r2 = run("--model", out, "--data", alpaca, "--steps", 1, "--out", tmp_path / "again", *TINY)
    assert r2.exit_code == 0, r2.output
    meta2 = json.loads((tmp_path / "again" / "hwnas_supernet.json").read_text())
    assert meta2["previous_training"][0]["config"]["steps"] == 2


@pytest.mark.parametrize("args,msg", [
    (["--steps", "0"], "steps=0 is invalid; give at least 1 training step"),
    (["--steps", "2", "--strategy", "full", "--distill"], "distillation needs"),
    (["--steps", "2", "--device", "tpu"], "device 'tpu' is not supported"),
])
def test_bad_options_are_one_line_errors(tiny_model_dir, alpaca, tmp_path, args, msg):
    r = run("--model", tiny_model_dir, "--data", alpaca, "--out", tmp_path / "o", *TINY, *args)
    assert r.exit_code == 2
    assert msg in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()


def test_bad_data_and_occupied_out(tiny_model_dir, alpaca, tmp_path):
    bad = tmp_path / "data.csv"
    bad.write_text("a,b\n1,2\n")
    r = run("--model", tiny_model_dir, "--data", bad, "--steps", 1, "--out", tmp_path / "o", *TINY)
    assert r.exit_code == 2 and "unknown format '.csv'" in r.output
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    r = run("--model", tiny_model_dir, "--data", empty, "--steps", 1, "--out", tmp_path / "o", *TINY)
    assert r.exit_code == 2 and "holds no examples" in r.output
    out = tmp_path / "run"
    assert run("--model", tiny_model_dir, "--data", alpaca, "--steps", 1, "--out", out, *TINY).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    r = run("--model", tiny_model_dir, "--data", alpaca, "--steps", 2, "--out", out, *TINY)
    assert r.exit_code == 2 and "holds a different training run" in r.output and "config.steps" in r.output
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_help_lists_the_documented_options():
    r = CliRunner().invoke(main, ["train", "--help"])
    assert r.exit_code == 0
    for opt in ("--data", "--steps", "--max-steps", "--out", "--strategy", "--k", "--distill", "--lr", "--batch-size",
                "--seq-len", "--grad-accum", "--checkpoint-every", "--resume", "--device", "--seed", "--precision",
                "--grad-checkpointing"):
        assert opt in r.output, opt
