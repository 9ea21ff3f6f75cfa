"""Interference detection: a fixed reference kernel timed between measurement rounds, and host load.

The reference kernel is a small OpenVINO model (a chain of 16 MatMuls on an [8, 1536] activation,
~2 ms: a fraction of one decode step of a small subnet, long enough that its own jitter is small) compiled with the *same* properties as the
models measured (threads, precision), so another process busy on any of those cores slows it
as it slows them. It is timed just before and just after every round (median of a few runs, after a
few untimed ones so that both readings see it equally warm).

A round is **clean** when both readings are within `tol` (default 25%) of the baseline: the
fastest reading of the session, or, if lower, the fastest ever recorded for this host and
properties (kept in ``$HWNAS_CACHE_DIR/host/<fingerprint>-reference.json``). The host-wide best
is what lets a session that is busy from its first to its last round be recognised as such,
instead of taking its own busy state as the norm. `measure_many` discards rounds that are not
clean, runs replacement rounds while its budget lasts, and flags every figure of a session that
could not collect enough clean rounds.

`load_snapshot` records the 1/5/15-minute load average and the CPU time stolen by the hypervisor
(Linux /proc/stat), for the records of a measurement session.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_TOL = 0.25
# Sized by measurement on the 2-core dev host (bf16 properties): a [4, 512] x 8 chain ran 0.08 ms with
# a 14% coefficient of variation, so thread wake-up jitter alone crossed the 25% rule in every round
# of a quiet session; [8, 1536] x 16 runs ~1.9 ms at 2.5% CV quiet and ~3.5 ms (+87%) beside a
# one-core busy loop.
REF_DIM = 1536
REF_BATCH = 8
REF_DEPTH = 16
REF_RUNS = 5
# Untimed runs before each reading. Right after a measurement round the kernel's first runs are slow
# (its 75 MB of weights and thread pool are cold: 3.5 ms falling to 2.9 ms over four runs on the dev
# host, and 2.5 -> 4 ms medians after the profile's 40-model rounds), while the reading before the next
# round follows the previous reading and is warm. Without these runs every round of a long session
# read as interfered, and the session ran its whole budget of extra rounds for nothing.
REF_WARMUP = 3
_SKIP_PROPS = ("KV_CACHE_PRECISION", "KEY_CACHE_GROUP_SIZE", "VALUE_CACHE_GROUP_SIZE")


class ReferenceKernel:
    """A fixed OpenVINO workload whose duration tracks how busy the measured cores are."""

    def __init__(self, properties: dict[str, Any], core: Any = None, seed: int = 0):
        import openvino as ov
        import openvino.opset13 as ops

        rng = np.random.default_rng(seed)
        x = ops.parameter([REF_BATCH, REF_DIM], np.float32, name="x")
        h = x
        for _ in range(REF_DEPTH):
            w = (rng.standard_normal((REF_DIM, REF_DIM)) / np.sqrt(REF_DIM)).astype(np.float32)
            h = ops.tanh(ops.matmul(h, ops.constant(np.ascontiguousarray(w)), False, False))
        model = ov.Model([h], [x], "hwnas_reference_kernel")
        from hwnas.hardware.targets import ov_value as _ov_value

        props = {k: _ov_value(v) for k, v in properties.items() if k not in _SKIP_PROPS}
        shape = {"dim": REF_DIM, "batch": REF_BATCH, "depth": REF_DEPTH}  # another kernel has another best
        self.properties_key = hashlib.sha256(json.dumps([sorted(props.items()), shape]).encode()).hexdigest()[:12]
        self.request = (core or ov.Core()).compile_model(model, "CPU", props).create_infer_request()
        self.input = rng.standard_normal((REF_BATCH, REF_DIM)).astype(np.float32)
        for _ in range(3):
            self.request.infer({0: self.input})

    def time_ms(self, runs: int = REF_RUNS, warmup: int = REF_WARMUP) -> float:
        """Median duration (ms) of `runs` inferences after `warmup` untimed ones (so that a reading taken
        right after a round and one taken after another reading see the kernel equally warm)."""
        for _ in range(warmup):
            self.request.infer({0: self.input})
        out = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self.request.infer({0: self.input})
            out.append((time.perf_counter() - t0) * 1e3)
        return float(statistics.median(out))


def classify_rounds(readings: Sequence[tuple[float, float]], baseline_ms: float, tol: float = DEFAULT_TOL) -> list[bool]:
    """True for each round whose (before, after) reference readings are both within `tol` of the baseline."""
    limit = baseline_ms * (1.0 + tol)
    return [max(b, a) <= limit for b, a in readings]


def baseline_of(readings: Sequence[tuple[float, float]], host_best_ms: float | None) -> float:
    """The fastest reading of the session, or the host's best ever if that is faster."""
    vals = [v for pair in readings for v in pair]
    best = min(vals) if vals else float("inf")
    return min(best, host_best_ms) if host_best_ms else best


# ---------------------------------------------------------------------------- host-wide best reading
def _best_file(host_fingerprint: str) -> Path:
    from hwnas.model.loading import cache_dir

    return cache_dir() / "host" / f"{host_fingerprint}-reference.json"


def host_best(host_fingerprint: str, properties_key: str) -> float | None:
    """The fastest reference reading ever recorded on this host with these properties (None if none)."""
    p = _best_file(host_fingerprint)
    try:
        v = json.loads(p.read_text(encoding="utf-8")).get(properties_key)
        return float(v["best_ms"]) if v else None
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def record_best(host_fingerprint: str, properties_key: str, best_ms: float) -> None:
    """Lower the host's best reading to `best_ms` if it is faster (best effort; a read-only cache is fine)."""
    from hwnas.io import write_json_atomic

    p = _best_file(host_fingerprint)
    try:
        d = json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}
    except (OSError, json.JSONDecodeError):
        d = {}
    old = (d.get(properties_key) or {}).get("best_ms")
    if old is not None and float(old) <= best_ms:
        return
    d[properties_key] = {"best_ms": round(float(best_ms), 5), "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        write_json_atomic(p, d)
    except Exception as e:  # noqa: BLE001
        log.debug("cannot record the reference kernel's best time: %s", e)


# ---------------------------------------------------------------------------- host load
def _cpu_times() -> tuple[float, float] | None:
    """(total jiffies, steal jiffies) from /proc/stat, None off Linux."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    vals = [float(x) for x in first[1:]]
    steal = vals[7] if len(vals) > 7 else 0.0
    return sum(vals[:8]), steal


def load_snapshot() -> dict[str, Any]:
    """Load averages and cumulative CPU/steal time now (feed two of them to `load_delta`)."""
    snap: dict[str, Any] = {"time": time.time()}
    try:
        snap["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        snap["loadavg"] = None
    snap["cpu_jiffies"] = _cpu_times()
    return snap


def load_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Host load over a session: load averages at both ends and the share of CPU time stolen in between."""
    out: dict[str, Any] = {"loadavg_before": before.get("loadavg"), "loadavg_after": after.get("loadavg"),
                           "cpus": os.cpu_count()}
    a, b = before.get("cpu_jiffies"), after.get("cpu_jiffies")
    if a and b and b[0] > a[0]:
        out["steal_pct"] = round(100.0 * (b[1] - a[1]) / (b[0] - a[0]), 2)
    return out
