"""The gene-aware latency model: learns per-format layer costs, head and runtime effects; LOO error per gene."""
from __future__ import annotations

import numpy as np
import pytest

from hwnas.errors import MeasurementError
from hwnas.hardware.gene_latency import GeneLatencyModel, design_variants, fit_gene_latency_model
from hwnas.model.deploy_space import DeploySpace
from hwnas.model.space import SearchSpace

DEP = DeploySpace(("int8", "int4_asym_g32", "int4_sym_g32"), ("int8", "int4_sym_g32"), ("int8", "f16"),
                  (("KV_CACHE_PRECISION", ("u8", "f16")),))
SPACE = SearchSpace(num_layers=10, full_width=256, widths=(64, 128, 192, 256), min_layers=5, always_keep=(0, 9),
                    deploy=DEP)
LAYER = {"int8": 0.50, "int4_asym_g32": 0.40, "int4_sym_g32": 0.36}
WIDTH = {"int8": 0.0010, "int4_sym_g32": 0.0006}


def truth(sub, noise=0.0, rng=None):
    t = 2.0 + sum(LAYER[a] + WIDTH[m] * w for (a, m), w in zip(sub["weight_formats"], sub["mlp_widths"]))
    t += 0.8 if sub["head_format"] == "f16" else 0.0
    if sub["runtime"]["KV_CACHE_PRECISION"] == "f16":
        t += 0.05 * len(sub["mlp_widths"])
    if noise:
        t *= 1 + rng.normal(0, noise)
    return {"tpot_ms@1": t, "ttft_ms@1": 10 * t}


def samples(noise=0.0):
    rng = np.random.default_rng(0)
    archs = [SPACE.sample(rng) for _ in range(6)] + [SPACE.largest(), SPACE.smallest()]
    cfgs = design_variants(SPACE, archs, rng)
    return [(c.to_dict(), truth(c.to_dict(), noise, rng)) for c in cfgs], cfgs


def test_design_covers_every_gene_value():
    _, cfgs = samples()
    seen = {f for c in cfgs for pair in c.weight_formats for f in pair}
    assert seen == {"int8", "int4_asym_g32", "int4_sym_g32"}
    assert {c.head_format for c in cfgs} == {"int8", "f16"}
    assert {dict(c.runtime)["KV_CACHE_PRECISION"] for c in cfgs} == {"u8", "f16"}
    for c in cfgs:
        SPACE.validate(c)


def test_recovers_an_additive_truth_and_reports_error_per_gene():
    data, cfgs = samples()
    m = fit_gene_latency_model(data, DEP, (1,), target="t")
    assert m.error["tpot_ms_mape_pct"] < 0.5 and m.error["n_variants"] == len(data)
    per = m.error["per_gene"]
    assert {"attention=int4_sym_g32", "mlp=int8", "head=f16", "KV_CACHE_PRECISION=u8"} <= set(per)
    c = dict(zip(m.columns, m.coef["tpot_ms@1"][1:]))
    assert c["layer_ms[int4_sym_g32]"] < c["layer_ms[int4_asym_g32]"] < c["layer_ms[int8]"]
    assert c["head_ms[f16]"] == pytest.approx(0.8, abs=0.02)
    assert c["per_layer_shift_ms[KV_CACHE_PRECISION=f16]"] == pytest.approx(0.05, abs=0.01)
    # an unseen mix is predicted from the table
    rng = np.random.default_rng(5)
    new = SPACE.sample(rng)
    assert m.predict(new)["tpot_ms"] == pytest.approx(truth(new.to_dict())["tpot_ms@1"], rel=0.01)
    back = GeneLatencyModel.from_dict(m.to_dict())
    assert back.predict(new) == m.predict(new) and back.gene_aware


def test_predictions_never_fall_below_half_the_fastest_measurement():
    data, _ = samples()
    m = fit_gene_latency_model(data, DEP, (1,))
    m.coef["tpot_ms@1"][0] = -1e3                  # a wild fit
    assert m.predict(SPACE.smallest())["tpot_ms"] == 0.5 * min(v["tpot_ms@1"] for _, v in data)


def test_noise_shows_in_the_error_and_bad_input():
    data, _ = samples(noise=0.03)
    m = fit_gene_latency_model(data, DEP, (1,))
    assert 0.5 < m.error["tpot_ms_mape_pct"] < 10
    with pytest.raises(MeasurementError, match="at least 4"):
        fit_gene_latency_model(data[:3], DEP, (1,))
    with pytest.raises(MeasurementError, match="weight formats"):
        m.predict(SPACE.largest().architecture())
