"""The reference kernel's reading is taken warm, whatever ran before it."""
from __future__ import annotations

import time

from hwnas.hardware import interference


class _ColdThenWarm:
    """An infer request whose first `cold` runs are slow, as the kernel is right after a measurement round."""

    def __init__(self, cold: int):
        self.calls, self.cold = 0, cold

    def infer(self, _feed):
        self.calls += 1
        time.sleep(0.02 if self.calls <= self.cold else 0.001)


def test_a_reading_after_a_round_is_taken_warm_as_the_reading_before_it_is():
    k = interference.ReferenceKernel({"INFERENCE_PRECISION_HINT": "f32"})
    k.request = _ColdThenWarm(cold=3)   # three cold runs right after a round: the medianed reading must not see them
    ms = k.time_ms()
    assert k.request.calls == interference.REF_WARMUP + interference.REF_RUNS
    assert ms < 10.0
    k.request = _ColdThenWarm(cold=3)
    assert k.time_ms(warmup=0) > 10.0   # without the untimed runs, the cold start is the reading
