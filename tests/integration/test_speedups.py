"""Speed-ups as paired ratios with intervals: the search's final re-measurement, the pick's vs_full, bench ratios."""

import pytest

from hwnas.hardware.measure import StatefulRunner
from hwnas.hardware.targets import Target
from hwnas.model.space import SearchSpace, SubnetConfig
from hwnas.model.supernet import Supernet
from hwnas.search.picking import compare_to_full
from hwnas.search.validation import SubnetValidator
from tests.conftest import make_tiny_llama

TARGET = Target.from_dict({
    "name": "tiny",
    "openvino": {"INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": 1},
    "workload": {"prompt_tokens": 8, "new_tokens": 4, "batch_sizes": [1]},
    "measure": {"warmup": 1, "repeats": 6, "max_remeasure": 0, "interference_tol": 0, "max_rel_ci": 0.5},
})


def _fake_costs(monkeypatch, costs):
    """The models (in the order they are compiled) cost `costs`, times a load that changes every round."""
    import numpy as np

    rng = np.random.default_rng(1)
    real_init = StatefulRunner.__init__
    state = {"calls": 0, "load": 1.0, "per_round": len(costs)}
    it = iter(costs)

    def init(self, compiled, vocab_size=None):
        real_init(self, compiled, vocab_size)
        self.cost = float(next(it))

    def gen(self, prompt, new_tokens):
        if state["calls"] % state["per_round"] == 0:
            state["load"] = 1.0 + rng.uniform(0, 2.0)  # a busy phase slows every model of the round alike
        state["calls"] += 1
        return 3.0 * self.cost * state["load"], [self.cost * state["load"]] * (new_tokens - 1)

    monkeypatch.setattr(StatefulRunner, "__init__", init)
    monkeypatch.setattr(StatefulRunner, "generate", gen)
    return state


def test_final_remeasure_gives_paired_speedups_with_intervals(tmp_path, monkeypatch):
    model = make_tiny_llama(layers=4)
    sn = Supernet(model, space=SearchSpace(num_layers=4, full_width=128, widths=(64, 128), min_layers=2))
    v = SubnetValidator(sn, suite=None, target=TARGET, model_id="tiny", cache_dir=tmp_path / "ir")
    full, small = sn.space.largest(), SubnetConfig((0, 1), (64, 64))
    _fake_costs(monkeypatch, [2, 4])  # compiled in the order asked: the 2-layer subnet, then the full model
    out = v.remeasure([small, full])
    assert set(out) == {full.key, small.key}
    assert "vs_full" not in out[full.key]
    sp = out[small.key]["vs_full"]["tpot_speedup"]
    # the full model costs twice the subnet in every round, whatever the load: the paired ratio is exactly 2
    assert sp["value"] == pytest.approx(2.0, rel=1e-6) and sp["ci_low"] == pytest.approx(2.0) == sp["ci_high"]
    assert sp["rounds"] == 6 and out[small.key]["session_id"] == out[full.key]["session_id"]
    lo, hi = out[small.key]["tpot_ci95_ms"]
    assert lo <= out[small.key]["tpot_ms"] <= hi and hi > lo  # the load varies, so the figure alone is uncertain
    vs = compare_to_full({"accuracy": 0.5, "tpot_ms": 9.0, "remeasured": out[small.key]},
                         {"accuracy": 0.6, "tpot_ms": 1.0, "remeasured": out[full.key]})
    assert vs["tpot_speedup"] == pytest.approx(2.0) and vs["tpot_speedup_ci95"] == [pytest.approx(2.0)] * 2
    assert vs["ttft_speedup"] == pytest.approx(2.0) and vs["throughput_ratio"] == pytest.approx(2.0)
    assert "paired ratio" in vs["speed_basis"] and "speed_unstable" not in vs
    # without a re-measurement the search-time figures are used, and no interval is claimed
    plain = compare_to_full({"accuracy": 0.5, "tpot_ms": 5.0}, {"accuracy": 0.6, "tpot_ms": 10.0})
    assert plain["tpot_speedup"] == 2.0 and "tpot_speedup_ci95" not in plain


def test_bench_ratios_are_paired_with_intervals(tmp_path, monkeypatch):
    from hwnas.deploy.benchmark import ir_rows, ratios
    from hwnas.hardware.irexport import export_ir_cached

    big, _ = export_ir_cached(make_tiny_llama(layers=4), cache_dir=tmp_path)
    small, _ = export_ir_cached(make_tiny_llama(layers=2), cache_dir=tmp_path)
    _fake_costs(monkeypatch, [4, 2])
    rows = ir_rows([("full model", "openvino-nncf-int8", big), ("b", "bundle", small)], TARGET)
    out = ratios(rows)
    assert out[0]["decode_speedup"] == pytest.approx(1.0)
    d = out[1]
    assert d["decode_speedup"] == pytest.approx(2.0) and d["decode_speedup_ci95"] == [pytest.approx(2.0)] * 2
    assert d["ttft_speedup"] == pytest.approx(2.0) and d["ttft_speedup_ci95"] == [pytest.approx(2.0)] * 2
    assert "measurement" not in d  # the Measurement objects stay out of the JSON rows
