"""A bundle's runtime settings (hwnas.deploy.settings): genes over the target's properties, numerics of the
checks, the manifest record, and a bundle without genes behaving as before; the 'mixed' recipe round-trips."""
from __future__ import annotations

import pytest

from hwnas.deploy.manifest import EXACT_PROPERTIES, BundleManifest
from hwnas.deploy.quantize import QuantRecipe
from hwnas.deploy.settings import (
    bundle_properties,
    bundle_target,
    manifest_genes,
    numeric_properties,
    runtime_record,
    with_genes,
)
from hwnas.errors import ExportError
from hwnas.hardware.targets import Target, load_target


class _Host:
    physical_cores = 2
    has_bf16 = False
    has_fp16 = False
    cpu_model = "test cpu"


def _manifest(runtime=None, target=None):
    return BundleManifest(name="b", model={}, quantization={"name": "int8", "algorithm": "rtn", "bits": 8,
                                                            "group_size": -1, "sym": True},
                          files={}, target=target, runtime=runtime)


def test_genes_over_the_target():
    xeon = load_target("xeon")
    t = with_genes(xeon, {"KV_CACHE_PRECISION": "f16", "INFERENCE_NUM_THREADS": 1})
    assert t.openvino["KV_CACHE_PRECISION"] == "f16" and t.openvino["INFERENCE_NUM_THREADS"] == 1
    assert t.openvino["PERFORMANCE_HINT"] == xeon.openvino["PERFORMANCE_HINT"]
    assert with_genes(xeon, {}) is xeon


def test_numerics_of_the_checks():
    assert numeric_properties({}) == EXACT_PROPERTIES
    assert numeric_properties({"INFERENCE_NUM_THREADS": 1}) == EXACT_PROPERTIES  # threads do not change numbers
    p = numeric_properties({"KV_CACHE_PRECISION": "u8", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 32})
    assert p == {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "u8", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "32"}
    # bf16 on a host without it falls back to f32, as a target's would
    assert numeric_properties({"INFERENCE_PRECISION_HINT": "bf16"}, _Host())["INFERENCE_PRECISION_HINT"] == "f32"


def test_runtime_record_and_bundle_properties():
    xeon = load_target("xeon")
    assert runtime_record({}, xeon, _Host()) is None
    rec = runtime_record({"KV_CACHE_PRECISION": "f16"}, xeon, _Host())
    assert rec["genes"] == {"KV_CACHE_PRECISION": "f16"}
    assert rec["properties"]["KV_CACHE_PRECISION"] == "f16" and rec["properties"]["INFERENCE_NUM_THREADS"] == 2
    assert rec["properties"]["INFERENCE_PRECISION_HINT"] == "f32"   # bf16 resolved on a host without it
    m = _manifest(rec, xeon.to_dict())
    assert manifest_genes(m) == {"KV_CACHE_PRECISION": "f16"}
    assert bundle_properties(m, host=_Host())["KV_CACHE_PRECISION"] == "f16"
    assert bundle_properties(m, "edge", host=_Host())["KV_CACHE_PRECISION"] == "f16"   # genes over any target
    plain = _manifest(None, xeon.to_dict())
    assert manifest_genes(plain) == {} and bundle_properties(plain, host=_Host())["KV_CACHE_PRECISION"] == "u8"
    assert bundle_target(_manifest()) is None and bundle_properties(_manifest(), host=_Host()) == {}
    only = bundle_target(_manifest({"genes": {"NUM_STREAMS": 1}}))
    assert isinstance(only, Target) and only.openvino == {"NUM_STREAMS": 1}


def test_manifest_round_trips_runtime():
    m = _manifest({"genes": {"KV_CACHE_PRECISION": "u8"}, "properties": {}, "numerics": {}})
    back = BundleManifest.from_dict(m.to_dict())
    assert back.runtime == m.runtime
    old = m.to_dict()
    del old["runtime"], old["manifest_sha256"]   # a manifest written before runtime settings existed
    assert BundleManifest.from_dict(old, check_digest=False).runtime is None


def test_mixed_recipe_round_trips():
    r = QuantRecipe(name="mixed", algorithm="mixed", bits=None, group_size=-1, sym=True, head="f16",
                    layers=(("model.layers.0.mlp.up_proj", "int4_sym_g64"), ("model.layers.0.self_attn.q_proj", "int8"))).check()
    d = r.to_dict()
    assert d["layers"] == {"model.layers.0.mlp.up_proj": "int4_sym_g64", "model.layers.0.self_attn.q_proj": "int8"}
    assert QuantRecipe.from_dict(d) == r and not r.needs_calibration
    assert "1 int4_sym_g64" in r.describe() and "embeddings/lm_head f16" in r.describe()
    gptq = QuantRecipe(name="mixed", algorithm="mixed", bits=None, group_size=-1, sym=True,
                       layers=(("a", "gptq-int4_sym_g64"),))
    assert gptq.needs_calibration
    with pytest.raises(ExportError, match="needs a weight format per layer"):
        QuantRecipe(name="mixed", algorithm="mixed", bits=None, group_size=-1, sym=True).check()
    assert "layers" not in QuantRecipe(name="int8", algorithm="rtn", bits=8, group_size=-1, sym=True).to_dict()


def test_layer_plan_maps_genes_to_modules():
    from hwnas.deploy.mixed import element_type, layer_plan
    from hwnas.model.space import SubnetConfig
    from tests.conftest import make_tiny_llama

    from hwnas.model.dense import narrow_mlps

    m = make_tiny_llama(layers=2, hidden=64, mlp=128)
    narrow_mlps(m, [128, 32])
    sub = SubnetConfig((0, 3), (128, 32), weight_formats=(("int8", "int4_asym_g32"), ("f16", "int4_sym_g32")))
    plan = layer_plan(sub, m)
    assert len(plan) == 14 and plan["model.layers.1.mlp.down_proj"].name == "int4_sym_g32"
    assert plan["model.layers.1.self_attn.o_proj"].name == "f16" and plan["model.layers.0.self_attn.k_proj"].name == "int8"
    assert [element_type(f) for f in ("int8", "int4_sym_g32", "int4_asym_g64", "f16", "gptq-int4_asym_g32")] == \
        ["i8", "i4", "u4", "f16", "u4"]
    bad = SubnetConfig((0, 3), (128, 32), weight_formats=(("int8", "int8"), ("int8", "int4_sym_g64")))
    with pytest.raises(ExportError, match="group size 64 does not divide its input width 32"):
        layer_plan(bad, m)
    with pytest.raises(ExportError, match="needs a subnet with weight_formats"):
        layer_plan(SubnetConfig((0, 3), (128, 32)), m)
