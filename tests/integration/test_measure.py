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
    slice_logits_to_last_token,
    time_static_ir,
)
from hwnas.hardware.targets import Target
from tests.conftest import make_tiny_llama

TARGET = Target.from_dict({
    "name": "tiny",
    "openvino": {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": "physical_cores", "NUM_STREAMS": 1,
                 "PERFORMANCE_HINT": "LATENCY", "KV_CACHE_PRECISION": "f16"},
    "workload": {"prompt_tokens": 8, "new_tokens": 5, "batch_sizes": [1, 2]},
    "measure": {"warmup": 1, "repeats": 3, "max_cv": 0.99, "max_remeasure": 0},
})


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
        assert b.ttft_ms == pytest.approx(statistics.median(b.ttft_samples_ms), rel=1e-3)
        per_repeat = [statistics.median(s) / b.batch_size for s in b.step_ms]
        assert b.tpot_samples_ms == pytest.approx(per_repeat, rel=1e-3)
        assert b.tpot_ms == pytest.approx(statistics.median(per_repeat), rel=1e-3)
        assert b.throughput_tok_s == pytest.approx(1000.0 / b.tpot_ms)
        assert 0 < b.ttft_ms < 10_000 and 0 < b.tpot_ms < 10_000
        assert b.ttft_cv >= 0 and b.tpot_iqr_ms >= 0
    assert m.ttft_ms == m.batches[0].ttft_ms and m.tpot_ms == m.batches[0].tpot_ms
    assert m.throughput_tok_s == m.batches[-1].throughput_tok_s
    d = json.loads(json.dumps(m.to_dict()))
    for key in ("ttft_ms", "tpot_ms", "throughput_tok_s", "host_fingerprint", "subnet_key", "batches", "properties"):
        assert key in d
    assert Measurement.from_dict(d) == m


def test_high_spread_triggers_re_measuring(ir, host, monkeypatch):
    import dataclasses

    calls = {"n": 0}

    def noisy(self, prompt, new_tokens):
        calls["n"] += 1
        jitter = 10.0 if calls["n"] % 2 else 1.0   # CV ~0.8: always "unstable"
        return 5.0 * jitter, [1.0 * jitter] * (new_tokens - 1)

    monkeypatch.setattr(StatefulRunner, "generate", noisy)
    t = dataclasses.replace(TARGET, measure=dataclasses.replace(TARGET.measure, max_cv=0.1, max_remeasure=2),
                            workload=dataclasses.replace(TARGET.workload, batch_sizes=(1,)))
    m = measure_ir(ir, t, host=host, subnet_key="noisy")
    b = m.batches[0]
    assert b.remeasured == 2 and b.repeats == 9 and not b.stable and not m.stable
    assert calls["n"] == 1 + 9  # warm-up + 3 repeats x (1 + 2 extra rounds)

    calls["n"] = 0
    monkeypatch.setattr(StatefulRunner, "generate", lambda self, p, n: (5.0, [1.0] * (n - 1)))
    m = measure_ir(ir, t, host=host, subnet_key="steady")
    assert m.batches[0].remeasured == 0 and m.batches[0].repeats == 3 and m.stable
    assert m.ttft_ms == 5.0 and m.tpot_ms == 1.0 and m.throughput_tok_s == 1000.0


def test_repeats_are_interleaved_across_models(ir, host, monkeypatch):
    order = []

    def record(self, prompt, new_tokens):
        order.append((self.tag, prompt.shape[0]))
        return 1.0, [1.0] * (new_tokens - 1)

    real_init = StatefulRunner.__init__
    tags = iter("AB")

    def init(self, compiled, vocab_size=None):
        real_init(self, compiled, vocab_size)
        self.tag = next(tags)

    monkeypatch.setattr(StatefulRunner, "__init__", init)
    monkeypatch.setattr(StatefulRunner, "generate", record)
    jobs = [MeasureJob(str(ir), "a"), MeasureJob(str(ir), "b")]
    out = measure_many(jobs, TARGET, host=host)
    assert [m.subnet_key for m in out] == ["a", "b"]
    timed = order[4:]  # after warm-up (2 models x 2 batch sizes x 1)
    assert timed == [("A", 1), ("A", 2), ("B", 1), ("B", 2)] * 3


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

