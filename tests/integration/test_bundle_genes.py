"""Bundles from subnets with deployment genes: every layer ships in its gene's format (IR element types,
manifest recipe, INC codes equal to the search's numpy RTN), and the runtime genes are recorded and
applied where the bundle runs (export's checks and measurement, run, serve, bench, verify).
A subnet without genes exports as before."""
from __future__ import annotations

import pytest

from hwnas.deploy.export import export_bundle
from hwnas.deploy.manifest import EXACT_PROPERTIES, read_manifest
from hwnas.deploy.quantize import make_recipe
from hwnas.model.space import SubnetConfig
from tests.conftest import TINY_TARGET_EXACT  # noqa: E402

FORMATS = (("int8", "int4_sym_g32"), ("int4_asym_g32", "f16"), ("f16", "int8"))
RUNTIME = {"KV_CACHE_PRECISION": "u8", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 32, "INFERENCE_NUM_THREADS": 1}
GENES = SubnetConfig((0, 1, 3), (128, 64, 128), weight_formats=FORMATS, head_format="f16", runtime=RUNTIME)
PLAIN = SubnetConfig((0, 1, 3), (128, 64, 128))
TINY_TARGET = TINY_TARGET_EXACT
ATTN = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
MLP = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
ELEMENT = {"int8": "i8", "int4_sym_g32": "i4", "int4_asym_g32": "u4", "f16": "f16"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tests.conftest import make_tiny_llama, make_tiny_tokenizer

    root = tmp_path_factory.mktemp("genes")
    d = root / "tiny-llama"
    make_tiny_llama().save_pretrained(d)
    make_tiny_tokenizer().save_pretrained(d)
    (root / "tiny.toml").write_text(TINY_TARGET)
    return d


@pytest.fixture(scope="module")
def genes_bundle(model_dir):
    out = model_dir.parent / "b-genes"
    return export_bundle(str(model_dir), out, recipe=make_recipe("int4", group_size=32), subnet=GENES,
                         target=str(model_dir.parent / "tiny.toml"), measure=True, generation_check=True,
                         allow_degenerate=True)  # a random tiny model's generations mean nothing; the record is kept


@pytest.fixture(scope="module")
def plain_bundle(model_dir):
    out = model_dir.parent / "b-plain"
    return export_bundle(str(model_dir), out, recipe=make_recipe("int8"), subnet=PLAIN,
                         target=str(model_dir.parent / "tiny.toml"), measure=False, generation_check=False)


def test_every_layer_in_its_genes_format(genes_bundle):
    import openvino as ov

    from hwnas.hardware.ov_compress import weight_element_types

    types = weight_element_types(ov.Core().read_model(str(genes_bundle.path / "openvino_model.xml")))
    for i, (attn, mlp) in enumerate(FORMATS):
        for proj in ATTN:
            assert types[f"model.layers.{i}.{proj}"] == ELEMENT[attn], (i, proj)
        for proj in MLP:
            assert types[f"model.layers.{i}.{proj}"] == ELEMENT[mlp], (i, proj)
    assert types["model.embed_tokens"] == "f16"  # head_format f16 (tied lm_head)
    m = read_manifest(genes_bundle.path)
    assert m.quantization["name"] == "mixed"
    layers = m.quantization["layers"]
    assert len(layers) == 3 * 7 and layers["model.layers.1.mlp.down_proj"] == "f16"
    assert layers["model.layers.1.self_attn.q_proj"] == "int4_asym_g32"
    assert m.quantization["head"] == "f16"
    assert m.ir["compressed"] == {"i8": 7, "i4": 3, "u4": 4, "f16": 8}  # 4+3 int8, 3 i4, 4 u4, 3+4 f16 + head
    assert m.subnet["weight_formats"] == [list(p) for p in FORMATS] and m.subnet["key"] == GENES.key
    assert "per-layer formats" in m.recipe.describe()


def test_runtime_genes_recorded_and_used_by_the_export(genes_bundle):
    m = read_manifest(genes_bundle.path)
    assert m.runtime["genes"] == RUNTIME
    assert m.runtime["properties"]["KV_CACHE_PRECISION"] == "u8"       # genes over the target's f32
    assert m.runtime["properties"]["INFERENCE_NUM_THREADS"] == 1
    assert m.runtime["properties"]["INFERENCE_PRECISION_HINT"] == "f32"  # the target's, untouched
    assert m.target["openvino"]["KV_CACHE_PRECISION"] == "f32"          # the profile as given
    # the smoke and generation checks decode with the shipped KV-cache precision and quantization group
    for props in (m.smoke["properties"], m.generation["properties"]):
        assert props["KV_CACHE_PRECISION"] == "u8" and props["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == "32"
        assert props["INFERENCE_PRECISION_HINT"] == "f32"
    assert m.measurement["properties"]["KV_CACHE_PRECISION"] == "u8"    # timed with them


def test_runtime_genes_applied_when_compiled(genes_bundle, plain_bundle):
    import openvino as ov

    from hwnas.deploy.settings import bundle_properties

    m = read_manifest(genes_bundle.path)
    props = bundle_properties(m)
    assert props["KV_CACHE_PRECISION"] == "u8" and props["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == 32
    compiled = ov.Core().compile_model(str(genes_bundle.path / "openvino_model.xml"), "CPU", props)
    assert compiled.get_property("KV_CACHE_PRECISION") == ov.Type.u8
    assert int(compiled.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE")) == 32
    assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 1
    # an explicit target keeps the bundle's genes over its own properties
    assert bundle_properties(m, "xeon")["KV_CACHE_PRECISION"] == "u8"
    # a bundle without genes runs with its target's properties, checks with EXACT_PROPERTIES, as before
    p = read_manifest(plain_bundle.path)
    assert p.runtime is None and p.quantization["name"] == "int8" and "layers" not in p.quantization
    assert p.smoke["properties"] == EXACT_PROPERTIES
    assert bundle_properties(p)["KV_CACHE_PRECISION"] == "f32"
    assert p.ir["compressed"] == {"i8": 22}


def test_verify_and_measure_use_the_genes(genes_bundle):
    from hwnas.deploy.verify import verify_bundle

    seen = {}

    def fake_measure(path, target):
        seen["target"] = target
        return {"tpot_ms": genes_bundle.manifest.measurement["tpot_ms"]}

    rep = verify_bundle(genes_bundle.path, generate=True, measure=True, measure_fn=fake_measure)
    assert rep.ok, rep.problems
    assert any("greedy generation" in c and "matches" in c for c in rep.checks), rep.checks
    assert seen["target"].openvino["KV_CACHE_PRECISION"] == "u8"


def test_run_and_serve_apply_the_genes(genes_bundle, monkeypatch):
    from click.testing import CliRunner

    import hwnas.deploy.runtime as runtime
    from hwnas.cli import main
    from hwnas.deploy.serving.server import prepare

    captured = {}
    real = runtime.genai_pipeline

    def spy(folder, properties=None):
        captured["props"] = dict(properties or {})
        return real(folder, properties)

    monkeypatch.setattr(runtime, "genai_pipeline", spy)
    r = CliRunner().invoke(main, ["run", str(genes_bundle.path), "-p", "hello", "--max-new-tokens", "2"])
    assert r.exit_code == 0, r.output
    assert captured["props"]["KV_CACHE_PRECISION"] == "u8" and captured["props"]["INFERENCE_NUM_THREADS"] == 1
    prep = prepare(genes_bundle.path, verify=False)
    assert prep.properties["KV_CACHE_PRECISION"] == "u8" and prep.properties["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == 32


def test_inc_codes_equal_the_searchs_rtn(model_dir):
    """What the search scores (numpy RTN, hwnas.model.rtn) is what INC ships, code for code."""
    rtn = pytest.importorskip("hwnas.model.rtn")
    from transformers import AutoModelForCausalLM

    from hwnas.deploy.mixed import layer_plan, quantize_mixed

    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    sub = SubnetConfig((0, 1, 2, 3), (128,) * 4, weight_formats=FORMATS + (("int4_sym_g16", "int4_asym_g64"),))
    plan = layer_plan(sub, model)
    float_w = {n: model.get_submodule(n).weight.detach().numpy().copy() for n in plan}
    res = quantize_mixed(model, plan, "int8")
    for name, fmt in plan.items():
        if not fmt.quantized:
            assert name in res.head_f16
            continue
        mine, theirs = rtn.quantize_rtn(float_w[name], fmt), res.weights[name]
        assert (mine.codes == theirs.codes).all(), name
        assert (mine.zero_point == theirs.zero_point).all(), name
        assert (mine.scale == theirs.scale).all(), name


def test_bad_gene_for_this_model_is_one_line(model_dir, tmp_path):
    from hwnas.errors import ExportError

    bad = SubnetConfig((0, 1), (128, 128), weight_formats=(("int8", "int8"), ("int8", "int4_sym_g256")))
    with pytest.raises(ExportError, match="group size 256 does not divide its input width 64"):
        export_bundle(str(model_dir), tmp_path / "bad", recipe=make_recipe("int8"), subnet=bad, measure=False,
                      generation_check=False)
    assert not (tmp_path / "bad").exists()


def test_data_aware_gene_calibrates_only_its_layers(model_dir):
    """A gptq- gene runs INC's GPTQ on its layers (codes differ from RTN), the RTN layers keep RTN's codes."""
    rtn = pytest.importorskip("hwnas.model.rtn")
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from hwnas.deploy.mixed import layer_plan, quantize_mixed
    from hwnas.deploy.quantize import Calibration, CalibrationInfo

    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    sub = SubnetConfig((0, 1, 2, 3), (128,) * 4,
                       weight_formats=(("gptq-int4_sym_g32", "int8"),) + (("int8", "int8"),) * 3)
    plan = layer_plan(sub, model)
    float_w = {n: model.get_submodule(n).weight.detach().numpy().copy() for n in plan}
    rng = np.random.default_rng(0)
    calib = Calibration(CalibrationInfo("test", 4, 32, 0, "0" * 64),
                        [torch.from_numpy(rng.integers(0, 300, size=(1, 32))) for _ in range(4)])
    res = quantize_mixed(model, plan, "int8", calib)
    assert res.recipe.needs_calibration and res.recipe.calibration.n_samples == 4
    differ = 0
    for name, fmt in plan.items():
        q = res.weights[name]
        if fmt.algorithm == "gptq":
            assert q.bits == 4 and q.group_size == 32 and q.symmetric
            differ += int(not np.array_equal(q.codes, rtn.quantize_rtn(float_w[name], "int4_sym_g32").codes))
        else:
            assert np.array_equal(q.codes, rtn.quantize_rtn(float_w[name], fmt).codes), name
    assert differ >= 1
