"""Manifest round-trip and tamper detection, recipes, group sizes, archive safety, picking from a search.

No model and no OpenVINO here: bundles are fake folders checked with load=False.
"""
from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

from hwnas.deploy.archive import check_archive_members, checksum_files, extract_archive, write_archive
from hwnas.deploy.manifest import MANIFEST_FILE, BundleManifest, read_manifest
from hwnas.deploy.quantize import (
    CalibrationInfo,
    QuantizedLinear,
    QuantRecipe,
    make_recipe,
    resolve_group_size,
    rtn_int8_rows,
    valid_group_sizes,
)
from hwnas.deploy.verify import verify_bundle
from hwnas.errors import BundleError, ExportError, SearchError
from hwnas.search.picking import pick_from_search

# ----------------------------------------------------------------------------- recipes

def test_make_recipe_defaults():
    r8 = make_recipe("int8")
    assert (r8.algorithm, r8.bits, r8.group_size, r8.sym, r8.head) == ("rtn", 8, -1, True, "int8")
    r4 = make_recipe("int4")
    assert (r4.algorithm, r4.bits, r4.group_size, r4.sym) == ("rtn", 4, None, False)
    g = make_recipe("gptq-int4", group_size=32, sym=True, head="f16")
    assert (g.algorithm, g.group_size, g.sym, g.head, g.needs_calibration) == ("gptq", 32, True, "f16", True)


@pytest.mark.parametrize("name", ["int3", "INT8", "gptq", ""])
def test_unknown_quant_names_accepted_values(name):
    with pytest.raises(ExportError) as e:
        make_recipe(name)
    msg = str(e.value)
    assert repr(name) in msg and "int8" in msg and "gptq-int4" in msg and "\n" not in msg


def test_bad_head_and_group_size():
    with pytest.raises(ExportError, match="embedding/lm_head precision 'int4'"):
        make_recipe("int8", head="int4")
    with pytest.raises(ExportError, match="group size 8"):
        make_recipe("int4", group_size=8)


def test_recipe_round_trip_with_calibration():
    info = CalibrationInfo(source="calibration", n_samples=4, seq_len=64, seed=3, sha256="ab" * 32)
    r = QuantRecipe(name="gptq-int4", algorithm="gptq", bits=4, group_size=64, sym=False, head="int8", calibration=info)
    d = json.loads(json.dumps(r.to_dict()))
    assert QuantRecipe.from_dict(d) == r
    d["bits"] = 8
    with pytest.raises(ExportError, match="gptq with 4 bits"):
        QuantRecipe.from_dict(d)


def test_valid_group_sizes_from_widths():
    # SmolLM2: hidden 576, MLP 1536 (full) / 1152 (subnet): 128 divides neither 576 nor 1152's gcd.
    v = valid_group_sizes([576, 1536, 576])
    assert v[0] == -1 and 32 in v and 64 in v and 192 in v and 128 not in v
    assert all(576 % g == 0 and 1536 % g == 0 for g in v[1:])
    assert valid_group_sizes([64, 96]) == [-1, 16, 32]


def test_resolve_group_size_against_model():
    import torch.nn as nn

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(576, 32)
            self.b = nn.Linear(1152, 32)
            self.lm_head = nn.Linear(100, 7)  # excluded: lm_head follows `head`

    m = M()
    assert resolve_group_size(make_recipe("int4"), m).group_size == 64
    assert resolve_group_size(make_recipe("int8"), m).group_size == -1
    with pytest.raises(ExportError) as e:
        resolve_group_size(make_recipe("int4", group_size=128), m)
    assert "128" in str(e.value) and "576" in str(e.value) and "accepted for this model: -1" in str(e.value)


# ----------------------------------------------------------------------------- integer weights

def test_quantized_linear_dequantize_and_symmetry():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 16, size=(4, 8)).astype(np.uint8)
    scale = np.array([[0.5, 0.25]] * 4, dtype=np.float16)
    zp = np.array([[8, 3]] * 4, dtype=np.uint8)
    q = QuantizedLinear("x", bits=4, group_size=4, codes=codes, scale=scale, zero_point=zp)
    w = q.dequantize()
    expect = (codes.astype(np.float32).reshape(4, 2, 4) - zp[:, :, None]) * scale.astype(np.float32)[:, :, None]
    np.testing.assert_array_equal(w, expect.reshape(4, 8))
    assert not q.symmetric
    q2 = QuantizedLinear("y", bits=4, group_size=8, codes=codes, scale=scale[:, :1], zero_point=np.full((4, 1), 8, np.uint8))
    assert q2.symmetric and q2.signed_codes().min() >= -8 and q2.signed_codes().max() <= 7
    with pytest.raises(ExportError, match="does not divide"):
        QuantizedLinear("z", bits=4, group_size=3, codes=codes, scale=scale, zero_point=zp)
    with pytest.raises(ExportError, match="outside 0..15"):
        QuantizedLinear("z", bits=4, group_size=4, codes=codes + 16, scale=scale, zero_point=zp)


def test_rtn_int8_rows_error_bound():
    w = np.random.default_rng(1).normal(size=(10, 32)).astype(np.float32)
    q = rtn_int8_rows("emb", w)
    assert q.symmetric and q.codes.dtype == np.uint8 and q.group_size == 32
    err = np.abs(q.dequantize() - w).max(axis=1)
    assert np.all(err <= q.scale[:, 0].astype(np.float32) * 0.51 + 1e-3)


# ----------------------------------------------------------------------------- manifest

def _fake_bundle(folder, extra_manifest=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "openvino_model.xml").write_text("<net/>")
    (folder / "openvino_model.bin").write_bytes(bytes(range(256)) * 4)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "tokenizer.json").write_text("{}")
    m = BundleManifest(name=folder.name, model={"spec": "default", "kind": "default", "name": "m", "sha256": "00"},
                       quantization=make_recipe("int8").to_dict(), files=checksum_files(folder),
                       subnet={"layers": [0, 1], "mlp_widths": [64, 64], "key": "l2-x"}, seed=1,
                       measurement={"ttft_ms": 1.0, "tpot_ms": 2.0, "throughput_tok_s": 500.0},
                       **(extra_manifest or {}))
    m.write(folder)
    return m


def test_manifest_round_trip(tmp_path):
    m = _fake_bundle(tmp_path / "b")
    back = read_manifest(tmp_path / "b")
    assert back.to_dict() == m.to_dict()
    assert back.recipe == make_recipe("int8")
    assert set(back.files) == {"openvino_model.xml", "openvino_model.bin", "config.json", "tokenizer.json"}
    assert back.files["openvino_model.bin"].bytes == 1024


def test_manifest_hand_edit_detected(tmp_path):
    _fake_bundle(tmp_path / "b")
    p = tmp_path / "b" / MANIFEST_FILE
    d = json.loads(p.read_text())
    d["measurement"]["tpot_ms"] = 1.0  # someone "improves" the numbers
    p.write_text(json.dumps(d, indent=2))
    with pytest.raises(BundleError, match="modified after the bundle was built"):
        read_manifest(tmp_path / "b")
    rep = verify_bundle(tmp_path / "b", load=False)
    assert not rep.ok and "manifest_sha256" in rep.problems[0]


@pytest.mark.parametrize("edit,match", [
    (lambda d: d.update(schema_version=99), "schema_version 99"),
    (lambda d: d.update(kind="other"), "kind"),
    (lambda d: d.update(surprise=1), "unknown field 'surprise'"),
    (lambda d: d.pop("files"), "required field 'files'"),
    (lambda d: d["files"].update({"../x": {"sha256": "0", "bytes": 1}}), "leaves the bundle folder"),
    (lambda d: d["quantization"].update(name="int3"), "unknown quantization 'int3'"),
])
def test_manifest_schema_errors(edit, match):
    import hashlib

    from hwnas.deploy.manifest import _canonical

    m = BundleManifest(name="b", model={}, quantization=make_recipe("int4", group_size=32).to_dict(), files={})
    d = m.to_dict()
    d.pop("manifest_sha256")
    edit(d)
    d["manifest_sha256"] = hashlib.sha256(_canonical(d)).hexdigest()  # a consistent digest: schema must still catch it
    with pytest.raises(BundleError, match=match):
        BundleManifest.from_dict(d)


def test_verify_files_flipped_missing_extra(tmp_path):
    b = tmp_path / "b"
    _fake_bundle(b)
    assert verify_bundle(b, load=False).ok
    data = bytearray((b / "openvino_model.bin").read_bytes())
    data[100] ^= 0x01
    (b / "openvino_model.bin").write_bytes(bytes(data))
    rep = verify_bundle(b, load=False)
    assert rep.problems == ["openvino_model.bin checksum mismatch (sha256 differs from the manifest)"]
    data[100] ^= 0x01
    (b / "openvino_model.bin").write_bytes(bytes(data))
    (b / "tokenizer.json").unlink()
    (b / "notes.txt").write_text("hi")
    rep = verify_bundle(b, load=False)
    assert sorted(rep.problems) == ["missing file tokenizer.json", "unexpected file notes.txt (not in the manifest)"]


# ----------------------------------------------------------------------------- archives

def _tar_with(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_archive_round_trip(tmp_path):
    b = tmp_path / "bundle"
    _fake_bundle(b)
    a = write_archive(b, tmp_path / "bundle.tar.gz")
    names = check_archive_members(a)
    assert all(n.startswith("bundle/") for n in names) and "bundle/" + MANIFEST_FILE in names
    with pytest.raises(Exception, match="already exists"):
        write_archive(b, a)
    folder = extract_archive(a, tmp_path / "x")
    assert folder == tmp_path / "x" / "bundle"
    assert verify_bundle(a, load=False).ok


@pytest.mark.parametrize("bad", ["../evil.txt", "bundle/../../evil.txt", "/tmp/evil.txt"])
def test_archive_with_escaping_paths_refused_before_extracting(tmp_path, bad):
    a = tmp_path / "evil.tar.gz"
    _tar_with(a, [("bundle/config.json", b"{}"), (bad, b"pwned")])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(BundleError, match="leaves the bundle folder"):
        extract_archive(a, dest)
    assert list(dest.iterdir()) == []  # nothing extracted, not even the harmless member
    assert not (tmp_path / "evil.txt").exists()
    rep = verify_bundle(a, load=False)
    assert not rep.ok and "leaves the bundle folder" in rep.problems[0]


def test_archive_with_symlink_refused(tmp_path):
    a = tmp_path / "link.tar.gz"
    with tarfile.open(a, "w:gz") as tar:
        info = tarfile.TarInfo("bundle/openvino_model.bin")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(BundleError, match="holds a link"):
        check_archive_members(a)


# ----------------------------------------------------------------------------- picking from a search

def _search_dir(tmp_path):
    d = tmp_path / "search"
    d.mkdir()
    recs = [
        {"key": "l30-full", "subnet": {"layers": list(range(30)), "mlp_widths": [1536] * 30}, "accuracy": 0.500, "tpot_ms": 20.0},
        {"key": "l24-a", "subnet": {"layers": list(range(24)), "mlp_widths": [1152] * 24}, "accuracy": 0.495, "tpot_ms": 14.0},
        {"key": "l20-b", "subnet": {"layers": list(range(20)), "mlp_widths": [1152] * 20}, "accuracy": 0.489, "tpot_ms": 12.0},
        {"key": "l16-c", "subnet": {"layers": list(range(16)), "mlp_widths": [768] * 16}, "accuracy": 0.450, "tpot_ms": 9.0},
    ]
    (d / "pareto.json").write_text(json.dumps(recs))
    (d / "candidates.jsonl").write_text("".join(json.dumps(dict(r, full_model=(i == 0))) + "\n" for i, r in enumerate(recs)))
    return d


def test_pick_rules(tmp_path):
    d = _search_dir(tmp_path)
    assert pick_from_search(d, "fastest-within 1.0").record["key"] == "l24-a"   # l20-b is 1.1 points down
    assert pick_from_search(d, "fastest-within 1.5").record["key"] == "l20-b"
    assert pick_from_search(d, "fastest-within 10").record["key"] == "l16-c"
    p = pick_from_search(d, "2")
    assert p.record["key"] == "l20-b" and p.subnet.layers == tuple(range(20)) and p.rule == "record 2 of pareto.json"
    assert pick_from_search(d, "l16-c").subnet.mlp_widths == (768,) * 16


def test_fastest_within_checks_the_report_split_and_falls_back_to_the_full_model(tmp_path, caplog):
    d = _search_dir(tmp_path)
    reports = {"l30-full": 0.52, "l24-a": 0.47, "l20-b": 0.50, "l16-c": 0.40}
    (d / "report.jsonl").write_text("".join(json.dumps({"key": k, "report": {"accuracy": v}}) + "\n" for k, v in reports.items()))
    p = pick_from_search(d, "fastest-within 1.0")  # l24-a is 5 points down on the report split, l20-b 2
    assert p.record["key"] == "l30-full" and "no subnet qualified" in p.rule
    assert "picking the full model" in caplog.text
    p = pick_from_search(d, "fastest-within 2.0")  # the report split decides (l20-b is 1.1 down on the search split)
    assert p.record["key"] == "l20-b" and p.rule == "fastest-within 2 points of the full model (report (select) split, paired)"


def test_pick_errors(tmp_path):
    d = _search_dir(tmp_path)
    with pytest.raises(SearchError, match=r"--pick 4 is beyond the Pareto front .* 4 records \(0-3\)"):
        pick_from_search(d, "4")
    with pytest.raises(SearchError, match="within 0.1 points"):
        pick_from_search(_search_dir_no_close(tmp_path), "fastest-within 0.1")
    with pytest.raises(SearchError, match="fastest-within POINTS"):
        pick_from_search(d, "fastest-within lots")
    with pytest.raises(SearchError, match="not an index, a key"):
        pick_from_search(d, "l99-nope")
    with pytest.raises(SearchError, match="no pareto.json"):
        pick_from_search(tmp_path, "0")


def _search_dir_no_close(tmp_path):
    d = tmp_path / "search2"
    d.mkdir()
    recs = [{"key": "l16-c", "subnet": {"layers": [0], "mlp_widths": [64]}, "accuracy": 0.40, "tpot_ms": 9.0}]
    (d / "pareto.json").write_text(json.dumps(recs))
    (d / "candidates.jsonl").write_text(json.dumps({"key": "full", "accuracy": 0.5, "full_model": True}) + "\n")
    return d
