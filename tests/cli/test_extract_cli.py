import json

import pytest
import torch
from click.testing import CliRunner

from hwnas.cli import main
from hwnas.model.loading import load_model
from hwnas.model.space import SubnetConfig


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_help_lists_extract():
    r = run("--help")
    assert r.exit_code == 0 and "extract" in r.output


def test_extract_nonuniform_roundtrip(tiny_model_dir, tmp_path):
    out = tmp_path / "sub"
    spec = json.dumps({"layers": [0, 2, 3], "mlp_widths": [128, 64, 64]})
    r = run("extract", "--model", str(tiny_model_dir), "--subnet", spec, "--out", str(out))
    assert r.exit_code == 0, r.output
    loaded = load_model(str(out))
    assert loaded.subnet == SubnetConfig((0, 2, 3), (128, 64, 64))
    assert [l.mlp.up_proj.out_features for l in loaded.model.model.layers] == [128, 64, 64]
    assert sum(p.numel() for p in loaded.model.parameters()) == loaded.subnet.n_params(load_model(str(tiny_model_dir)).config)


def test_extract_shorthand_matches_subnet_spec(tiny_model_dir, tmp_path):
    """--layers N keeps the N most important layers (ranked by block influence), prints them, and
    gives the same model as --subnet with those layers."""
    import re

    from hwnas.model.supernet import load_supernet

    a, b = tmp_path / "a", tmp_path / "b"
    r = run("extract", "--model", str(tiny_model_dir), "--layers", "2", "--mlp-width", "64", "--out", str(a))
    assert r.exit_code == 0, r.output
    _, sn = load_supernet(str(tiny_model_dir))
    want = sorted(sn.space.layer_order[:2])
    assert sn.space.layer_mode == "ranked"
    m = re.search(r"--layers 2 kept layers \[(\d+), (\d+)\] \(the most important", r.output)
    assert m and [int(m.group(1)), int(m.group(2))] == want, r.output
    assert load_model(str(a)).subnet == SubnetConfig(tuple(want), (64, 64))
    spec = json.dumps({"layers": want, "mlp_widths": [64, 64]})
    assert run("extract", "--model", str(tiny_model_dir), "--subnet", spec, "--out", str(b)).exit_code == 0
    ids = torch.randint(3, 300, (1, 8))
    la, lb = load_model(str(a)).model, load_model(str(b)).model
    with torch.no_grad():
        torch.testing.assert_close(la(input_ids=ids).logits, lb(input_ids=ids).logits)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "/nonexistent/model", "--layers", "2"], "does not exist"),
        (["--subnet", '{"layers": [0, 99], "mlp_widths": [64, 64]}'], "layer 99"),
        (["--subnet", '{"layers": [0, 1], "mlp_widths": [64, 100]}'], "width 100 is not in the search space"),
        (["--subnet", '{"layers": [0, 1], "mlp_widths": [64'], "not valid JSON"),
        (["--layers", "2", "--mlp-width", "64", "--subnet", "{}"], "not both"),
    ],
)
def test_extract_bad_input(tiny_model_dir, tmp_path, args, message):
    out = tmp_path / "out"
    if "--model" not in args:
        args = ["--model", str(tiny_model_dir)] + args
    r = run("extract", *args, "--out", str(out))
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_non_llama_folder_is_refused(tmp_path):
    d = tmp_path / "gpt2ish"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    r = run("extract", "--model", str(d), "--layers", "2", "--out", str(tmp_path / "o"))
    assert r.exit_code == 2 and "'gpt2'" in r.output and "llama" in r.output


@pytest.mark.parametrize("out", ["/proc/hwnas-test-out", "/proc/sys/hwnas-test-out/x"])
def test_unwritable_out(tiny_model_dir, out):
    """Unwritable for root too (CI runs as root, where a chmod-ed folder is writable): refused in one line, first."""
    r = run("extract", "--model", str(tiny_model_dir), "--layers", "2", "--out", out)
    assert r.exit_code == 2 and "not writable" in r.output and f"--out {out}" in r.output, r.output
    assert len([ln for ln in r.output.splitlines() if ln.strip()]) == 1


def test_out_under_a_file_is_refused(tiny_model_dir, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r = run("extract", "--model", str(tiny_model_dir), "--layers", "2", "--out", str(f))
    assert r.exit_code == 2 and "not a folder" in r.output
    r = run("extract", "--model", str(tiny_model_dir), "--layers", "2", "--out", str(f / "sub"))
    assert r.exit_code == 2 and "--out" in r.output


def test_non_empty_out_needs_force(tiny_model_dir, tmp_path):
    out = tmp_path / "full"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    r = run("extract", "--model", str(tiny_model_dir), "--layers", "2", "--out", str(out))
    assert r.exit_code == 2 and "--force" in r.output
    assert (out / "keep.txt").read_text() == "precious"
