"""Deployment genes on a subnet: format vocabulary, validation, round trip, stable keys."""
import pytest

from hwnas.errors import InvalidSubnetError
from hwnas.model.formats import WeightFormat, check_runtime, parse_weight_format
from hwnas.model.space import SubnetConfig


@pytest.mark.parametrize("name,fmt", [
    ("f16", WeightFormat(bits=None)),
    ("int8", WeightFormat(bits=8)),
    ("int4_sym_g64", WeightFormat(bits=4, sym=True, group_size=64)),
    ("int4_asym_g32", WeightFormat(bits=4, sym=False, group_size=32)),
    ("gptq-int4_asym_g64", WeightFormat(bits=4, sym=False, group_size=64, algorithm="gptq")),
    ("int4_minmax_g32", WeightFormat(bits=4, sym=False, group_size=32, float_zero=True)),
])
def test_parse_round_trip(name, fmt):
    assert parse_weight_format(name) == fmt
    assert fmt.name == name


@pytest.mark.parametrize("bad", ["int3", "int4_sym", "int4_sym_g48", "int4_sym_g8", "gptq-f16", "fp8", "",
                                 "gptq-int4_minmax_g32", "int4_minmax_g8"])
def test_bad_formats_name_the_value(bad):
    with pytest.raises(InvalidSubnetError, match="weight format"):
        parse_weight_format(bad)


def test_group_divides():
    assert parse_weight_format("int4_sym_g64").divides(576)
    assert not parse_weight_format("int4_sym_g128").divides(576)
    assert parse_weight_format("int8").divides(577)


def test_runtime_checked_and_sorted():
    assert check_runtime({"KV_CACHE_PRECISION": "u8", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 32}) == (
        ("DYNAMIC_QUANTIZATION_GROUP_SIZE", 32), ("KV_CACHE_PRECISION", "u8"))
    with pytest.raises(InvalidSubnetError, match="KV_CACHE_PRECISION='u3'"):
        check_runtime({"KV_CACHE_PRECISION": "u3"})
    with pytest.raises(InvalidSubnetError, match="unknown runtime setting 'FOO'"):
        check_runtime({"FOO": 1})


def test_plain_subnet_keeps_its_key():
    plain = SubnetConfig((0, 1, 2), (64, 64, 32))
    assert plain.to_dict() == {"layers": [0, 1, 2], "mlp_widths": [64, 64, 32]}
    assert plain.key == SubnetConfig.from_dict(plain.to_dict()).key
    assert not plain.has_deploy_genes


def test_deploy_genes_round_trip_and_change_the_key():
    plain = SubnetConfig((0, 1), (64, 32))
    full = plain.with_deploy([["int8", "int4_asym_g32"], ["int4_sym_g32", "f16"]], "int8",
                             {"KV_CACHE_PRECISION": "u8"})
    d = full.to_dict()
    assert d["weight_formats"] == [["int8", "int4_asym_g32"], ["int4_sym_g32", "f16"]]
    assert d["head_format"] == "int8" and d["runtime"] == {"KV_CACHE_PRECISION": "u8"}
    back = SubnetConfig.from_dict(d)
    assert back == full and back.key == full.key != plain.key
    assert full.architecture() == plain
    assert "head int8" in full.describe() and "KV_CACHE_PRECISION=u8" in full.describe()


def test_weight_format_shorthand_and_errors():
    s = SubnetConfig.from_dict({"layers": [0, 1], "mlp_widths": 64, "weight_formats": ["int8", "int4_sym_g32"]})
    assert s.weight_formats == (("int8", "int4_sym_g32"),) * 2
    with pytest.raises(InvalidSubnetError, match="weight-format pairs"):
        SubnetConfig((0, 1), (64, 64), (("int8", "int8"),))
    with pytest.raises(InvalidSubnetError, match="head format 'int4'"):
        SubnetConfig((0,), (64,), None, "int4")
    with pytest.raises(InvalidSubnetError, match="'runtime' must be an object"):
        SubnetConfig.from_dict({"layers": [0], "mlp_widths": [8], "runtime": [1]})
