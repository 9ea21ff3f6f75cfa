"""`hwnas eval` through click's runner on a tiny model folder and a tiny data folder."""
import csv
import json

import pytest
from click.testing import CliRunner

from hwnas.cli import main

ARC = [
    {"id": f"Q{i}", "question": {"stem": f"Question number {i}?", "choices": [
        {"text": "alpha", "label": "A"}, {"text": "beta gamma", "label": "B"}, {"text": "delta", "label": "C"}]},
     "answerKey": "ABC"[i % 3]}
    for i in range(12)
]


def run(*args):
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def data_dir(tmp_path):
    root = tmp_path / "data"
    (root / "arc_easy").mkdir(parents=True)
    (root / "arc_easy" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ARC))
    (root / "arc_easy" / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ARC[:2]))
    (root / "boolq").mkdir()
    (root / "boolq" / "val.jsonl").write_text("".join(
        json.dumps({"question": f"is {i} even", "passage": f"Number {i}.", "idx": i, "label": i % 2 == 0}) + "\n" for i in range(8)))
    for split in ("test", "dev"):
        (root / "mmlu" / split).mkdir(parents=True)
        with open(root / "mmlu" / split / f"astronomy_{split}.csv", "w", newline="") as f:
            csv.writer(f).writerows([(f"Star {i}?", "a", "b", "c", "d", "ABCD"[i % 4]) for i in range(6)])
    (root / "wikitext2_raw").mkdir()
    (root / "wikitext2_raw" / "wiki.test.raw").write_text(" = Stars = \n Stars are hot balls of gas . " * 60)
    return root


def _reference_metrics(model_dir, data_dir, task, split, limit, shots, seed=0):
    """(acc, acc_norm) recomputed by hand: the task's own items, one unpacked fp32 forward per choice."""
    import numpy as np

    from hwnas.accuracy.tasks import parse_tasks, select
    from hwnas.model.loading import load_model
    from tests.unit.test_scoring import _naive_loglikelihoods

    loaded = load_model(str(model_dir))
    (t,) = parse_tasks(task)
    docs = t.docs(data_dir, shots=shots)
    docs = [docs[i] for i in select(t.name, [d.id for d in docs], split, limit, seed)]
    lls = _naive_loglikelihoods(loaded.model, loaded.tokenizer, docs)
    acc = np.mean([np.argmax(ll) == d.gold for ll, d in zip(lls, docs)])
    norm = np.mean([np.argmax(ll / np.array([len(c.encode()) for c in d.choices])) == d.gold
                    for ll, d in zip(lls, docs)])
    return float(acc), float(norm)


def test_eval_writes_json_and_table(tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "res" / "eval.json"
    r = run("eval", "--model", str(tiny_model_dir), "--tasks", "arc_easy,boolq,mmlu,wikitext2", "--split", "all",
            "--limit", "5", "--shots", "1", "--data-dir", str(data_dir), "--out", str(out), "--precision", "fp32", "-q")
    assert r.exit_code == 0, r.output
    assert "arc_easy" in r.output and "wikitext2" in r.output and "items/s" in r.output
    res = json.loads(out.read_text())
    assert set(res["tasks"]) == {"arc_easy", "boolq", "mmlu", "wikitext2"}
    assert res["tasks"]["arc_easy"]["n"] == 5
    # acc is what a plain forward pass per (context + choice) says, on the same items and prompts
    want_acc, want_norm = _reference_metrics(tiny_model_dir, data_dir, "arc_easy", split="all", limit=5, shots=1)
    assert res["tasks"]["arc_easy"]["acc"] == pytest.approx(want_acc)
    assert res["tasks"]["arc_easy"]["acc_norm"] == pytest.approx(want_norm)
    assert res["tasks"]["mmlu"]["shots"] == 1 and res["tasks"]["boolq"]["shots"] == 0
    assert res["tasks"]["wikitext2"]["windows"] == 5 and res["tasks"]["wikitext2"]["perplexity"] > 1
    assert res["subnet"] is None and res["subnet_key"] is None
    assert res["model"]["kind"] == "hf" and len(res["model"]["sha256"]) == 64
    assert res["seed"] == 0 and res["split"] == "all" and res["items"] == 15 and res["items_per_second"] > 0
    assert {"torch", "transformers", "hwnas"} <= set(res["versions"])


def test_subnet_perplexity_equals_extracted_model(tiny_model_dir, data_dir, tmp_path):
    spec = json.dumps({"layers": [0, 1, 3], "mlp_widths": [128, 64, 64]})
    sub = tmp_path / "sub"
    assert run("extract", "--model", str(tiny_model_dir), "--subnet", spec, "--out", str(sub)).exit_code == 0
    common = ["--tasks", "wikitext2,arc_easy", "--split", "all", "--data-dir", str(data_dir), "--precision", "fp32", "-q"]
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    ra = run("eval", "--model", str(tiny_model_dir), "--subnet", spec, "--out", str(a), *common)
    rb = run("eval", "--model", str(sub), "--out", str(b), *common)
    assert ra.exit_code == 0 and rb.exit_code == 0, ra.output + rb.output
    ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
    pa, pb = ja["tasks"]["wikitext2"]["perplexity"], jb["tasks"]["wikitext2"]["perplexity"]
    assert abs(pa - pb) / pb < 1e-3
    assert ja["tasks"]["arc_easy"]["acc"] == jb["tasks"]["arc_easy"]["acc"]
    assert ja["subnet"] == json.loads(spec) and ja["subnet_key"] == jb["subnet_key"]


def test_subnet_is_compared_with_the_full_model_on_the_same_items(tiny_model_dir, data_dir, tmp_path):
    """vs_full: the paired difference equals the difference of the two accuracies on the same items,
    with a standard error from the per-item differences; the full model's items are cached."""
    common = ["--tasks", "arc_easy,mmlu", "--split", "all", "--data-dir", str(data_dir), "--precision", "fp32", "-q"]
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    ra = run("eval", "--model", str(tiny_model_dir), "--subnet", '{"layers": [0, 2], "mlp_widths": [64, 64]}',
             "--out", str(a), *common)
    rb = run("eval", "--model", str(tiny_model_dir), "--out", str(b), *common)
    assert ra.exit_code == 0 and rb.exit_code == 0, ra.output + rb.output
    sub, full = json.loads(a.read_text()), json.loads(b.read_text())
    vs = sub["vs_full"]["acc_norm"]
    for task in ("arc_easy", "mmlu"):
        t = vs["tasks"][task]
        assert t["items"] == sub["tasks"][task]["n"]
        assert t["points"] == pytest.approx(100 * (sub["tasks"][task]["acc_norm"] - full["tasks"][task]["acc_norm"]), abs=1e-3)
        assert t["ci95"][0] <= t["points"] <= t["ci95"][1] and t["choice_kl"] >= 0
    assert vs["overall"]["points"] == pytest.approx((vs["tasks"]["arc_easy"]["points"] + vs["tasks"]["mmlu"]["points"]) / 2, abs=1e-3)
    assert sub["recovery"]["layers_refit"] == 2
    assert "same items (paired)" in " ".join(ra.output.split())


def test_layers_shorthand(tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "e.json"
    r = run("eval", "--model", str(tiny_model_dir), "--layers", "2", "--mlp-width", "64", "--tasks", "boolq",
            "--data-dir", str(data_dir), "--out", str(out), "-q")
    assert r.exit_code == 0, r.output
    from hwnas.model.supernet import load_supernet

    want = sorted(load_supernet(str(tiny_model_dir))[1].space.layer_order[:2])  # ranked: the 2 most important
    assert json.loads(out.read_text())["subnet"] == {"layers": want, "mlp_widths": [64, 64]}
    assert f"--layers 2 kept layers {want}" in r.output


@pytest.mark.parametrize("args, message", [
    (["--tasks", "arc_easy,squad"], "unknown task 'squad'"),
    (["--tasks", "piqa"], "piqa/valid.jsonl: file not found"),
    (["--subnet", '{"layers": [0, 99], "mlp_widths": [64, 64]}'], "layer 99"),
    (["--subnet", '{"layers": [0, 1'], "not valid JSON"),
    (["--model", "/nonexistent/model"], "does not exist"),
])
def test_bad_input_one_line_error(tiny_model_dir, data_dir, tmp_path, args, message):
    if "--model" not in args:
        args = ["--model", str(tiny_model_dir)] + args
    out = tmp_path / "never.json"
    r = run("eval", *args, "--data-dir", str(data_dir), "--out", str(out), "-q")
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_malformed_data_line(tiny_model_dir, data_dir, tmp_path):
    path = data_dir / "arc_easy" / "test.jsonl"
    path.write_text(path.read_text() + '{"id": "broken", \n')
    r = run("eval", "--model", str(tiny_model_dir), "--tasks", "arc_easy", "--data-dir", str(data_dir), "-q")
    assert r.exit_code == 2
    assert f"{path}:13: malformed JSON" in r.output
    assert len([line for line in r.output.splitlines() if line.strip()]) == 1


def test_out_is_a_folder(tiny_model_dir, data_dir, tmp_path):
    r = run("eval", "--model", str(tiny_model_dir), "--tasks", "boolq", "--data-dir", str(data_dir), "--out", str(tmp_path))
    assert r.exit_code == 2 and "is a folder" in r.output


@pytest.mark.slow
def test_default_model_above_chance(tmp_path):
    """The real default model: ARC-Easy above chance (25%) by more than three standard errors on 100
    items (a chance-level model fails this with probability < 0.2%), a sane WikiText-2 perplexity."""
    from hwnas.datadir import resolve_data_dir
    from hwnas.errors import DataError

    try:
        resolve_data_dir()
    except DataError:
        pytest.skip("shared data folder not present")
    out = tmp_path / "real.json"
    r = run("eval", "--model", "default", "--tasks", "arc_easy,wikitext2", "--limit", "100", "--window", "128",
            "--threads", "1", "--out", str(out), "-q")
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    arc = res["tasks"]["arc_easy"]
    assert arc["n"] == 100
    for metric in ("acc", "acc_norm"):
        assert arc[f"{metric}_stderr"] > 0 and arc[metric] - 0.25 > 3 * arc[f"{metric}_stderr"], arc
    assert 10 < res["tasks"]["wikitext2"]["perplexity"] < 80 and res["tasks"]["wikitext2"]["windows"] == 100
