"""`--layers N` follows the search space's layer mode (hwnas.model.supernet.resolve_subnet_option)."""
import pytest

from hwnas.model.space import SearchSpace, SubnetConfig


def test_layers_shorthand_follows_the_layer_mode():
    """--layers N: ranked keeps the N most important, skip the always-kept then the first, prefix the first N."""
    from hwnas.errors import InvalidSubnetError
    from hwnas.model.supernet import resolve_subnet_option, shorthand_layers

    base = SearchSpace(num_layers=6, full_width=256, widths=(128, 256), min_layers=2, always_keep=(0, 5))
    ranked = base.with_(layer_mode="ranked", layer_order=(5, 0, 3, 1, 4, 2))
    assert shorthand_layers(ranked, 3) == (0, 3, 5)
    assert shorthand_layers(base.with_(layer_mode="skip"), 3) == (0, 1, 5)
    assert shorthand_layers(base.with_(layer_mode="prefix", always_keep=()), 3) == (0, 1, 2)
    assert resolve_subnet_option(None, 4, 128, 256, space=ranked) == SubnetConfig((0, 1, 3, 5), (128,) * 4)
    assert resolve_subnet_option(None, 2, None, 256, space=ranked) == SubnetConfig((0, 5), (256, 256))
    with pytest.raises(InvalidSubnetError, match="--layers 7 is more than the model's 6 layers"):
        resolve_subnet_option(None, 7, None, 256, space=ranked)
    with pytest.raises(InvalidSubnetError, match=r"--mlp-width 100 is not an allowed width; allowed: \[128, 256\]"):
        resolve_subnet_option(None, 2, 100, 256, space=ranked)
