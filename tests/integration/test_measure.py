"""Measurement records on a tiny stateful IR: fields, units, statistics, re-measuring, interleaving."""
import json
import statistics

import numpy as np
import pytest

from hwnas.errors import MeasurementError
from hwnas.hardware.host import detect_host
from hwnas.hardware.irexport import export_ir, export_ir_cached
from hwnas.hardware.measure import (
    MeasureJob,
    Measurement,
    StatefulRunner,
    compile_ir,
    measure_ir,
    measure_many,
    slice_logits_from_input,
    slice_logits_to_last_token,
    speedup,
    time_static_ir,
)
from hwnas.hardware.targets import Target
from tests.conftest import make_tiny_llama

TARGET = Target.from_dict({
    "name": "tiny",
    "openvino": {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": "physical_cores", "NUM_STREAMS": 1,
                 "PERFORMANCE_HINT": "LATENCY", "KV_CACHE_PRECISION": "f16"},
    "workload": {"prompt_tokens": 8, "new_tokens": 5, "batch_sizes": [1, 2]},
    # no reference kernel and no re-measuring: the statistics are checked exactly
    "measure": {"warmup": 1, "repeats": 3, "max_cv": 0.99, "max_remeasure": 0, "interference_tol": 0, "max_rel_ci": 0},
})


def _with(target, **measure):
    import dataclasses

    return dataclasses.replace(target, measure=dataclasses.replace(target.measure, **measure),
                               workload=dataclasses.replace(target.workload, batch_sizes=(1,)))


@pytest.fixture(scope="module")
def ir():
    path, _ = export_ir_cached(make_tiny_llama(layers=2))
    return path


@pytest.fixture(scope="module")
def host():
    return detect_host(measure_bandwidth=False)


def test_measurement_fields_units_and_statistics(ir, host):
    m = measure_ir(ir, TARGET, host=host, subnet_key="l2-test", subnet={"layers": [0, 1], "mlp_widths": [128, 128]},
                   mlp_widths=(128, 128), n_params=123)
    assert isinstance(m, Measurement)
    assert m.target == "tiny" and m.host_fingerprint == host.fingerprint and m.subnet_key == "l2-test"
    assert (m.latency_batch_size, m.throughput_batch_size) == (1, 2)
    assert (m.prompt_tokens, m.new_tokens) == (8, 5)
    assert m.properties["INFERENCE_NUM_THREADS"] == host.physical_cores  # "physical_cores" resolved
    assert m.properties["INFERENCE_PRECISION_HINT"] == "f32"
    assert [b.batch_size for b in m.batches] == [1, 2]
    for b in m.batches:
        assert b.repeats == 3 and len(b.ttft_samples_ms) == 3 and len(b.tpot_samples_ms) == 3
        assert len(b.step_ms) == 3 and all(len(s) == 4 for s in b.step_ms)  # new_tokens - 1 decode steps
        assert b.estimator == "round_min" and b.round_ids == (0, 1, 2) and b.discarded_rounds == 0
        # round_min: TTFT = lower quartile of the rounds' TTFTs; TPOT = median over rounds of the fastest step
        assert b.ttft_ms == pytest.approx(float(np.quantile(b.ttft_samples_ms, 0.25)), rel=1e-3)
        per_round = [min(s) / b.batch_size for s in b.step_ms]
        assert b.tpot_samples_ms == pytest.approx(per_round, rel=1e-3)
        assert b.tpot_ms == pytest.approx(statistics.median(per_round), rel=1e-3)
        assert b.throughput_tok_s == pytest.approx(1000.0 / b.tpot_ms)
        assert b.tpot_ci_ms[0] <= b.tpot_ms <= b.tpot_ci_ms[1] and b.ttft_ci_ms[0] <= b.ttft_ms <= b.ttft_ci_ms[1]
        assert 0 < b.ttft_ms < 10_000 and 0 < b.tpot_ms < 10_000
        assert b.ttft_cv >= 0 and b.tpot_iqr_ms >= 0
    assert m.ttft_ms == m.batches[0].ttft_ms and m.tpot_ms == m.batches[0].tpot_ms
    assert m.throughput_tok_s == m.batches[-1].throughput_tok_s
    assert m.session["rounds"] == 3 and m.session["clean_rounds"] == 3 and "reference" not in m.session
    assert len(m.session["load"]["loadavg_before"]) == 3
    d = json.loads(json.dumps(m.to_dict()))
    for key in ("ttft_ms", "tpot_ms", "throughput_tok_s", "host_fingerprint", "subnet_key", "batches", "properties",
                "session", "note"):
        assert key in d
    assert Measurement.from_dict(d) == m


def test_wide_interval_triggers_extra_rounds_then_a_flag(ir, host, monkeypatch):
    calls = {"n": 0}

    def noisy(self, prompt, new_tokens):
        calls["n"] += 1
        jitter = 10.0 if calls["n"] % 2 else 1.0   # every other round 10x slower: the interval stays wide
        return 5.0 * jitter, [1.0 * jitter] * (new_tokens - 1)

    monkeypatch.setattr(StatefulRunner, "generate", noisy)
    t = _with(TARGET, max_rel_ci=0.03, max_remeasure=2)
    m = measure_ir(ir, t, host=host, subnet_key="noisy")
    b = m.batches[0]
    assert b.repeats == 9 and b.remeasured == 6 and m.session["rounds"] == 9  # 3 rounds + a budget of 2 x 3
    assert not b.stable and not m.stable and "95% CI" in b.note and "95% CI" in m.note
    assert calls["n"] == 1 + 9  # warm-up + 9 rounds

    calls["n"] = 0
    monkeypatch.setattr(StatefulRunner, "generate", lambda self, p, n: (5.0, [1.0] * (n - 1)))
    m = measure_ir(ir, t, host=host, subnet_key="steady")
    assert m.batches[0].remeasured == 0 and m.batches[0].repeats == 3 and m.stable and m.note == ""
    assert m.ttft_ms == 5.0 and m.tpot_ms == 1.0 and m.throughput_tok_s == 1000.0
    assert m.batches[0].tpot_ci_ms == (1.0, 1.0)


def _tagged_runners(monkeypatch, tags="AB"):
    real_init = StatefulRunner.__init__
    it = iter(tags)

    def init(self, compiled, vocab_size=None):
        real_init(self, compiled, vocab_size)
        self.tag = next(it)

    monkeypatch.setattr(StatefulRunner, "__init__", init)


def test_rounds_are_interleaved_across_models_in_rotating_order(ir, host, monkeypatch):
    order = []

    def record(self, prompt, new_tokens):
        order.append((self.tag, prompt.shape[0]))
        return 1.0, [1.0] * (new_tokens - 1)

    _tagged_runners(monkeypatch)
    monkeypatch.setattr(StatefulRunner, "generate", record)
    jobs = [MeasureJob(str(ir), "a"), MeasureJob(str(ir), "b")]
    out = measure_many(jobs, TARGET, host=host)
    assert [m.subnet_key for m in out] == ["a", "b"]
    assert out[0].session["id"] == out[1].session["id"]
    timed = order[4:]  # after warm-up (2 models x 2 batch sizes x 1)
    ab = [("A", 1), ("A", 2), ("B", 1), ("B", 2)]
    ba = ab[2:] + ab[:2]
    assert timed == ab + ba + ab  # every round runs every model; who goes first rotates


def _Readings(values):
    """Stand-in for the reference kernel's time_ms: replays given readings."""
    values = list(values)

    def time_ms(kernel, runs=5):
        return values.pop(0)

    return time_ms


def test_rounds_under_interference_are_set_aside_and_replaced(ir, host, monkeypatch):
    from hwnas.hardware import interference

    n = {"call": 0}

    def gen(self, prompt, new_tokens):  # round r (0-based, after the warm-up) returns TTFT 10 + r
        n["call"] += 1
        return 10.0 + n["call"] - 2, [1.0 + 0.01 * n["call"]] * (new_tokens - 1)

    monkeypatch.setattr(StatefulRunner, "generate", gen)
    # (before, after) per round: round 1 sees the kernel 3x slower after it ran -> set aside, one extra round
    monkeypatch.setattr(interference.ReferenceKernel, "time_ms",
                        _Readings([1.0, 1.0, 1.0, 3.0, 1.0, 1.1, 1.0, 1.05]))
    t = _with(TARGET, interference_tol=0.25, max_rel_ci=0.5, max_remeasure=1)
    m = measure_ir(ir, t, host=host, subnet_key="x")
    b = m.batches[0]
    assert m.session["rounds"] == 4 and m.session["clean_rounds"] == 3
    assert b.round_ids == (0, 2, 3) and b.discarded_rounds == 1
    assert b.ttft_samples_ms == (10.0, 12.0, 13.0)  # round 1's TTFT (11.0) is not among them
    ref = m.session["reference"]
    assert ref["baseline_ms"] == 1.0 and ref["max_ratio"] == 3.0 and ref["readings_ms"][1] == [1.0, 3.0]
    assert m.stable and b.note == ""
    # the session's best reading is now the host's best for these properties
    kernel_key = interference.ReferenceKernel(m.properties).properties_key
    assert interference.host_best(host.fingerprint, kernel_key) == 1.0


def test_a_session_busy_throughout_is_flagged_next_to_its_figures(ir, host, monkeypatch):
    from hwnas.hardware import interference

    monkeypatch.setattr(StatefulRunner, "generate", lambda self, p, n: (5.0, [1.0] * (n - 1)))
    props = TARGET.resolved_properties(host)
    key = interference.ReferenceKernel(props).properties_key
    interference.record_best(host.fingerprint, key, 0.5)  # an earlier, quiet session on this host
    monkeypatch.setattr(interference.ReferenceKernel, "time_ms", _Readings([1.0] * 20))  # 2x its best, every round
    t = _with(TARGET, interference_tol=0.25, max_rel_ci=0.5, max_remeasure=1)
    m = measure_ir(ir, t, host=host, subnet_key="busy")
    b = m.batches[0]
    assert m.session["rounds"] == 6 and m.session["clean_rounds"] == 0  # 3 + 3 replacement rounds, none clean
    assert b.round_ids == tuple(range(6)) and b.discarded_rounds == 0  # the figure uses every round ...
    assert not m.stable and "host busy: only 0 of 6 rounds" in b.note  # ... and says so
    assert m.tpot_ms == 1.0 and m.session["reference"]["median_ratio"] == 2.0
    assert interference.host_best(host.fingerprint, key) == 0.5  # a busy session never raises the host's best


def test_speedup_pairs_rounds_and_gives_an_interval(ir, host, monkeypatch):
    rng = np.random.default_rng(0)
    phase = {"calls": 0, "load": 1.0}

    def gen(self, prompt, new_tokens):
        if phase["calls"] % 2 == 0:  # a new phase of the host each round: it slows both models of the round alike
            phase["load"] = 1.0 + rng.uniform(0, 1.0)
        phase["calls"] += 1
        cost, load = (2.0 if self.tag == "A" else 1.0), phase["load"]
        return 10 * cost * load, list(cost * load * (1 + 0.01 * rng.random(new_tokens - 1)))

    _tagged_runners(monkeypatch, "ABC")
    monkeypatch.setattr(StatefulRunner, "generate", gen)
    t = _with(TARGET, repeats=8)
    base, fast = measure_many([MeasureJob(str(ir), "full"), MeasureJob(str(ir), "sub")], t, host=host)
    s = speedup(fast, base, "tpot_ms")
    assert s["rounds"] == 8 and s["metric"] == "tpot_ms" and s["estimator"] == "round_min"
    assert s["ci_low"] <= s["value"] <= s["ci_high"]
    assert 1.9 < s["ci_low"] and s["ci_high"] < 2.1 and s["value"] == pytest.approx(base.tpot_ms / fast.tpot_ms, rel=1e-3)
    assert speedup(fast, base, "ttft_ms")["value"] == pytest.approx(base.ttft_ms / fast.ttft_ms, rel=1e-3)
    other = measure_ir(ir, t, host=host, subnet_key="later")
    with pytest.raises(MeasurementError, match="one interleaved session"):
        speedup(other, base)


def test_prefill_logits_are_sliced_to_the_last_position(ir):
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(ir / "openvino_model.xml"))
    assert slice_logits_to_last_token(model)
    full = core.compile_model(str(ir / "openvino_model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    sliced = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    ids = np.arange(3, 10, dtype=np.int64).reshape(1, 7)
    feed = {"input_ids": ids, "attention_mask": np.ones((1, 7), np.int64),
            "position_ids": np.arange(7, dtype=np.int64)[None], "beam_idx": np.zeros(1, np.int32)}
    outs = []
    for c in (full, sliced):
        r = c.create_infer_request()
        r.infer(feed)
        outs.append(r.get_tensor("logits").data.copy())
    assert outs[0].shape == (1, 7, 300) and outs[1].shape == (1, 1, 300)
    np.testing.assert_allclose(outs[1][:, -1], outs[0][:, -1], atol=1e-5)


def test_static_ir_timing_and_errors(tmp_path):
    out = export_ir(make_tiny_llama(layers=1), tmp_path / "static", stateful=False)
    samples = time_static_ir(out, {"INFERENCE_PRECISION_HINT": "f32"},
                             {"input_ids": np.ones((1, 8), np.int64), "attention_mask": np.ones((1, 8), np.int64),
                              "position_ids": np.arange(8, dtype=np.int64)[None]}, warmup=1, repeats=5)
    assert len(samples) == 5 and all(s > 0 for s in samples)
    with pytest.raises(MeasurementError, match="not a stateful LLM"):
        StatefulRunner(compile_ir(out, {})[0])
    with pytest.raises(MeasurementError, match="no OpenVINO IR"):
        compile_ir(tmp_path / "missing", {})


def test_static_ir_timing_arithmetic(monkeypatch):
    """Warm-up calls are not timed, each repeat is one infer() in milliseconds (a fake clock and IR)."""
    import hwnas.hardware.measure as measure

    clock = {"t": 100.0}
    durations = iter([9.0, 9.0, 0.004, 0.001, 0.002])  # seconds: two warm-ups, then three timed calls
    seen = []

    class Request:
        def infer(self, inputs):
            seen.append(inputs)
            clock["t"] += next(durations)

    class Compiled:
        def create_infer_request(self):
            return Request()

    class FakeTime:
        @staticmethod
        def perf_counter():
            return clock["t"]

    monkeypatch.setattr(measure, "compile_ir", lambda ir, props, slice_logits=True, core=None: (Compiled(), None))
    monkeypatch.setattr(measure, "time", FakeTime)
    samples = measure.time_static_ir("ir", {}, {"input_ids": 1}, warmup=2, repeats=3)
    assert samples == pytest.approx([4.0, 1.0, 2.0]) and len(seen) == 5
    assert measure.median(samples) == pytest.approx(2.0)



@pytest.mark.parametrize("start", [0, 3, 6, -1, -2])
def test_logits_from_input_runs_the_head_on_the_positions_asked_for(ir, start):
    """Scoring asks for the logits of a choice's positions only: `logits_from` = k gives full[:, k:]."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(ir / "openvino_model.xml"))
    assert slice_logits_from_input(model)
    assert "logits_from" in {n for i in model.inputs for n in i.get_names()}
    props = {"INFERENCE_PRECISION_HINT": "f32"}
    full = core.compile_model(str(ir / "openvino_model.xml"), "CPU", props).create_infer_request()
    sliced = core.compile_model(model, "CPU", props).create_infer_request()
    ids = np.arange(3, 10, dtype=np.int64).reshape(1, 7)
    feed = {"input_ids": ids, "attention_mask": np.ones((1, 7), np.int64),
            "position_ids": np.arange(7, dtype=np.int64)[None], "beam_idx": np.zeros(1, np.int32)}
    want = full.infer(feed)["logits"][:, start:]
    got = sliced.infer({**feed, "logits_from": np.array([start], np.int64)})["logits"]
    assert got.shape == want.shape == (1, len(range(7)[start:]), 300)
    np.testing.assert_allclose(got, want, atol=1e-5)
