import json
from types import SimpleNamespace

import numpy as np
import pytest

from hwnas.errors import InvalidSubnetError, SpaceError
from hwnas.model.space import SearchSpace, SubnetConfig, default_widths, parse_subnet_spec

CFG = SimpleNamespace(num_hidden_layers=30, intermediate_size=1536, hidden_size=576, num_attention_heads=9,
                      num_key_value_heads=3, head_dim=64, vocab_size=49152, tie_word_embeddings=True)


def spaces():
    base = SearchSpace.from_model_config(CFG)
    order = tuple(np.random.default_rng(1).permutation(30))
    return [base, base.with_(layer_mode="prefix"), base.with_(layer_mode="ranked", layer_order=order)]


def test_default_space_matches_model():
    s = SearchSpace.from_model_config(CFG)
    assert s.widths == (384, 576, 768, 960, 1152, 1344, 1536)
    assert (s.min_layers, s.max_layers) == (15, 30)
    assert s.always_keep == (0, 29)
    assert default_widths(11008)[-1] == 11008 and all(w % 64 == 0 for w in default_widths(11008)[:-1])


@pytest.mark.parametrize("space", spaces(), ids=lambda s: s.layer_mode)
def test_encode_decode_roundtrip(space):
    rng = np.random.default_rng(0)
    for _ in range(200):
        cfg = space.sample(rng)
        space.validate(cfg)
        x = space.encode(cfg)
        xl, xu = space.bounds()
        assert x.shape == (space.n_var,) and np.all(x >= xl) and np.all(x <= xu)
        assert space.decode(x) == cfg
    for cfg in (space.largest(), space.smallest()):
        assert space.decode(space.encode(cfg)) == cfg
    assert len(space.largest().layers) == 30 and set(space.largest().mlp_widths) == {1536}
    assert len(space.smallest().layers) == 15 and set(space.smallest().mlp_widths) == {384}


@pytest.mark.parametrize("space", spaces(), ids=lambda s: s.layer_mode)
def test_repair_makes_any_vector_decodable(space):
    rng = np.random.default_rng(3)
    xl, xu = space.bounds()
    for _ in range(100):
        x = rng.integers(xl - 2, xu + 3)
        cfg = space.decode(space.repair(x, rng))
        assert space.min_layers <= len(cfg.layers) <= space.max_layers


def test_key_is_stable_and_distinct():
    a = SubnetConfig((0, 1, 2), (1536, 768, 384))
    assert a.key == SubnetConfig((0, 1, 2), (1536, 768, 384)).key
    assert a.key != SubnetConfig((0, 1, 3), (1536, 768, 384)).key
    assert a.key.startswith("l3-") and len(a.key) == 11


def test_validation_errors_name_the_value():
    s = SearchSpace.from_model_config(CFG)
    with pytest.raises(InvalidSubnetError, match="layer 99"):
        s.validate(SubnetConfig((0, 99), (1536, 1536)), structure=False)
    with pytest.raises(InvalidSubnetError, match="width 1000 .*allowed"):
        s.validate(SubnetConfig((0, 1), (1536, 1000)), structure=False)
    with pytest.raises(InvalidSubnetError, match="keeps 3 layers"):
        s.validate(SubnetConfig((0, 1, 29), (1536,) * 3))
    with pytest.raises(InvalidSubnetError, match="always keeps"):
        s.validate(SubnetConfig(tuple(range(1, 29)), (1536,) * 28))
    with pytest.raises(InvalidSubnetError, match="one width per kept layer"):
        SubnetConfig((0, 1), (1536,))
    with pytest.raises(InvalidSubnetError, match="prefix"):
        s.with_(layer_mode="prefix").validate(SubnetConfig(tuple(range(1, 17)), (1536,) * 16))


def test_parse_subnet_spec(tmp_path):
    cfg = parse_subnet_spec('{"layers": [0, 2], "mlp_widths": [768, 384]}')
    assert cfg == SubnetConfig((0, 2), (768, 384))
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"subnet": cfg.to_dict(), "key": cfg.key}))
    assert parse_subnet_spec(str(p)) == cfg
    with pytest.raises(InvalidSubnetError, match="not valid JSON"):
        parse_subnet_spec('{"layers": [0, 2')
    with pytest.raises(InvalidSubnetError, match="neither inline JSON"):
        parse_subnet_spec("nope.json")
    with pytest.raises(InvalidSubnetError, match="list of integers"):
        parse_subnet_spec('{"layers": [0, "a"], "mlp_widths": [1, 2]}')


def test_space_file_overrides(tmp_path):
    base = SearchSpace.from_model_config(CFG)
    p = tmp_path / "space.toml"
    p.write_text('[space]\nlayer_mode = "prefix"\nmin_layers = 20\nwidths = [768, 1536]\n')
    s = SearchSpace.from_file(p, defaults=base)
    assert (s.layer_mode, s.min_layers, s.widths, s.num_layers) == ("prefix", 20, (768, 1536), 30)
    assert SearchSpace.from_dict(s.to_dict()) == s
    p.write_text("[space]\nmin_layer = 3\n")
    with pytest.raises(SpaceError, match="min_layer"):
        SearchSpace.from_file(p, defaults=base)


def test_param_count_formula():
    full = SubnetConfig.uniform(30, 1536)
    assert full.n_params(CFG) == 134_515_008  # SmolLM2-135M
