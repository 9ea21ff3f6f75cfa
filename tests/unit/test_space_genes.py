"""Deployment genes in the search space: per-layer weight formats, head format, runtime settings."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from hwnas.errors import InvalidSubnetError, SpaceError
from hwnas.model.deploy_space import DeploySpace, default_group_size, precision_rank
from hwnas.model.space import DEPLOY_SCHEMA_VERSION, SCHEMA_VERSION, SearchSpace, SubnetConfig

CFG = SimpleNamespace(num_hidden_layers=30, intermediate_size=1536, hidden_size=576, num_attention_heads=9,
                      num_key_value_heads=3, head_dim=64, vocab_size=49152, tie_word_embeddings=True)


def deploy_space(bf16: bool = True, **kw) -> SearchSpace:
    base = SearchSpace.from_model_config(CFG)
    return base.with_(deploy=DeploySpace.default((576,) + base.widths, has_bf16=bf16), **kw)


def test_default_genes_follow_widths_and_host():
    assert default_group_size((576, 384, 1536)) == 64
    assert default_group_size((512, 1024)) == 128
    with pytest.raises(SpaceError, match="no int4 group size"):
        default_group_size((576, 40))
    dep = DeploySpace.default((576, 1536), has_bf16=False)
    assert dep.attention_formats == ("int8", "int4_asym_g64", "int4_sym_g64")
    assert dep.head_formats == ("int8", "f16")
    assert dict(dep.runtime) == {"DYNAMIC_QUANTIZATION_GROUP_SIZE": (0, 32), "KV_CACHE_PRECISION": ("u8", "f16")}
    assert "INFERENCE_PRECISION_HINT" in dict(DeploySpace.default((576,), has_bf16=True).runtime)
    assert sorted(["int4_sym_g32", "f16", "int4_asym_g64", "int8"], key=precision_rank) == \
        ["f16", "int8", "int4_asym_g64", "int4_sym_g32"]


@pytest.mark.parametrize("mode", ["skip", "prefix", "ranked"])
def test_codec_roundtrip_with_genes(mode):
    order = tuple(int(i) for i in np.random.default_rng(1).permutation(30))
    space = deploy_space(layer_mode=mode, layer_order=order if mode == "ranked" else None)
    n = 30
    assert space.n_var == (n if mode == "skip" else 1) + n + 2 * n + 1 + 3
    xl, xu = space.bounds()
    assert list(xu[-(2 * n + 4):]) == [2] * n + [2] * n + [1] + [1, 1, 1]
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        cfg = space.sample(rng)
        assert cfg.weight_formats is not None and len(cfg.weight_formats) == len(cfg.layers)
        x = space.encode(cfg)
        assert x.shape == (space.n_var,) and np.all(x >= xl) and np.all(x <= xu)
        assert space.decode(x) == cfg
        assert space.genes.identity(x) == space.genes.identity(space.encode(space.decode(x)))
        seen.update(f for pair in cfg.weight_formats for f in pair)
    assert seen == {"int8", "int4_asym_g64", "int4_sym_g64"}
    # repair maps any vector in the box to a decodable one
    for _ in range(50):
        x = space.repair(rng.integers(xl, xu + 1), rng)
        space.decode(x)


def test_corners_are_precise_and_fast():
    space = deploy_space()
    big, small = space.largest(), space.smallest()
    assert set(big.weight_formats) == {("int8", "int8")} and big.head_format == "f16"
    assert dict(big.runtime) == {"KV_CACHE_PRECISION": "f16", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0,
                                 "INFERENCE_PRECISION_HINT": "f32"}
    assert set(small.weight_formats) == {("int4_sym_g64", "int4_sym_g64")} and small.head_format == "int8"
    assert dict(small.runtime) == {"KV_CACHE_PRECISION": "u8", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 32,
                                   "INFERENCE_PRECISION_HINT": "bf16"}
    assert big.architecture() == SearchSpace.from_model_config(CFG).largest()


def test_genes_of_dropped_layers_do_not_change_identity():
    space = deploy_space(layer_mode="prefix")
    cfg = space.smallest()
    x = space.encode(cfg)
    y = x.copy()
    a0 = space.genes.n_arch
    y[a0 + 29] = 0 if y[a0 + 29] else 1          # attention gene of layer 29, dropped in the smallest subnet
    assert space.genes.identity(x) == space.genes.identity(y)
    assert space.decode(y) == cfg


def test_a_space_without_genes_encodes_as_before():
    base = SearchSpace.from_model_config(CFG)
    assert base.n_var == 60 and base.deploy is None and base.to_dict()["schema_version"] == SCHEMA_VERSION
    assert "deploy" not in base.to_dict()
    cfg = base.largest()
    assert cfg.weight_formats is None and len(base.features(cfg)) == 62


def test_space_json_roundtrip_and_pins(tmp_path):
    space = deploy_space()
    d = space.to_dict()
    assert d["schema_version"] == DEPLOY_SCHEMA_VERSION
    back = SearchSpace.from_dict(json.loads(json.dumps(d)))
    assert back == space and back.genes == space.genes
    # a space file pins the MLP to int8 and the KV cache to u8, and drops the bf16 gene
    f = tmp_path / "space.json"
    f.write_text(json.dumps({"deploy": {"mlp_formats": ["int8"], "runtime": {"KV_CACHE_PRECISION": "u8",
                                                                             "INFERENCE_PRECISION_HINT": []}}}))
    pinned = SearchSpace.from_file(f, defaults=space)
    assert pinned.deploy.mlp_formats == ("int8",) and pinned.deploy.attention_formats == space.deploy.attention_formats
    assert dict(pinned.deploy.runtime) == {"DYNAMIC_QUANTIZATION_GROUP_SIZE": (0, 32), "KV_CACHE_PRECISION": ("u8",)}
    cfg = pinned.sample(np.random.default_rng(3))
    assert {m for _, m in cfg.weight_formats} == {"int8"} and dict(cfg.runtime)["KV_CACHE_PRECISION"] == "u8"
    toml = tmp_path / "space.toml"
    toml.write_text('[space.deploy]\nformats = ["int4_sym_g32"]\nhead_formats = ["int8"]\n')
    t = SearchSpace.from_file(toml, defaults=space)
    assert t.deploy.attention_formats == t.deploy.mlp_formats == ("int4_sym_g32",)
    off = tmp_path / "off.json"
    off.write_text(json.dumps({"deploy": None}))
    assert SearchSpace.from_file(off, defaults=space).deploy is None


@pytest.mark.parametrize("deploy,match", [
    ({"formats": ["int3"]}, "unknown weight format"),
    ({"mlp_formats": ["int4_sym_g256"]}, "does not divide"),
    ({"head_formats": ["int4"]}, "unknown head format"),
    ({"runtime": {"KV_CACHE_PRECISION": ["u4"]}}, "KV_CACHE_PRECISION"),
    ({"runtime": {"NOT_A_PROPERTY": [1]}}, "unknown runtime setting"),
    ({"formats": ["int8", "int8"]}, "twice"),
    ({"colour": "red"}, "unknown deploy key"),
    ({"formats": ["int8", "gptq-int4_sym_g64"]}, "needs calibration"),
])
def test_bad_deploy_tables_name_the_value(deploy, match):
    with pytest.raises(SpaceError, match=match):
        SearchSpace.from_dict({"deploy": deploy}, defaults=deploy_space())


def test_validate_requires_allowed_genes():
    space = deploy_space()
    cfg = space.largest()
    with pytest.raises(InvalidSubnetError, match="no weight formats"):
        space.validate(cfg.architecture())
    bad = cfg.with_deploy([("f16", "int8")] * 30, "f16", dict(cfg.runtime))
    with pytest.raises(InvalidSubnetError, match="attention format f16"):
        space.validate(bad)
    with pytest.raises(InvalidSubnetError, match="KV_CACHE_PRECISION"):
        space.validate(cfg.with_deploy(cfg.weight_formats, "f16", {**dict(cfg.runtime), "KV_CACHE_PRECISION": "bf16"}))


def test_gene_features_see_formats():
    space = deploy_space()
    big, small = space.largest(), space.smallest()
    fb, fs = space.features(big), space.features(small)
    assert len(fb) == len(fs) == 62 + 60 + 3 + 3 + 2 + 6
    assert fb[62] == 0.5 and fs[62] == 0.25          # layer 0 attention: int8 vs int4
    mixed = big.with_deploy([("int4_sym_g64", "int8")] + list(big.weight_formats[1:]), big.head_format, dict(big.runtime))
    diff = np.flatnonzero(space.features(mixed) != fb)
    assert 62 in diff and 92 not in diff             # attention of layer 0 changed, its MLP did not


def test_source_grid_joins_the_default_space_and_seeds_the_search():
    """A Q4_1 source: int4_minmax_g32 is one more format, never the sensitivity probe, and the first seeds put
    every layer in it (runtime at the precise and the fast corner); a float source changes nothing."""
    from hwnas.model.deploy_space import DeploySpace
    from hwnas.model.space import SearchSpace
    from hwnas.search.sensitivity import source_grid_seeds

    widths = (576, 576, 768, 1536)
    plain = DeploySpace.default(widths)
    dep = DeploySpace.default(widths, source_formats=("int4_minmax_g32",))
    assert dep.attention_formats == plain.attention_formats + ("int4_minmax_g32",) and dep.lossless == ("int4_minmax_g32",)
    assert dep == DeploySpace(dep.attention_formats, dep.mlp_formats, dep.head_formats, dep.runtime)
    assert dep.int4_probe_format() == plain.int4_probe_format() == "int4_asym_g64"
    assert DeploySpace.default(widths, source_formats=("int4_minmax_g128",)).lossless == ()   # 576 % 128
    space = SearchSpace(num_layers=3, full_width=1536, widths=(768, 1536), min_layers=1, layer_mode="skip", deploy=dep)
    seeds = source_grid_seeds(space)
    assert len(seeds) == 2 and all(s.weight_formats == (("int4_minmax_g32",) * 2,) * 3 for s in seeds)
    assert {dict(s.runtime)["KV_CACHE_PRECISION"] for s in seeds} == {"f16", "u8"}
    assert source_grid_seeds(space.with_(deploy=plain)) == []
