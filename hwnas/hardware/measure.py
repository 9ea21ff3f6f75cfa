"""Time a stateful OpenVINO LLM IR on this CPU: TTFT, TPOT and throughput, as openvino-genai defines them.

Definitions (openvino_genai.PerfMetrics; hwnas reports medians over repeats, plus spread):
- **TTFT** (time to first token, ms): prefill of `prompt_tokens` tokens plus picking the first token.
- **TPOT** (time per output token, ms/token): duration of each later decode step (with KV cache)
  divided by the batch size; the first token is excluded. One sample per repeat = the median
  step of that generation.
- **throughput** (tokens/s) = 1000 / TPOT, i.e. generated tokens per second at that batch size.

TTFT and TPOT are reported at the target's first batch size (latency), throughput at its last.
The IR is run directly with the OpenVINO runtime (infer requests with input_ids, attention_mask,
position_ids, beam_idx; `reset_state` between generations); nothing is timed in PyTorch. As
openvino-genai does, the logits of a prefill are computed for the last position only (a Slice is
inserted before the LM head), so TTFT does not pay for logits nobody reads.

Each (model, batch size) gets warm-up generations, then `repeats` timed ones; when the
coefficient of variation of TTFT or TPOT samples is above `max_cv`, another round of repeats is
added (at most `max_remeasure` rounds) and the measurement is flagged unstable if that did not help.
`measure_many` interleaves the repeats of several models round-robin, so that a busy phase of a
shared machine slows every model alike rather than the one that happened to be running.
"""
from __future__ import annotations

import logging
import os
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from hwnas.errors import MeasurementError
from hwnas.hardware.targets import ov_value as _ov_value  # noqa: F401  (kept under its old name)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
Progress = Callable[[int, int, str], None]


# ---------------------------------------------------------------------------- records
def _stats(samples: list[float]) -> tuple[float, float, float]:
    """(median, IQR, coefficient of variation) of samples."""
    a = np.asarray(samples, dtype=float)
    med = float(np.median(a))
    q75, q25 = np.percentile(a, [75, 25])
    cv = float(a.std() / a.mean()) if len(a) > 1 and a.mean() > 0 else 0.0
    return med, float(q75 - q25), cv


@dataclass(frozen=True)
class BatchMeasurement:
    """Timings at one batch size over the rounds kept (one generation per round).

    `ttft_ms` / `tpot_ms` are the `estimator`'s figures (see hwnas.hardware.robust) with 95%
    bootstrap intervals over rounds; `ttft_samples_ms` holds one TTFT per kept round,
    `tpot_samples_ms` one per-round TPOT as the estimator sees a round (its fastest step for
    ``round_min``, its median step otherwise), `step_ms` the raw decode steps, `round_ids` which
    rounds of the session they come from (rounds are shared by every model of a session, so two
    models' figures can be paired round by round). `stable` is False when a figure's interval is
    wider than the target allows or the session could not collect enough rounds free of
    interference; `note` says which.
    """

    batch_size: int
    ttft_ms: float
    tpot_ms: float
    throughput_tok_s: float
    ttft_iqr_ms: float
    tpot_iqr_ms: float
    ttft_cv: float
    tpot_cv: float
    ttft_samples_ms: tuple[float, ...]
    tpot_samples_ms: tuple[float, ...]
    step_ms: tuple[tuple[float, ...], ...]  # raw decode-step durations (whole batch) of each kept round
    repeats: int
    remeasured: int
    stable: bool
    estimator: str = "median"
    round_ids: tuple[int, ...] = ()
    ttft_ci_ms: tuple[float, float] | None = None
    tpot_ci_ms: tuple[float, float] | None = None
    discarded_rounds: int = 0
    note: str = ""

    @classmethod
    def from_samples(cls, batch_size: int, ttfts: list[float], steps: list[list[float]], remeasured: int,
                     max_cv: float = 0.1, *, estimator: str = "median", round_ids: Sequence[int] | None = None,
                     max_rel_ci: float | None = None, discarded_rounds: int = 0, interference: str = "",
                     seed: int = 0) -> "BatchMeasurement":
        """Figures from per-round samples. Stability: with `max_rel_ci`, both 95% intervals must be
        within +-max_rel_ci of the figure; without it (old callers), the per-round CV within `max_cv`."""
        from hwnas.hardware import robust

        tpots = [v / batch_size for v in robust.per_round_tpot(steps, estimator)]
        _, ttft_iqr, ttft_cv = _stats(ttfts)
        _, tpot_iqr, tpot_cv = _stats(tpots)
        ttft = robust.ttft_estimate(ttfts, estimator)
        tpot = robust.tpot_estimate(steps, estimator) / batch_size
        ttft_ci = robust.ttft_ci(ttfts, estimator, seed=seed)
        lo, hi = robust.tpot_ci(steps, estimator, seed=seed)
        tpot_ci = (lo / batch_size, hi / batch_size)
        notes = []
        if max_rel_ci is not None:
            for name, v, ci in (("TTFT", ttft, ttft_ci), ("TPOT", tpot, tpot_ci)):
                w = robust.relative_halfwidth(ci, v)
                if w > max_rel_ci:
                    notes.append(f"{name} +-{100 * w:.1f}% (95% CI) > +-{100 * max_rel_ci:.1f}%")
        elif ttft_cv > max_cv or tpot_cv > max_cv:
            notes.append(f"CV TTFT {ttft_cv:.2f} / TPOT {tpot_cv:.2f} > {max_cv:.2f}")
        if interference:
            notes.append(interference)
        return cls(
            batch_size=batch_size, ttft_ms=ttft, tpot_ms=tpot, throughput_tok_s=1000.0 / tpot,
            ttft_iqr_ms=ttft_iqr, tpot_iqr_ms=tpot_iqr, ttft_cv=ttft_cv, tpot_cv=tpot_cv,
            ttft_samples_ms=tuple(round(x, 4) for x in ttfts), tpot_samples_ms=tuple(round(x, 4) for x in tpots),
            step_ms=tuple(tuple(round(x, 4) for x in s) for s in steps), repeats=len(ttfts), remeasured=remeasured,
            stable=not notes, estimator=estimator,
            round_ids=tuple(int(r) for r in (round_ids if round_ids is not None else range(len(ttfts)))),
            ttft_ci_ms=(round(ttft_ci[0], 4), round(ttft_ci[1], 4)), tpot_ci_ms=(round(tpot_ci[0], 4), round(tpot_ci[1], 4)),
            discarded_rounds=discarded_rounds, note="; ".join(notes),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size, "ttft_ms": self.ttft_ms, "tpot_ms": self.tpot_ms,
            "throughput_tok_s": self.throughput_tok_s, "ttft_iqr_ms": self.ttft_iqr_ms, "tpot_iqr_ms": self.tpot_iqr_ms,
            "ttft_cv": self.ttft_cv, "tpot_cv": self.tpot_cv, "ttft_samples_ms": list(self.ttft_samples_ms),
            "tpot_samples_ms": list(self.tpot_samples_ms), "step_ms": [list(s) for s in self.step_ms],
            "repeats": self.repeats, "remeasured": self.remeasured, "stable": self.stable,
            "estimator": self.estimator, "round_ids": list(self.round_ids),
            "ttft_ci_ms": list(self.ttft_ci_ms) if self.ttft_ci_ms else None,
            "tpot_ci_ms": list(self.tpot_ci_ms) if self.tpot_ci_ms else None,
            "discarded_rounds": self.discarded_rounds, "note": self.note,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BatchMeasurement":
        ci = lambda v: (float(v[0]), float(v[1])) if v else None  # noqa: E731
        return cls(
            batch_size=int(d["batch_size"]), ttft_ms=float(d["ttft_ms"]), tpot_ms=float(d["tpot_ms"]),
            throughput_tok_s=float(d["throughput_tok_s"]), ttft_iqr_ms=float(d["ttft_iqr_ms"]),
            tpot_iqr_ms=float(d["tpot_iqr_ms"]), ttft_cv=float(d["ttft_cv"]), tpot_cv=float(d["tpot_cv"]),
            ttft_samples_ms=tuple(d["ttft_samples_ms"]), tpot_samples_ms=tuple(d["tpot_samples_ms"]),
            step_ms=tuple(tuple(s) for s in d.get("step_ms", [])), repeats=int(d["repeats"]),
            remeasured=int(d.get("remeasured", 0)), stable=bool(d.get("stable", True)),
            estimator=d.get("estimator", "median"), round_ids=tuple(int(r) for r in d.get("round_ids", [])),
            ttft_ci_ms=ci(d.get("ttft_ci_ms")), tpot_ci_ms=ci(d.get("tpot_ci_ms")),
            discarded_rounds=int(d.get("discarded_rounds", 0)), note=d.get("note", ""),
        )


@dataclass(frozen=True)
class Measurement:
    """One model measured on one host for one target. Units are in the field names."""

    subnet_key: str
    target: str
    host_fingerprint: str
    ttft_ms: float               # at the latency batch (the target's first batch size)
    tpot_ms: float               # at the latency batch
    throughput_tok_s: float      # at the throughput batch (the target's last batch size)
    latency_batch_size: int
    throughput_batch_size: int
    prompt_tokens: int
    new_tokens: int
    batches: tuple[BatchMeasurement, ...]
    properties: dict[str, Any]   # the OpenVINO properties really used (resolved for this host)
    kind: str = "subnet"         # "subnet" | "probe" | "model"
    subnet: dict[str, Any] | None = None
    n_params: int = 0
    mlp_widths: tuple[int, ...] = ()  # per kept layer: what the latency model needs
    warmup: int = 1
    compile_ms: float = 0.0
    openvino_version: str = ""
    timestamp: str = ""
    session: dict[str, Any] = field(default_factory=dict)  # the interleaved session: id, rounds, interference, load
    schema_version: int = field(default=SCHEMA_VERSION)

    @property
    def stable(self) -> bool:
        return all(b.stable for b in self.batches)

    @property
    def note(self) -> str:
        """Why a figure is not to be trusted as is ('' when every figure is stable)."""
        return "; ".join(f"@{b.batch_size}: {b.note}" for b in self.batches if b.note)

    def batch(self, batch_size: int) -> BatchMeasurement:
        for b in self.batches:
            if b.batch_size == batch_size:
                return b
        raise KeyError(batch_size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version, "subnet_key": self.subnet_key, "kind": self.kind,
            "subnet": self.subnet, "mlp_widths": list(self.mlp_widths), "n_params": self.n_params,
            "target": self.target, "host_fingerprint": self.host_fingerprint,
            "ttft_ms": self.ttft_ms, "tpot_ms": self.tpot_ms, "throughput_tok_s": self.throughput_tok_s,
            "latency_batch_size": self.latency_batch_size, "throughput_batch_size": self.throughput_batch_size,
            "prompt_tokens": self.prompt_tokens, "new_tokens": self.new_tokens, "stable": self.stable,
            "batches": [b.to_dict() for b in self.batches], "properties": dict(self.properties),
            "warmup": self.warmup, "compile_ms": self.compile_ms, "openvino_version": self.openvino_version,
            "timestamp": self.timestamp, "note": self.note, "session": dict(self.session),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Measurement":
        try:
            return cls(
                subnet_key=d["subnet_key"], target=d["target"], host_fingerprint=d["host_fingerprint"],
                ttft_ms=float(d["ttft_ms"]), tpot_ms=float(d["tpot_ms"]), throughput_tok_s=float(d["throughput_tok_s"]),
                latency_batch_size=int(d["latency_batch_size"]), throughput_batch_size=int(d["throughput_batch_size"]),
                prompt_tokens=int(d["prompt_tokens"]), new_tokens=int(d["new_tokens"]),
                batches=tuple(BatchMeasurement.from_dict(b) for b in d["batches"]), properties=dict(d.get("properties", {})),
                kind=d.get("kind", "subnet"), subnet=d.get("subnet"), n_params=int(d.get("n_params", 0)),
                mlp_widths=tuple(int(w) for w in d.get("mlp_widths", [])), warmup=int(d.get("warmup", 1)),
                compile_ms=float(d.get("compile_ms", 0.0)), openvino_version=d.get("openvino_version", ""),
                timestamp=d.get("timestamp", ""), session=dict(d.get("session") or {}),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise MeasurementError(f"malformed measurement record ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------------- runtime
def _head_matmul(ov_model: Any) -> Any:
    """The LM-head MatMul that produces the logits output (None when the graph has another shape)."""
    results = [o for o in ov_model.outputs if "logits" in o.get_names()]
    if not results:
        return None
    node = results[0].get_node().input_value(0).get_node()
    for _ in range(4):  # the head MatMul may be followed by a Convert
        if node.get_type_name() == "MatMul":
            break
        if node.get_input_size() == 0:
            return None
        node = node.input_value(0).get_node()
    if node.get_type_name() != "MatMul" or node.input_value(0).get_partial_shape().rank.get_length() != 3:
        return None
    return node


def _slice_head_input(ov_model: Any, start: Any, new_parameter: Any = None) -> bool:
    """Feed the LM head hidden[:, start:] (sequence axis) instead of every position. True if done.
    `new_parameter`: the Parameter that `start` reads, added to the model's inputs."""
    import openvino.opset13 as ops

    node = _head_matmul(ov_model)
    if node is None:
        return False
    if new_parameter is not None:
        ov_model.add_parameters([new_parameter])
    i64 = np.int64
    sl = ops.slice(node.input_value(0), start, np.array([np.iinfo(i64).max], i64), np.array([1], i64),
                   np.array([1], i64))
    node.input(0).replace_source_output(sl.output(0))
    ov_model.validate_nodes_and_infer_types()
    return True


def slice_logits_to_last_token(ov_model: Any) -> bool:
    """Insert Slice(hidden[:, -1:]) before the LM-head MatMul, as openvino-genai does. True if done."""
    return _slice_head_input(ov_model, np.array([-1], np.int64))


LOGITS_FROM = "logits_from"


def slice_logits_from_input(ov_model: Any) -> bool:
    """Add an int64 [1] input ``logits_from``: the LM head runs on positions ``logits_from:`` only (negative
    counts from the end). Scoring needs logits at a choice's few positions, not the context's: the head is a
    fifth of a small model's prefill. True if done (False: no head MatMul found, logits stay full-length)."""
    import openvino.opset13 as ops

    param = ops.parameter([1], np.int64, name=LOGITS_FROM)
    param.output(0).get_tensor().set_names({LOGITS_FROM})
    return _slice_head_input(ov_model, param, param)


def compile_ir(ir: str | os.PathLike[str], properties: dict[str, Any], *, slice_logits: bool = True,
               core: Any = None) -> tuple[Any, float]:
    """Read and compile an IR for CPU with `properties`; returns (compiled model, compile ms).

    `ir` may also be an openvino.Model in memory (a timing IR in a subnet's weight formats,
    `hwnas.hardware.quant_ir`); it is changed in place (logits sliced)."""
    import openvino as ov

    core = core or ov.Core()
    t0 = time.perf_counter()
    if isinstance(ir, ov.Model):
        model, xml = ir, Path(ir.get_friendly_name() or "model")
    else:
        path = Path(ir)
        xml = path / "openvino_model.xml" if path.is_dir() else path
        if not xml.is_file():
            raise MeasurementError(f"no OpenVINO IR at {xml}")
        model = core.read_model(str(xml))
    if slice_logits and not slice_logits_to_last_token(model):
        log.debug("no LM-head MatMul found in %s; logits stay full-length", xml)
    try:
        compiled = core.compile_model(model, "CPU", {k: _ov_value(v) for k, v in properties.items()})
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MeasurementError(f"OpenVINO cannot compile {xml.name} with properties {properties}: {first}") from None
    return compiled, (time.perf_counter() - t0) * 1e3


class StatefulRunner:
    """Greedy generation on one compiled stateful IR, timing prefill and each decode step."""

    def __init__(self, compiled: Any, vocab_size: int | None = None):
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        names = {n for i in compiled.inputs for n in i.get_names()}
        missing = [n for n in ("input_ids", "attention_mask", "beam_idx") if n not in names]
        if missing:
            raise MeasurementError(f"IR is not a stateful LLM with KV cache (missing inputs {missing}); export with stateful=True")
        self.has_position_ids = "position_ids" in names
        out = [o for o in compiled.outputs if "logits" in o.get_names()]
        self.vocab_size = vocab_size or int(out[0].get_partial_shape()[-1].get_length())

    def generate(self, prompt_ids: np.ndarray, new_tokens: int) -> tuple[float, list[float]]:
        """Prefill `prompt_ids` [B, P] then `new_tokens - 1` decode steps; returns (ttft_ms, step_ms list)."""
        req = self.request
        b, p = prompt_ids.shape
        beam = np.arange(b, dtype=np.int32)
        feeds = [{"input_ids": prompt_ids, "attention_mask": np.ones((b, p), np.int64), "beam_idx": beam}]
        for i in range(new_tokens - 1):
            f = {"attention_mask": np.ones((b, p + i + 1), np.int64), "beam_idx": beam}
            feeds.append(f)
        if self.has_position_ids:
            feeds[0]["position_ids"] = np.tile(np.arange(p, dtype=np.int64), (b, 1))
            for i, f in enumerate(feeds[1:]):
                f["position_ids"] = np.full((b, 1), p + i, np.int64)
        req.reset_state()
        t0 = time.perf_counter()
        req.infer(feeds[0])
        tok = req.get_tensor("logits").data[:, -1].argmax(-1).astype(np.int64).reshape(b, 1)
        t1 = time.perf_counter()
        ttft = (t1 - t0) * 1e3
        steps: list[float] = []
        for f in feeds[1:]:
            s = time.perf_counter()
            f["input_ids"] = tok
            req.infer(f)
            tok = req.get_tensor("logits").data[:, -1].argmax(-1).astype(np.int64).reshape(b, 1)
            steps.append((time.perf_counter() - s) * 1e3)
        return ttft, steps


@dataclass(frozen=True)
class MeasureJob:
    """One IR to measure and what it is (carried into its Measurement)."""

    ir: str
    subnet_key: str
    subnet: dict[str, Any] | None = None
    mlp_widths: tuple[int, ...] = ()
    n_params: int = 0
    kind: str = "subnet"
    properties: dict[str, Any] | None = None   # compile properties laid over the target's (a subnet's runtime genes)
    build: Any = None                          # callable -> openvino.Model, used instead of `ir` when given


def measure_ir(
    ir: str | os.PathLike[str],
    target: Any,
    *,
    host: Any = None,
    subnet_key: str = "",
    subnet: dict[str, Any] | None = None,
    mlp_widths: tuple[int, ...] = (),
    n_params: int = 0,
    kind: str = "subnet",
    seed: int = 0,
    progress: Progress | None = None,
    properties: dict[str, Any] | None = None,
    build: Any = None,
) -> Measurement:
    """Measure one stateful IR folder (or .xml, or the model `build()` returns) under `target`'s properties
    (with `properties` on top) and workload on this host."""
    job = MeasureJob(str(ir), subnet_key, subnet, tuple(mlp_widths), n_params, kind, properties, build)
    return measure_many([job], target, host=host, seed=seed, progress=progress)[0]


def measure_many(
    jobs: Sequence[MeasureJob],
    target: Any,
    *,
    host: Any = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> list[Measurement]:
    """Measure several IRs in one session of short interleaved rounds, robust to a busy host.

    All models are compiled and warmed up first. Each round then runs one generation of every
    model at every batch size (the order rotates from round to round), with the reference kernel
    (hwnas.hardware.interference) timed just before and after. Rounds during which the kernel ran
    slower than `interference_tol` above its best are discarded; replacement rounds (and rounds
    for models whose figures are still too uncertain, see BatchMeasurement) are run while the
    budget of `max_remeasure` x `repeats` extra rounds lasts. When too few clean rounds remain,
    every round is used and the figures are flagged. Figures are the target's `estimator` over
    the rounds kept, with bootstrap intervals; rounds are shared by every model of the session,
    so ratios between models can be paired round by round (`speedup`).
    """
    from hwnas.hardware.host import detect_host

    if not jobs:
        return []
    session = _Session(jobs, target, host or detect_host(), seed, progress)
    session.compile_and_warm_up()
    session.run_rounds()
    session.run_extra_rounds()
    return session.measurements()


class _Session:
    """The state of one `measure_many` call: compiled models, the reference kernel, and every
    round's timings (``data[(job, batch)][round] = (ttft, decode steps)``, ``readings[round] =
    (reference kernel before, after)``)."""

    def __init__(self, jobs: Sequence[MeasureJob], target: Any, host: Any, seed: int, progress: Progress | None):
        self.jobs, self.target, self.host, self.seed, self.progress = list(jobs), target, host, seed, progress
        self.props = target.resolved_properties(host)
        self.wl, self.ms = target.workload, target.measure
        self.estimator = getattr(self.ms, "estimator", "median")
        self.tol = float(getattr(self.ms, "interference_tol", 0.0))
        self.max_rel_ci = getattr(self.ms, "max_rel_ci", None) or None
        self.per_round = len(self.wl.batch_sizes)
        self.total = len(self.jobs) * (1 + self.per_round * (self.ms.warmup + self.ms.repeats))
        self.done = 0
        self.min_clean = max(2, (self.ms.repeats + 1) // 2)
        self.data: dict[tuple[int, int], dict[int, tuple[float, list[float]]]] = {
            (j, b): {} for j in range(len(self.jobs)) for b in self.wl.batch_sizes}
        self.readings: dict[int, tuple[float, float]] = {}
        self.rounds = 0

    def tick(self, label: str) -> None:
        self.done += 1
        if self.progress:
            self.progress(min(self.done, self.total), self.total, label)

    # -- before the rounds
    def compile_and_warm_up(self) -> None:
        """Compile every IR, build the reference kernel and its host record, warm every model up."""
        import openvino as ov

        from hwnas.hardware import interference as itf

        core = ov.Core()
        self.runners: list[StatefulRunner] = []
        self.compile_ms: list[float] = []
        self.job_props: list[dict[str, Any]] = []
        for job in self.jobs:
            jp = {**self.props, **(job.properties or {})}
            self.job_props.append(jp)
            compiled, cms = compile_ir(job.build() if job.build is not None else job.ir, jp, core=core)
            self.runners.append(StatefulRunner(compiled))
            self.compile_ms.append(cms)
            self.tick(f"compiled {job.subnet_key}")
        self.ref = itf.ReferenceKernel(self.props, core=core, seed=self.seed) if self.tol > 0 else None
        self.host_best = itf.host_best(self.host.fingerprint, self.ref.properties_key) if self.ref else None
        rng = np.random.default_rng(self.seed)
        vocab = min(r.vocab_size for r in self.runners)
        self.prompt = rng.integers(0, vocab, size=(max(self.wl.batch_sizes), self.wl.prompt_tokens), dtype=np.int64)
        for j, r in enumerate(self.runners):
            for b in self.wl.batch_sizes:
                for _ in range(self.ms.warmup):
                    r.generate(self.prompt[:b], self.wl.new_tokens)
                    self.tick(f"warm-up {self.jobs[j].subnet_key}")
        self.load0 = itf.load_snapshot()
        self.t_start = time.perf_counter()

    # -- rounds
    def one_round(self, which: Sequence[int], label: str) -> None:
        """Every model in `which` at every batch size (order rotated by round), reference kernel around it."""
        rid = self.rounds
        before = self.ref.time_ms() if self.ref else 0.0
        k = rid % len(which)
        for j in list(which[k:]) + list(which[:k]):
            for b in self.wl.batch_sizes:
                self.data[(j, b)][rid] = self.runners[j].generate(self.prompt[:b], self.wl.new_tokens)
                self.tick(f"{label} {self.jobs[j].subnet_key} @{b}")
        self.readings[rid] = (before, self.ref.time_ms() if self.ref else 0.0)
        self.rounds += 1

    def run_rounds(self) -> None:
        everyone = list(range(len(self.jobs)))
        for _ in range(self.ms.repeats):
            self.one_round(everyone, f"round {self.rounds + 1}/{self.ms.repeats}")

    def run_extra_rounds(self) -> None:
        """Replace interfered rounds and tighten unstable figures while the extra-round budget lasts."""
        budget = self.ms.max_remeasure * self.ms.repeats
        while budget > 0:
            clean, _ = self.clean_rounds()
            want = [j for j in range(len(self.jobs))
                    if any(len(set(self.data[(j, b)]) & clean) < self.ms.repeats or not self.result(j, b, clean).stable
                           for b in self.wl.batch_sizes)]
            if not want:
                break
            self.total += len(want) * self.per_round
            self.one_round(want, f"extra round {self.rounds + 1 - self.ms.repeats}")
            budget -= 1

    # -- figures
    def clean_rounds(self) -> tuple[set[int], float]:
        """Rounds free of interference (reference kernel within tolerance of its baseline), and that baseline."""
        from hwnas.hardware import interference as itf

        if not self.ref:
            return set(self.readings), 0.0
        base = itf.baseline_of(list(self.readings.values()), self.host_best)
        ids = sorted(self.readings)
        ok = itf.classify_rounds([self.readings[i] for i in ids], base, self.tol)
        return {i for i, c in zip(ids, ok) if c}, base

    def result(self, j: int, b: int, clean: set[int]) -> BatchMeasurement:
        """Model j at batch b from its clean rounds (all rounds, flagged, when too few are clean)."""
        rounds = self.data[(j, b)]
        kept = sorted(r for r in rounds if r in clean)
        note = ""
        if len(kept) < self.min_clean:
            note = (f"host busy: only {len(kept)} of {len(rounds)} rounds free of interference (reference kernel "
                    f">{100 * self.tol:.0f}% slower than its best); figure from all rounds")
            kept = sorted(rounds)
        return BatchMeasurement.from_samples(
            b, [rounds[r][0] for r in kept], [rounds[r][1] for r in kept], max(0, len(rounds) - self.ms.repeats),
            self.ms.max_cv, estimator=self.estimator, round_ids=kept, max_rel_ci=self.max_rel_ci,
            discarded_rounds=len(rounds) - len(kept), interference=note, seed=self.seed + j,
        )

    def session_record(self, clean: set[int], base: float) -> dict[str, Any]:
        """What every Measurement of this session carries about it (rounds, load, reference kernel)."""
        from hwnas.hardware import interference as itf

        rid = self.rounds
        session: dict[str, Any] = {
            # unique per call (not from the seeded rng: two sessions in one second would share it)
            "id": f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:8]}",
            "models": len(self.jobs), "rounds": rid, "clean_rounds": len(clean), "estimator": self.estimator,
            "measure_s": round(time.perf_counter() - self.t_start, 2),
            "load": itf.load_delta(self.load0, itf.load_snapshot()),
        }
        if self.ref:
            worst = [max(p) / base for p in self.readings.values()]
            session["reference"] = {
                "baseline_ms": round(base, 5), "host_best_ms": self.host_best, "tolerance": self.tol,
                "median_ratio": round(float(np.median(worst)), 3), "max_ratio": round(float(max(worst)), 3),
                "readings_ms": [[round(a, 4), round(b, 4)] for a, b in (self.readings[i] for i in sorted(self.readings))]}
            if len(clean) < rid:
                log.info("%d of %d rounds ran under interference (reference kernel up to %.2fx its best) and were set "
                         "aside", rid - len(clean), rid, max(worst))
        return session

    def measurements(self) -> list[Measurement]:
        from hwnas.hardware import interference as itf

        clean, base = self.clean_rounds()
        if self.ref and self.readings:
            itf.record_best(self.host.fingerprint, self.ref.properties_key,
                            min(v for p in self.readings.values() for v in p))
        session = self.session_record(clean, base)
        wl, ms = self.wl, self.ms
        out = []
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        for j, job in enumerate(self.jobs):
            batches = tuple(self.result(j, b, clean) for b in wl.batch_sizes)
            for bm in batches:
                if not bm.stable:
                    log.warning("%s @%d: %s", job.subnet_key, bm.batch_size, bm.note)
            lat, thr = batches[0], batches[-1]
            out.append(Measurement(
                subnet_key=job.subnet_key, target=self.target.name, host_fingerprint=self.host.fingerprint,
                ttft_ms=lat.ttft_ms, tpot_ms=lat.tpot_ms, throughput_tok_s=thr.throughput_tok_s,
                latency_batch_size=lat.batch_size, throughput_batch_size=thr.batch_size,
                prompt_tokens=wl.prompt_tokens, new_tokens=wl.new_tokens, batches=batches, properties=self.job_props[j],
                kind=job.kind, subnet=job.subnet, n_params=job.n_params, mlp_widths=tuple(job.mlp_widths),
                warmup=ms.warmup, compile_ms=round(self.compile_ms[j], 1), openvino_version=self.host.openvino_version,
                timestamp=stamp, session=session,
            ))
        return out


def speedup(fast: Measurement, base: Measurement, metric: str = "tpot_ms", *, seed: int = 0,
            n_boot: int | None = None) -> dict[str, Any]:
    """How many times faster `fast` is than `base` on `metric`, with a 95% paired-bootstrap CI.

    metric: ``tpot_ms`` / ``ttft_ms`` (at the latency batch; value = base / fast) or
    ``throughput_tok_s`` (TPOT at the throughput batch; value = fast's throughput / base's). Both
    must come from one interleaved session (`measure_many`): the rounds both kept are paired and
    resampled together, so a slow phase that hit both cancels in the ratio.
    Returns {"value", "ci_low", "ci_high", "rounds", "metric", "estimator"}.
    """
    from hwnas.hardware import robust

    sid = fast.session.get("id")
    if not sid or sid != base.session.get("id"):
        raise MeasurementError(f"{fast.subnet_key} and {base.subnet_key} were not measured in one interleaved session; "
                               "a speed-up needs both in the same measure_many call")
    if metric not in ("tpot_ms", "ttft_ms", "throughput_tok_s"):
        raise MeasurementError(f"speed-up metric {metric!r} is not one of tpot_ms, ttft_ms, throughput_tok_s")
    bs = fast.throughput_batch_size if metric == "throughput_tok_s" else fast.latency_batch_size
    bf, bb = fast.batch(bs), base.batch(bs)
    common = sorted(set(bf.round_ids) & set(bb.round_ids))
    if not common:
        raise MeasurementError(f"{fast.subnet_key} and {base.subnet_key} share no measurement round")
    est = bf.estimator

    def rows(bm: BatchMeasurement) -> tuple[np.ndarray, list[list[float]]]:
        pos = {r: i for i, r in enumerate(bm.round_ids)}
        return (np.array([bm.ttft_samples_ms[pos[r]] for r in common], float),
                [list(bm.step_ms[pos[r]]) for r in common])

    (tf, sf), (tb, sb) = rows(bf), rows(bb)
    if metric == "ttft_ms":
        r = robust.paired_ratio(tb, tf, "ttft", est, seed=seed, n_boot=n_boot or robust.N_BOOT)
    else:
        r = robust.paired_ratio(sb, sf, "tpot", est, seed=seed, n_boot=n_boot or robust.N_BOOT)
    return {**{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}, "metric": metric, "estimator": est}


def time_static_ir(ir: str | os.PathLike[str], properties: dict[str, Any], inputs: dict[str, np.ndarray], *,
                   warmup: int = 2, repeats: int = 20, core: Any = None) -> list[float]:
    """Latency samples (ms) of a fixed-shape, stateless IR: the benchmark_app sanity check's counterpart."""
    compiled, _ = compile_ir(ir, properties, slice_logits=False, core=core)
    req = compiled.create_infer_request()
    for _ in range(warmup):
        req.infer(inputs)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        req.infer(inputs)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))
