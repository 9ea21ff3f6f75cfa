"""`hwnas heal` through click's runner on a tiny model: a heal folder that eval and export accept."""
import json

from click.testing import CliRunner

from hwnas.cli import main
from tests.cli.test_eval_cli import data_dir  # noqa: F401  (fixture)

SUBNET = '{"layers": [0, 1, 3], "mlp_widths": [64, 128, 64]}'
TINY = ["--steps", "3", "--seq-len", "16", "--batch-size", "2", "--checkpoint-every", "1", "--quiet"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _texts(tmp_path):
    f = tmp_path / "text.jsonl"
    f.write_text("".join(json.dumps({"text": f"word{i} and word{i + 1} make a longer line of text " * 8}) + "\n"
                         for i in range(20)))
    return f


def test_heal_then_eval_scores_the_healed_subnet(tiny_model_dir, data_dir, tmp_path):  # noqa: F811
    out = tmp_path / "heal"
    r = run("heal", "--model", tiny_model_dir, "--subnet", SUBNET, "--out", out, "--data", _texts(tmp_path), *TINY)
    assert r.exit_code == 0, r.output
    assert "healed" in r.output and "3 steps" in r.output and "hwnas export --heal" in r.output
    rec = json.loads((out / "hwnas_heal.json").read_text())
    assert rec["status"] == "done" and rec["steps_done"] == 3 and rec["subnet"]["layers"] == [0, 1, 3]
    assert (out / "healed.safetensors").is_file()

    # a finished heal is not resumed, and a non-empty --out is not overwritten without --force
    r = run("heal", "--model", tiny_model_dir, "--subnet", SUBNET, "--out", out, "--data", _texts(tmp_path), *TINY)
    assert r.exit_code == 2 and "is not empty" in r.output
    r = run("heal", "--model", tiny_model_dir, "--subnet", SUBNET, "--out", out, "--data", _texts(tmp_path),
            *TINY, "--force")
    assert r.exit_code == 0, r.output

    # eval --heal takes the subnet from the heal folder and scores it paired with the full model
    res = tmp_path / "eval.json"
    r = run("eval", "--model", tiny_model_dir, "--heal", out, "--tasks", "boolq", "--data-dir", data_dir,
            "--split", "all", "--out", res)
    assert r.exit_code == 0, r.output
    doc = json.loads(res.read_text())
    assert doc["subnet"]["layers"] == [0, 1, 3]
    assert "vs_full" in json.dumps(doc) and doc["heal"]["steps"] == 3

    # the heal refuses another subnet
    r = run("eval", "--model", tiny_model_dir, "--heal", out, "--layers", "2", "--tasks", "boolq", "--data-dir", data_dir)
    assert r.exit_code == 2 and "was made for subnet" in r.output
