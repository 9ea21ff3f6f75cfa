"""Per-layer int4 sensitivity on a tiny model: measured, cached, used for seeds and as a predictor feature."""
from __future__ import annotations

import dataclasses

import numpy as np

from hwnas.model.deploy_space import DeploySpace
from hwnas.model.space import SearchSpace
from tests.conftest import make_tiny_llama


def test_sensitivity_table_seeds_and_feature(monkeypatch):
    from hwnas.accuracy.fidelity import TokenFidelity
    from hwnas.model.supernet import Supernet
    from hwnas.search import sensitivity as S

    dep = DeploySpace(("int8", "int4_asym_g32"), ("int8", "int4_asym_g32"), ("int8", "f16"),
                      (("KV_CACHE_PRECISION", ("u8", "f16")),))
    space = SearchSpace(num_layers=4, full_width=128, widths=(64, 128), min_layers=2, layer_mode="skip",
                        always_keep=(0, 3), deploy=dep)
    sn = Supernet(make_tiny_llama(seed=2), space=space)
    fid = TokenFidelity(np.random.default_rng(0).integers(3, 300, size=(2, 33)))
    assert dep.int4_probe_format() == "int4_asym_g32"
    sens = S.measure_sensitivity(sn, fid, "int4_asym_g32", model_id="tiny")
    assert len(sens.attention) == len(sens.mlp) == 4
    assert all(k > 0 for k in sens.attention + sens.mlp) and sens.tokens == 64
    # the float weights are back: the full model's KL to itself is 0
    assert fid.measure(sn, None)["kl"] < 1e-9
    # cached: a second call measures nothing
    monkeypatch.setattr("hwnas.model.fakequant.fake_quantize_part", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    assert S.measure_sensitivity(sn, fid, "int4_asym_g32", model_id="tiny") == sens
    seeds = S.seed_subnets(space, sens, fractions=(0.0, 0.25, 0.5))
    n_int4 = [sum(f == "int4_asym_g32" for pair in c.weight_formats for f in pair) for c in seeds]
    assert n_int4 == [8, 6, 4]
    most = sens.ranked_parts()[0]
    kept8 = seeds[1].weight_formats[most[0]][0 if most[1] == "attention" else 1]
    assert kept8 == "int8"                           # the most sensitive part stays int8
    for c in seeds:
        space.validate(c)
        assert c.head_format == "int8" and dict(c.runtime) == {"KV_CACHE_PRECISION": "u8"}
    # predictor feature: summed sensitivity of the int4 parts
    s2 = space.with_(deploy=dataclasses.replace(dep, sensitivity=(sens.attention, sens.mlp)))
    assert s2 == space                               # measured data is not part of the space's identity
    f = s2.features(seeds[0])
    assert len(f) == len(space.features(seeds[0])) + 2
    assert f[-2] == sum(sens.attention) and f[-1] == sum(sens.mlp)


def test_from_layer_equals_the_whole_forward_pass():
    """The table runs only layers i.. on the full model's cached input to layer i: the KL is the one a whole
    forward pass gives (the change sits in layer i, so layers 0..i-1 compute what they computed)."""
    from hwnas.accuracy.fidelity import TokenFidelity
    from hwnas.model.fakequant import fake_quantize_part
    from hwnas.model.supernet import Supernet

    sn = Supernet(make_tiny_llama(seed=3))
    fid = TokenFidelity(np.random.default_rng(1).integers(3, 300, size=(2, 33)), precision="fp32")
    sn.reset()
    fid.reference(sn)
    fid.capture_layer_inputs(sn.model)
    for i in range(len(sn._all_layers)):
        for part in ("attention", "mlp"):
            restore = fake_quantize_part(sn, i, part, "int4_asym_g32")
            try:
                whole = fid.measure_model(sn, sn.model)
                part_only = fid.measure_model(sn, sn.model, from_layer=i)
            finally:
                restore()
            assert whole["kl"] > 0
            assert abs(part_only["kl"] - whole["kl"]) <= 1e-6 + 1e-4 * whole["kl"], (i, part)
            assert part_only["top1_agreement"] == whole["top1_agreement"]
    fid.release_layer_inputs()
