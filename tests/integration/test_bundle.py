"""A bundle built from a tiny random LLaMA subnet: loads in openvino-genai and optimum-intel, verifies,
and fails verification on every kind of tampering; bad inputs leave nothing behind."""
from __future__ import annotations

import io
import json
import shutil
import tarfile

import pytest

from hwnas.deploy.export import export_bundle
from hwnas.deploy.manifest import MANIFEST_FILE, read_manifest
from hwnas.deploy.quantize import make_recipe
from hwnas.deploy.verify import verify_bundle
from hwnas.model.space import SubnetConfig

SUBNET = SubnetConfig((0, 1, 3), (128, 64, 128))
TINY_TARGET = """
name = "tiny"
[openvino]
INFERENCE_PRECISION_HINT = "f32"
KV_CACHE_PRECISION = "f32"
NUM_STREAMS = 1
[workload]
prompt_tokens = 8
new_tokens = 4
batch_sizes = [1, 2]
[measure]
warmup = 1
repeats = 2
max_remeasure = 0
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from tests.conftest import make_tiny_llama, make_tiny_tokenizer

    root = tmp_path_factory.mktemp("bundle")
    model_dir = root / "tiny-llama"
    make_tiny_llama().save_pretrained(model_dir)
    make_tiny_tokenizer().save_pretrained(model_dir)
    target = root / "tiny.toml"
    target.write_text(TINY_TARGET)
    out = root / "b-int4"
    res = export_bundle(str(model_dir), out, recipe=make_recipe("int4", group_size=32), subnet=SUBNET,
                        target=str(target), archive=True, measure=True,
                        generation_check=False)  # a random tiny model: its generations mean nothing
    return res, model_dir


def _copy(res, tmp_path):
    dst = tmp_path / res.path.name
    shutil.copytree(res.path, dst)
    return dst


def test_layout_and_manifest(built):
    res, model_dir = built
    names = set(p.name for p in res.path.iterdir())
    for f in ("openvino_model.xml", "openvino_model.bin", "config.json", "generation_config.json",
              "openvino_tokenizer.xml", "openvino_detokenizer.xml", "tokenizer.json", MANIFEST_FILE):
        assert f in names, f
    m = read_manifest(res.path)
    assert m.subnet == {"layers": [0, 1, 3], "mlp_widths": [128, 64, 128], "key": SUBNET.key}
    assert m.quantization["name"] == "int4" and m.quantization["group_size"] == 32
    assert m.ir["compressed"] == {"u4": 21, "i8": 1}  # 3 layers x 7 linears; tied embedding/lm_head int8
    assert m.model["sha256"] and len(m.model["sha256"]) == 64
    assert m.supernet["channels_ordered"] is True
    assert m.host["fingerprint"].startswith("h-") and m.target["name"] == "tiny"
    assert m.measurement["tpot_ms"] > 0 and m.measurement["ttft_ms"] > 0 and m.measurement["throughput_tok_s"] > 0
    assert set(m.tool_versions) >= {"hwnas", "openvino", "neural-compressor", "torch", "transformers"}
    assert set(m.files) == {p.name for p in res.path.iterdir() if p.name != MANIFEST_FILE}
    cfg = json.loads((res.path / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 3 and cfg["hwnas_mlp_widths"] == [128, 64, 128]
    assert res.archive.is_file() and res.archive.name == "b-int4.tar.gz"


def test_verify_folder_and_archive(built):
    res, _ = built
    rep = verify_bundle(res.path)
    assert rep.ok, rep.problems
    assert any("matches the manifest" in c for c in rep.checks) and rep.generated is not None
    assert verify_bundle(res.archive, generate=False).ok


def test_loads_in_genai_and_optimum(built):
    import openvino_genai
    from optimum.intel import OVModelForCausalLM

    res, _ = built
    m = read_manifest(res.path)
    pipe = openvino_genai.LLMPipeline(str(res.path), "CPU", INFERENCE_PRECISION_HINT="f32", KV_CACHE_PRECISION="f32")
    cfg = openvino_genai.GenerationConfig()
    cfg.max_new_tokens = 6
    cfg.do_sample = False
    cfg.ignore_eos = True
    res_g = pipe.generate(["Hello world"], cfg)
    assert len(res_g.texts[0]) > 0

    ov_model = OVModelForCausalLM.from_pretrained(str(res.path), ov_config={"INFERENCE_PRECISION_HINT": "f32",
                                                                          "KV_CACHE_PRECISION": "f32",
                                                                          "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"})
    import torch

    ids = torch.tensor([m.smoke["prompt_ids"]])
    out = ov_model.generate(ids, max_new_tokens=len(m.smoke["tokens"]), min_new_tokens=len(m.smoke["tokens"]),
                            do_sample=False)
    assert out[0, ids.shape[1]:].tolist() == m.smoke["tokens"]  # same greedy tokens as the build-time smoke run


def test_verify_flipped_byte_in_bin(built, tmp_path):
    b = _copy(built[0], tmp_path)
    p = b / "openvino_model.bin"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x40
    p.write_bytes(bytes(data))
    rep = verify_bundle(b)
    assert rep.problems == ["openvino_model.bin checksum mismatch (sha256 differs from the manifest)"]


def test_verify_missing_and_extra_file(built, tmp_path):
    b = _copy(built[0], tmp_path)
    (b / "openvino_detokenizer.xml").unlink()
    assert verify_bundle(b).problems == ["missing file openvino_detokenizer.xml"]
    b2 = _copy(built[0], tmp_path / "x")
    (b2 / "sub").mkdir()
    (b2 / "sub" / "payload.py").write_text("print('hi')")
    assert verify_bundle(b2).problems == ["unexpected file sub/payload.py (not in the manifest)"]


def test_verify_hand_edited_manifest(built, tmp_path):
    b = _copy(built[0], tmp_path)
    p = b / MANIFEST_FILE
    d = json.loads(p.read_text())
    d["quantization"]["group_size"] = 64
    p.write_text(json.dumps(d, indent=2))
    rep = verify_bundle(b)
    assert not rep.ok and "manifest was modified" in rep.problems[0]


def test_archive_with_dotdot_refused_before_extraction(built, tmp_path):
    res, _ = built
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(res.archive, "r:gz") as src, tarfile.open(evil, "w:gz") as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        info = tarfile.TarInfo("b-int4/../../escaped.txt")
        info.size = 5
        dst.addfile(info, io.BytesIO(b"owned"))
    rep = verify_bundle(evil)
    assert not rep.ok and "leaves the bundle folder" in rep.problems[0]
    assert not list(tmp_path.rglob("escaped.txt")) and not (tmp_path.parent / "escaped.txt").exists()


def test_bad_inputs_leave_nothing(built, tmp_path):
    from hwnas.errors import DataError, ExportError, OutputError

    _, model_dir = built
    out = tmp_path / "new"
    with pytest.raises(ExportError, match="unknown quantization 'int5'"):
        export_bundle(str(model_dir), out, recipe=make_recipe("int5"), measure=False)
    with pytest.raises(DataError, match="calibration file .*nope.jsonl not found"):
        export_bundle(str(model_dir), out, recipe=make_recipe("gptq-int4"), calibration=tmp_path / "nope.jsonl",
                      measure=False)
    with pytest.raises(ExportError, match="group size 48 does not divide"):  # fails after loading, inside the build
        export_bundle(str(model_dir), out, recipe=make_recipe("int4", group_size=48), measure=False)
    assert not out.exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty; choose a new folder or pass --force"):
        export_bundle(str(model_dir), busy, recipe=make_recipe("int8"), measure=False)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]  # no *.partial left over


def test_verify_remeasure_compares_with_manifest(built):
    res, _ = built
    recorded = read_manifest(res.path).measurement["tpot_ms"]
    slow = verify_bundle(res.path, generate=False, measure=True, measure_fn=lambda p, t: {"tpot_ms": 3 * recorded})
    assert not slow.ok and "(3.00x)" in slow.problems[0]  # same host: a 3x slower bundle fails
    same = verify_bundle(res.path, generate=False, measure=True, measure_fn=lambda p, t: {"tpot_ms": 1.1 * recorded})
    assert same.ok and any("(1.10x)" in c for c in same.checks)


def test_ir_accuracy_agrees_with_torch_evaluate(tmp_path):
    """The IR scorer (used for bundles and the NNCF baseline) gives the same metrics as hwnas.accuracy.evaluate."""
    from hwnas.accuracy.evaluate import evaluate
    from hwnas.datadir import resolve_data_dir
    from hwnas.deploy.ir_accuracy import ir_accuracy
    from hwnas.errors import DataError
    from hwnas.hardware.irexport import export_ir
    from tests.conftest import make_tiny_llama, make_tiny_tokenizer

    try:
        resolve_data_dir()
    except DataError:
        pytest.skip("evaluation data not available")
    model, tok = make_tiny_llama(), make_tiny_tokenizer()
    export_ir(model, tmp_path / "ir")
    tasks = ["arc_easy", "mmlu"]  # multi-token and one-token choices
    props = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"}
    ref = evaluate(model, tok, tasks, split="report", limit=6, precision="fp32")
    for in_cache in (False, True):   # one prefill per choice, or the context once and the choices from the cache
        got = ir_accuracy(tmp_path / "ir", tok, tasks, limit=6, properties=props, context_in_cache=in_cache)
        for t in tasks:
            assert got["tasks"][t]["n"] == ref["tasks"][t]["n"] == 6
            assert got["tasks"][t]["acc"] == ref["tasks"][t]["acc"]
            assert got["tasks"][t]["acc_norm"] == ref["tasks"][t]["acc_norm"]


@pytest.mark.slow
def test_real_default_model_int4_bundle(tmp_path):
    """SmolLM2-135M: hidden 576 rules out group 128, so int4 resolves to group 64; the IR holds u4
    decoder weights and an int8 embedding, and genai generates text from the bundle."""
    import openvino as ov

    from hwnas.hardware.ov_compress import weight_element_types

    cfg = SubnetConfig(tuple(range(8)), (768,) * 8)
    # a format test on a deliberately tiny subnet (it would fail the generation check, rightly)
    res = export_bundle("default", tmp_path / "b", recipe=make_recipe("int4"), subnet=cfg, measure=False,
                        generation_check=False)
    m = res.manifest
    assert m.quantization["group_size"] == 64 and m.ir["compressed"] == {"u4": 56, "i8": 1}
    types = weight_element_types(ov.Core().read_model(str(res.path / "openvino_model.xml")))
    assert types["model.embed_tokens"] == "i8" and types["model.layers.7.mlp.down_proj"] == "u4"
    # u4 decoder (8 x (576*576*2 + 576*192*2 + 3*576*768) params / 2) + int8 embedding (49152*576), plus scales
    expect = 8 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 768) // 2 + 49152 * 576
    assert expect < (res.path / "openvino_model.bin").stat().st_size < 1.15 * expect
    rep = verify_bundle(res.path)
    assert rep.ok, rep.problems
    assert rep.generated and rep.generated.strip()
