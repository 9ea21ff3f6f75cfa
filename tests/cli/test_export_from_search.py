"""The path from a search to a checked archive, through the CLI as a user runs it, on a tiny model:
`hwnas export --from SEARCH --pick "fastest-within 1.0" --archive`, then `hwnas verify` with
--json / --no-generate / --measure, on the folder and on the archive (a tampered archive fails)."""
from __future__ import annotations

import io
import json
import tarfile

import pytest
from click.testing import CliRunner

from hwnas.cli import main
from tests.conftest import TINY_TARGET, make_tiny_llama, make_tiny_tokenizer

PICK = "fastest-within 1.0"

pytestmark = pytest.mark.precision_free  # OpenVINO paths or explicit --precision: one pass of make test


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """(search folder, bundle, archive, export output): a stubbed-latency search of a tiny model, then the export."""
    from hwnas.search.validation import SubnetValidator

    root = tmp_path_factory.mktemp("from-search")
    model = root / "tiny"
    make_tiny_llama().save_pretrained(model)
    make_tiny_tokenizer().save_pretrained(model)
    target = root / "tiny.toml"
    target.write_text(TINY_TARGET)
    with open(root / "qa.jsonl", "w") as f:
        for i in range(60):
            f.write(json.dumps({"id": str(i), "question": f"what is {i} plus one?",
                                "choices": [str(i + 1), str(i + 7), "blue"], "answer": i % 3}) + "\n")

    def latency(self, cfg):  # the search's timing is not what this test is about: fewer layers, faster
        return {"tpot_ms": 1.0 + cfg.num_layers + sum(cfg.mlp_widths) / 1000, "ttft_ms": 10.0,
                "throughput_tok_s": 100.0, "latency_source": "measured", "n_params": 1, "weight_bytes": 1}

    with pytest.MonkeyPatch.context() as mp:  # module-scoped: conftest's per-test cache isolation is not active yet
        mp.setenv("HWNAS_CACHE_DIR", str(root / "cache"))
        mp.setattr(SubnetValidator, "latency", latency)
        mp.setattr(SubnetValidator, "remeasure", lambda self, cfgs: {})
        search = root / "search"
        r = CliRunner().invoke(main, ["search", "--target", str(target), "--model", str(model), "--tasks",
                                      str(root / "qa.jsonl"), "--data-dir", str(root), "--evaluations", "4",
                                      "--population", "2", "--limit", "8", "--report-limit", "8", "--no-recovery",
                                      "--out", str(search), "--no-progress"])
        assert r.exit_code == 0, r.output
        bundle = root / "bundle"
        r = CliRunner().invoke(main, ["export", "--model", str(model), "--from", str(search), "--pick", PICK,
                                      "--target", str(target), "--out", str(bundle), "--archive", "--no-recovery",
                                      "--no-accuracy", "--no-generation-check", "-q"])
        assert r.exit_code == 0, r.output
    return search, bundle, bundle.parent / "bundle.tar.gz", r.output


def test_export_ships_the_subnet_the_pick_rule_names(shipped):
    from hwnas.deploy.manifest import read_manifest
    from hwnas.search.picking import pick_from_search

    search, bundle, archive, output = shipped
    want = pick_from_search(search, PICK)
    m = read_manifest(bundle)
    full = next(x for x in map(json.loads, (search / "candidates.jsonl").read_text().splitlines()) if x["full_model"])
    if want.record["key"] == full["key"]:
        assert m.subnet is None or m.subnet["key"] == full["key"]
    else:
        assert m.subnet["key"] == want.record["key"] and f"subnet {want.record['key']}" in output
    assert m.search["dir"] == str(search) and m.search["pick"] == want.rule
    assert m.search["record"]["key"] == want.record["key"]
    assert f"pick ({want.rule}): select split" in " ".join(output.split())
    assert f"archive {archive}" in output and archive.is_file()


def test_verify_json_no_generate_measure(shipped):
    from hwnas.deploy.manifest import read_manifest

    _, bundle, _, _ = shipped
    recorded = read_manifest(bundle).measurement["tpot_ms"]
    r = CliRunner().invoke(main, ["verify", str(bundle), "--json", "--no-generate", "--measure", "--tolerance", "50"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)  # nothing but the JSON on stdout
    assert rep["ok"] and rep["problems"] == [] and rep["generated"] is None
    assert not any("greedy generation" in c for c in rep["checks"])  # --no-generate
    assert rep["measurement"]["tpot_ms"] > 0
    assert any(c.startswith(f"TPOT {rep['measurement']['tpot_ms']:.2f} ms vs {recorded:.2f} ms in the manifest")
               for c in rep["checks"]), rep["checks"]


def test_verify_an_archive_and_refuse_a_tampered_one(shipped, tmp_path):
    _, _, archive, _ = shipped
    r = CliRunner().invoke(main, ["verify", str(archive)])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "ok    archive members are plain files inside one folder"
    assert any(x.startswith("ok    greedy generation of") and x.endswith("matches the manifest") for x in lines)
    bad = tmp_path / "tampered.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(bad, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            if member.name.endswith("openvino_model.bin"):
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    r = CliRunner().invoke(main, ["verify", str(bad)])
    assert r.exit_code == 1 and "FAIL  openvino_model.bin checksum mismatch" in r.output, r.output


def test_bench_default_path_times_both_baselines(shipped, tmp_path):
    """`hwnas bench BUNDLE` without --no-torch: the bundle against optimum-intel's NNCF int8 and PyTorch fp32."""
    _, bundle, _, _ = shipped
    out = tmp_path / "bench.json"
    r = CliRunner().invoke(main, ["bench", str(bundle), "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    rows = {x["kind"]: x for x in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"openvino-nncf-int8", "pytorch-fp32", "bundle"}
    base = rows["openvino-nncf-int8"]
    assert base["decode_speedup"] == pytest.approx(1.0)
    torch_row = rows["pytorch-fp32"]  # timed on its own: a plain ratio of TPOTs, said to carry no interval
    assert torch_row["decode_speedup"] == pytest.approx(base["tpot_ms"] / torch_row["tpot_ms"])
    assert "not interleaved" in torch_row["ratio_note"]
    b = rows["bundle"]  # interleaved with the baseline: a paired ratio inside its own interval
    lo, hi = b["decode_speedup_ci95"]
    assert b["tpot_ms"] > 0 and 0 < lo <= b["decode_speedup"] <= hi, b
    assert "speed-up = TPOT of the NNCF int8 full model / TPOT" in r.output


def _front_copy(search, root, tpot_by_key):
    """A copy of a search folder whose Pareto records get the given TPOTs and accuracies equal to the full model's."""
    import shutil

    from hwnas.io import read_jsonl

    dst = root / "search-copy"
    shutil.copytree(search, dst)
    full = next(r for r in read_jsonl(dst / "candidates.jsonl") if r.get("full_model"))
    front = json.loads((dst / "pareto.json").read_text())
    subs = [r for r in front if r["key"] != full["key"]][: len(tpot_by_key)]
    for r, tpot in zip(subs, tpot_by_key):
        paired = {"points": 0.0, "stderr": 0.5, "items": 8}
        r.update(tpot_ms=tpot, accuracy=full["accuracy"], paired=paired,
                 report={"accuracy": full["accuracy"], "paired": paired, "split": "select"})
        r.pop("vs_full", None)
    (dst / "pareto.json").write_text(json.dumps(subs + [r for r in front if r not in subs]))
    return dst, [r["key"] for r in subs]


def test_a_pick_that_fails_the_generation_check_gives_way_to_the_next(shipped, tmp_path, monkeypatch):
    """`--pick fastest-within X`: when the picked candidate's bundle fails the generation check, nothing is written
    for it and the next fastest candidate the rule allows is exported instead (recorded in the manifest); when
    there is no other candidate the export fails in one line."""
    from hwnas.accuracy.genquality import DegenerateGenerationError
    from hwnas.deploy import export as export_mod
    from hwnas.deploy.manifest import read_manifest
    from hwnas.search.picking import pick_from_search

    search, _, _, _ = shipped
    copy, keys = _front_copy(search, tmp_path, [1.0, 2.0])
    if len(keys) < 2:
        pytest.skip("the tiny search left fewer than two subnets on its front")
    first = pick_from_search(copy, PICK).record["key"]
    assert first == keys[0] and pick_from_search(copy, PICK, exclude=[first]).record["key"] == keys[1]
    calls = []

    def failing_first(folder, src, run, thresholds, allow_degenerate):
        calls.append(folder)
        if len(calls) == 1:
            raise DegenerateGenerationError("generation check: 20 prompts, prefix 0.01 (FAIL: a test)")
        return None   # as with --no-generation-check: no record

    monkeypatch.setattr(export_mod, "_generation", failing_first)
    args = ["export", "--model", str(search.parent / "tiny"), "--from", str(copy), "--pick", PICK,
            "--target", str(search.parent / "tiny.toml"), "--no-recovery", "--no-accuracy", "--no-measure", "-q"]
    r = CliRunner().invoke(main, args + ["--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    assert f"{first} fails the generation check" in r.output and len(calls) == 2
    m = read_manifest(tmp_path / "b")
    assert m.search["record"]["key"] == keys[1] and m.search["refused_by_generation_check"] == [first]
    # every candidate refused: the full model is the rule's last answer; refused too, the export fails, writes nothing
    monkeypatch.setattr(export_mod, "_generation", lambda *a: (_ for _ in ()).throw(DegenerateGenerationError("FAIL")))
    r = CliRunner().invoke(main, args + ["--out", str(tmp_path / "c")])
    assert r.exit_code == 2 and "FAIL" in r.output and not (tmp_path / "c").exists()


def test_holdout_leaves_out_the_tasks_the_search_found_at_chance(shipped, tmp_path):
    """`--from`: a task the search's full model was not above chance on is scored by neither model on the
    holdout (it supports no claim); the manifest and the printed comparison name it, the others are scored
    with the context read back from the KV cache."""
    import shutil

    from hwnas.accuracy.chance import ChanceTest
    from hwnas.deploy.manifest import read_manifest

    search, _, _, _ = shipped
    root = search.parent
    shutil.copy(root / "qa.jsonl", root / "qb.jsonl")
    copy = tmp_path / "search"
    shutil.copytree(search, copy)
    rows = [json.loads(x) for x in (copy / "candidates.jsonl").read_text().splitlines()]
    for r in rows:
        if r.get("full_model"):
            r["include_chance_tasks"] = False
            r["chance"] = {"qa": ChanceTest("qa", "acc_norm", 0.34, 1 / 3, 0.06, 60).to_dict()}
    (copy / "candidates.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "b"
    r = CliRunner().invoke(main, ["export", "--model", str(root / "tiny"), "--from", str(copy), "--pick", PICK,
                                  "--target", str(root / "tiny.toml"), "--no-recovery", "--no-measure",
                                  "--no-generation-check", "--tasks", f"{root / 'qa.jsonl'},{root / 'qb.jsonl'}",
                                  "--data-dir", str(root), "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    acc = read_manifest(out).accuracy
    assert set(acc["tasks"]) == {"qb"} and acc["scored_from"] == "context in the KV cache"
    assert "the search's full model" in acc["unscored_tasks"]["qa"]
    assert "qa" in acc["vs_full"]["acc_norm"]["chance_tasks"] and "qa" in r.output
