"""Side-by-side speed of a bundle and its baselines, measured in the same run on this host.

Baselines (what a user would otherwise deploy):
- ``openvino-nncf-int8``: the full model exported by optimum-intel with its own NNCF int8 weight
  compression (``OVWeightQuantizationConfig(bits=8)``), cached per model hash and tool versions;
- ``pytorch-fp32``: the full model in PyTorch, float32, eager, with a KV cache.

OpenVINO models are timed with `hwnas.hardware.measure.measure_ir` under the target's properties and
workload; PyTorch with the same workload, warm-up, repeats and statistics (`measure_batch`).
Ratios are against the ``openvino-nncf-int8`` row: speed-up = baseline TPOT / TPOT, size ratio =
baseline weight bytes / weight bytes. OpenVINO rows are measured in one session of interleaved
rounds, so their speed-ups are paired ratios over those rounds with a 95% bootstrap interval
(``*_ci95``; `hwnas.hardware.measure.speedup`); the PyTorch row is timed on its own and its ratio
carries no interval.
"""
from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
NNCF_INT8 = "openvino-nncf-int8"
TORCH_FP32 = "pytorch-fp32"
SPECULATIVE = "speculative"


@dataclass
class BenchRow:
    name: str
    kind: str                     # "bundle" | NNCF_INT8 | TORCH_FP32 | SPECULATIVE | "openvino"
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    throughput_tok_s: float | None = None      # at the target's throughput batch size
    weight_bytes: int | None = None            # openvino_model.bin, or torch parameters
    total_bytes: int | None = None             # whole folder
    accuracy: dict | None = None               # {"tasks": {...}, "mean": ...}
    extra: dict = field(default_factory=dict)
    measurement: Any = None                    # the hwnas Measurement (OpenVINO rows), for paired ratios; not in to_dict

    @property
    def decode_tok_s(self) -> float | None:
        """Decode tokens per second at the latency batch (1000 / TPOT)."""
        return 1000.0 / self.tpot_ms if self.tpot_ms else None

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "ttft_ms": self.ttft_ms, "tpot_ms": self.tpot_ms,
                "decode_tok_s": self.decode_tok_s, "throughput_tok_s": self.throughput_tok_s,
                "weight_bytes": self.weight_bytes, "total_bytes": self.total_bytes, "accuracy": self.accuracy,
                **self.extra}


def folder_bytes(folder: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def ir_rows(items: Sequence[tuple[str, str, str | Path]], target: Any, *, host: Any = None, seed: int = 0,
            progress: Progress | None = None, properties: Sequence[dict | None] | None = None) -> list[BenchRow]:
    """Measure several IR folders (name, kind, folder) with their repeats interleaved (hwnas.hardware.measure.measure_many).

    properties: per item, OpenVINO properties set over the target's (a bundle's runtime genes), or None."""
    from hwnas.hardware.measure import MeasureJob, measure_many

    props = list(properties or [None] * len(items))
    jobs = [MeasureJob(str(Path(folder)), name, kind="model", properties=dict(p) if p else None)
            for (name, _, folder), p in zip(items, props)]
    ms = measure_many(jobs, target, host=host, seed=seed, progress=progress)
    rows = []
    for (name, kind, folder), m in zip(items, ms):
        folder = Path(folder)
        rows.append(BenchRow(name=name, kind=kind, ttft_ms=m.ttft_ms, tpot_ms=m.tpot_ms, throughput_tok_s=m.throughput_tok_s,
                             weight_bytes=(folder / "openvino_model.bin").stat().st_size, total_bytes=folder_bytes(folder),
                             extra={"stable": m.stable, "note": m.note, "properties": m.properties,
                                    "tpot_samples_ms": list(m.batches[0].tpot_samples_ms),
                                    "tpot_ci95_ms": list(m.batches[0].tpot_ci_ms or [])},
                             measurement=m))
    return rows


BASELINE_FORMAT = 2  # bump when the baseline recipe changes (cache key)


def nncf_int8_ir(loaded: Any, out: str | Path | None = None) -> Path:
    """The full model as optimum-intel ships it with NNCF int8 weights (cached unless `out` is given).

    optimum-intel's own flow: export the float IR, then `OVModelForCausalLM.from_pretrained(ir,
    quantization_config=OVWeightQuantizationConfig(bits=8))` (what `load_in_8bit=True` does: NNCF
    INT8_ASYM on every weight, embeddings included) and `save_pretrained`. (`export_from_model`'s
    `ov_config` does not compress by itself; only `main_export` adds that step.)
    """
    import shutil
    import warnings

    import torch
    from optimum.exporters.openvino import export_from_model
    from optimum.intel import OVModelForCausalLM
    from optimum.intel.openvino.configuration import OVWeightQuantizationConfig

    from hwnas.errors import ExportError
    from hwnas.hardware.irexport import tool_versions
    from hwnas.io import atomic_dir
    from hwnas.model.loading import cache_dir

    if out is None:
        import hashlib

        tag = hashlib.sha256(json.dumps([loaded.source.sha256(), tool_versions(), BASELINE_FORMAT],
                                        sort_keys=True).encode()).hexdigest()[:12]
        out = cache_dir() / "baselines" / f"{loaded.source.name}-nncf-int8-{tag}"
        if (out / "openvino_model.xml").is_file():
            return out
    out = Path(out)
    with atomic_dir(out, force=True) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stage = tmp / ".float"
        export_from_model(loaded.model, stage, task="text-generation-with-past")
        with nncf_progress(nncf_logs_info()):
            ov_model = OVModelForCausalLM.from_pretrained(str(stage), quantization_config=OVWeightQuantizationConfig(bits=8),
                                                          compile=False)
        ov_model.save_pretrained(str(tmp))
        del ov_model
        shutil.rmtree(stage)
        float_bytes = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
        if (tmp / "openvino_model.bin").stat().st_size > 0.6 * float_bytes:
            raise ExportError("optimum-intel did not compress the baseline's weights to int8")
    return out


def nncf_logs_info() -> bool:
    """Whether NNCF's INFO records would get through its logger (its level and filters, e.g. the CLI's
    errors-only filter without -v): NNCF's progress bars follow the same rule as its log."""
    lg = logging.getLogger("nncf")
    rec = lg.makeRecord("nncf", logging.INFO, __file__, 0, "progress", (), None)
    return lg.isEnabledFor(logging.INFO) and bool(lg.filter(rec))


@contextlib.contextmanager
def nncf_progress(enabled: bool):
    """NNCF's rich progress bars ("Applying Weight Compression", statistics collection) on or off.

    NNCF draws them with its own `track` class straight to rich's console, outside logging, and has
    no switch for them (`nncf.set_log_level` covers its log only); every NNCF algorithm builds its
    bars through that one class, so while off each one is made with `disable=True`.
    """
    if enabled:
        yield
        return
    from nncf.common.logging.track_progress import track

    init = track.__init__

    def quiet_init(self, *args, **kwargs):
        kwargs["disable"] = True
        init(self, *args, **kwargs)

    track.__init__ = quiet_init
    try:
        yield
    finally:
        track.__init__ = init


def measure_torch(model: Any, target: Any, *, seed: int = 0) -> BenchRow:
    """PyTorch fp32 eager timing with a KV cache: the target's workload, warm-up and repeats, same statistics."""
    import time

    import numpy as np
    import torch

    from hwnas.hardware.measure import BatchMeasurement

    model.eval()

    def generate(prompt: np.ndarray, new_tokens: int) -> tuple[float, list[float]]:
        ids = torch.from_numpy(prompt)
        with torch.inference_mode():
            t0 = time.perf_counter()
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1)  # last token only, as OpenVINO's prefill
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
            ttft = (time.perf_counter() - t0) * 1e3
            past = out.past_key_values
            steps = []
            for _ in range(new_tokens - 1):
                s = time.perf_counter()
                out = model(input_ids=tok, past_key_values=past, use_cache=True)
                past = out.past_key_values
                tok = out.logits[:, -1].argmax(-1, keepdim=True)
                steps.append((time.perf_counter() - s) * 1e3)
        return ttft, steps

    wl, ms = target.workload, target.measure
    rng = np.random.default_rng(seed)
    prompt = rng.integers(0, int(model.config.vocab_size), size=(max(wl.batch_sizes), wl.prompt_tokens), dtype=np.int64)
    batches = []
    for bs in wl.batch_sizes:
        for _ in range(ms.warmup):
            generate(prompt[:bs], wl.new_tokens)
        ttfts, steps = [], []
        for _ in range(ms.repeats):
            t, st = generate(prompt[:bs], wl.new_tokens)
            ttfts.append(t)
            steps.append(st)
        batches.append(BatchMeasurement.from_samples(bs, ttfts, steps, 0, ms.max_cv, estimator=ms.estimator,
                                                     max_rel_ci=ms.max_rel_ci or None, seed=seed))
    nbytes = sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values())
    return BenchRow(name="full model", kind=TORCH_FP32, ttft_ms=batches[0].ttft_ms, tpot_ms=batches[0].tpot_ms,
                    throughput_tok_s=batches[-1].throughput_tok_s, weight_bytes=nbytes, total_bytes=None,
                    extra={"stable": all(b.stable for b in batches), "threads": torch.get_num_threads(),
                           "tpot_samples_ms": list(batches[0].tpot_samples_ms)})


def bench_bundles(bundles: Sequence[str | Path], *, against: str | None = None, target: Any = None,
                  torch_baseline: bool = True, seed: int = 0, progress: Progress | None = None) -> list[BenchRow]:
    """Measure each bundle and the baselines of `against` (default: the first bundle's source model)."""
    from hwnas.deploy.manifest import read_manifest
    from hwnas.deploy.settings import bundle_properties, manifest_genes
    from hwnas.deploy.spec_bundle import draft_of
    from hwnas.deploy.speculative import measure_speculative
    from hwnas.hardware.host import detect_host
    from hwnas.hardware.targets import Target, load_target
    from hwnas.model.loading import load_model

    manifests = [read_manifest(b) for b in bundles]
    if target is None:
        t = manifests[0].target
        target = Target.from_dict(t, source="bundle manifest") if t else load_target("xeon")
    else:
        target = load_target(target)
    host = detect_host()
    against = against or manifests[0].model.get("spec") or "default"
    tick = progress or (lambda d, t, l="": None)
    total = len(bundles) + 1 + int(torch_baseline)
    tick(0, total, f"exporting {NNCF_INT8} baseline of {against}")
    loaded = load_model(against)
    base_dir = nncf_int8_ir(loaded)
    tick(1, total, "measuring (interleaved)")
    items = [("full model", NNCF_INT8, base_dir)] + [(Path(b).name, "bundle", b) for b in bundles]
    rows = ir_rows(items, target, host=host, seed=seed,
                   properties=[None] + [manifest_genes(m) or None for m in manifests])
    spec_rows = []
    for row, man, b in zip(rows[1:], manifests, bundles):
        row.accuracy = man.accuracy
        row.extra["quantization"] = man.quantization.get("name")
        row.extra["subnet"] = (man.subnet or {}).get("key")
        row.extra["runtime_genes"] = manifest_genes(man)
        if draft_of(b)[0] is not None:
            # The timed IR above is the bundle's full model without its draft; the speculative pair is
            # timed through openvino-genai (the runtime that runs the draft), against itself without the draft.
            row.name = f"{row.name} (no draft)"
            tick(1, total, f"measuring {Path(b).name} with its draft (openvino-genai)")
            props = bundle_properties(man, target, host)
            sp = measure_speculative(b, props, tokens=max(32, target.workload.new_tokens),
                                     repeats=max(3, target.measure.repeats))
            spec_rows.append(BenchRow(name=f"{Path(b).name} (draft {sp['draft']}, k={sp['num_assistant_tokens']})",
                                      kind=SPECULATIVE, tpot_ms=sp["tpot_ms"], weight_bytes=(Path(b) / "draft" / "openvino_model.bin").stat().st_size
                                      + (Path(b) / "openvino_model.bin").stat().st_size, total_bytes=folder_bytes(b),
                                      accuracy=man.accuracy, extra={**sp, "subnet": None,
                                                                    "quantization": man.quantization.get("name")}))
    rows += spec_rows
    if torch_baseline:
        tick(total - 1, total, f"measuring {TORCH_FP32}")
        rows.append(measure_torch(loaded.model, target, seed=seed))
    tick(total, total, "done")
    return rows


def ratios(rows: Sequence[BenchRow], baseline_kind: str = NNCF_INT8, seed: int = 0) -> list[dict]:
    """Per row: decode speed-up, TTFT speed-up, throughput ratio and size ratio vs the baseline row;
    paired ratios with 95% bootstrap intervals (``*_ci95``) where both were measured in one session."""
    from hwnas.errors import MeasurementError
    from hwnas.hardware.measure import speedup

    base = next((r for r in rows if r.kind == baseline_kind), None)
    out = []
    for r in rows:
        d = r.to_dict()
        if r.kind == SPECULATIVE:
            # Timed in another harness than the baseline: its speed-up is against the same bundle without
            # its draft in that harness (same rounds); the "(no draft)" row carries the ratio to the baseline.
            d.update(decode_speedup=r.extra.get("speculative_speedup"), ttft_speedup=None, throughput_ratio=None,
                     size_ratio=(base.weight_bytes / r.weight_bytes) if base is not None and base.weight_bytes
                     and r.weight_bytes else None,
                     ratio_note="speed-up vs the same bundle without its draft (openvino-genai, interleaved rounds)")
            out.append(d)
            continue
        if base is not None:
            d["decode_speedup"] = (base.tpot_ms / r.tpot_ms) if r.tpot_ms and base.tpot_ms else None
            d["ttft_speedup"] = (base.ttft_ms / r.ttft_ms) if r.ttft_ms and base.ttft_ms else None
            d["throughput_ratio"] = (r.throughput_tok_s / base.throughput_tok_s) if r.throughput_tok_s and base.throughput_tok_s else None
            d["size_ratio"] = (base.weight_bytes / r.weight_bytes) if r.weight_bytes and base.weight_bytes else None
            if r.measurement is not None and base.measurement is not None:
                try:
                    for key, metric in (("decode_speedup", "tpot_ms"), ("ttft_speedup", "ttft_ms"),
                                        ("throughput_ratio", "throughput_tok_s")):
                        sp = speedup(r.measurement, base.measurement, metric, seed=seed)
                        d[key], d[f"{key}_ci95"] = sp["value"], [sp["ci_low"], sp["ci_high"]]
                except MeasurementError as e:
                    d["ratio_note"] = str(e)
            elif r is not base:
                d["ratio_note"] = "timed on its own, not interleaved with the baseline: no interval"
        out.append(d)
    return out


def format_table(rows: Sequence[dict]) -> str:
    """A plain-text table of `ratios(...)` output."""
    head = ["model", "kind", "TTFT ms", "TPOT ms", "decode tok/s", "thr tok/s", "weights MB", "speed-up", "smaller", "acc"]
    lines = [head]
    for d in rows:
        acc = (d.get("accuracy") or {}).get("mean")
        lines.append([
            str(d["name"]), d["kind"] + (f" k={d.get('num_assistant_tokens')}" if d["kind"] == SPECULATIVE else ""),
            _f(d["ttft_ms"], 1), _f(d["tpot_ms"], 2), _f(d["decode_tok_s"], 1),
            _f(d["throughput_tok_s"], 1), _f(d["weight_bytes"] / 1e6 if d.get("weight_bytes") else None, 1),
            _f(d.get("decode_speedup"), 2, "x") + _ci(d.get("decode_speedup_ci95")) + ("" if d.get("stable", True) else " !")
            + (" vs no draft" if d["kind"] == SPECULATIVE else ""),
            _f(d.get("size_ratio"), 2, "x"), _f(100 * acc if acc is not None else None, 1),
        ])
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in lines)


def _ci(ci: Any) -> str:
    return f" [{ci[0]:.2f}-{ci[1]:.2f}]" if ci else ""


def _f(v: Any, digits: int, suffix: str = "") -> str:
    return "-" if v is None else f"{v:.{digits}f}{suffix}"
