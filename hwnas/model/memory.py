"""How much memory and disk each stage needs for a model, checked before anything heavy is loaded.

`estimate(stage, config, ...)` gives a `ResourceEstimate` (peak RSS and disk written, in bytes,
with the terms that make them up) from the model's ``config.json`` alone: parameter count, the
dtype the weights are loaded in (`hwnas.model.loading.resolve_dtype`), and the stage's options.
`check_fits(est, ...)` compares it with the machine (psutil's available memory, free disk where the
stage writes) and raises `ResourceError` in one line ("export of M needs ~X GB of memory, this
machine has Y GB available; ...") so the CLI exits 2 before loading anything.

Each stage's peak is a sum of terms a reader can check against the code: the Python process with
its libraries (`BASE`), the weights as loaded (`W`), what the stage adds per weight byte (an
OpenVINO conversion holds the traced graph's constants, INC a float32 copy of one layer and the
integer codes, eval a float32 lm_head for the log-softmax), activations and calibration
statistics. The per-stage factors were measured with `bench/scale_bench.py` on random-weight
1.1B / 3B / 7B folders (bench/results/scale_bench.json); the estimate is meant to be within 25%.
Set ``HWNAS_RESOURCE_CHECK=off`` to skip the check (e.g. with swap the estimate is conservative).

`memory_bytes` is what has to fit in RAM. Files a stage memory-maps and only reads (a safetensors
checkpoint loaded in its stored dtype, a bundle's IR .bin) are `mapped_bytes` instead: they count
in RSS while memory is free, but the kernel drops those clean pages under pressure and re-reads
them, so they cannot cause an OOM kill (bench/results/scale_bench_rss.json splits each measured
peak into anonymous and file-backed RSS: the 7B export peaked at 19.7 GB RSS, 12.3 GB of it the mapped
checkpoint, while its anonymous peak, 14.1 GB, came when those pages had been dropped). Only whole-model RTN export and serve were measured
this way; the other stages still count their weights in `memory_bytes`.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from hwnas.errors import HwnasError

GB = 1024 ** 3
ENV_VAR = "HWNAS_RESOURCE_CHECK"
STAGES = ("eval", "profile", "search", "extract", "export", "heal", "serve", "train")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

# Resident memory of a stage's process before it loads a model (Python, torch, transformers, and
# for the OpenVINO stages openvino + optimum-intel + Neural Compressor), measured on this stack.
BASE_TORCH = int(0.6 * GB)
BASE_OV = int(0.9 * GB)
# `hwnas serve`: Python, openvino_genai and the HTTP server, no torch (measured ~0.1 GB anonymous and
# ~0.1 GB of libraries before the first request, bench/results/scale_bench_rss.json)
BASE_SERVE = int(0.25 * GB)
# The serving engine's KV-cache pool (`Engine(cache_size_gb=1)`, openvino_genai's SchedulerConfig.cache_size):
# allocated as requests hold tokens, up to this size
KV_POOL = 1 * GB


class ResourceError(HwnasError):
    """A stage needs more memory or disk than the machine has."""


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a LLaMA-like model that its memory depends on (from config.json)."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    qkv_bias: bool = False

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | Any) -> "ModelShape":
        get = cfg.get if isinstance(cfg, Mapping) else (lambda k, d=None: getattr(cfg, k, d))
        h, nh = int(get("hidden_size")), int(get("num_attention_heads"))
        widths = get("hwnas_mlp_widths")
        inter = int(get("hwnas_full_width") or get("intermediate_size"))
        if widths:
            inter = int(round(sum(widths) / len(widths)))
        return cls(layers=int(get("num_hidden_layers")), hidden=h, intermediate=inter, heads=nh,
                   kv_heads=int(get("num_key_value_heads") or nh), head_dim=int(get("head_dim") or h // nh),
                   vocab=int(get("vocab_size")), tied=bool(get("tie_word_embeddings", False)),
                   qkv_bias=get("model_type") == "qwen2")

    def layer_params(self) -> int:
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        attn = h * q + 2 * h * kv + q * h + ((q + 2 * kv) if self.qkv_bias else 0)
        return attn + 3 * h * self.intermediate + 2 * h

    def linear_params(self) -> int:
        """Decoder linear weights (what INC quantizes)."""
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        return self.layers * (h * q + 2 * h * kv + q * h + 3 * h * self.intermediate)

    def head_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    def params(self) -> int:
        return self.layers * self.layer_params() + self.head_params() + self.hidden


@dataclass(frozen=True)
class ResourceEstimate:
    """Peak resident memory and disk written by one stage, in bytes, with the terms summed."""

    stage: str
    model: str
    dtype: str
    params: int
    memory_bytes: int
    disk_bytes: int
    terms: dict[str, int] = field(default_factory=dict)
    mapped_bytes: int = 0   # memory-mapped, read-only files: in RSS when memory is free, not in memory_bytes

    @property
    def mapped_gb(self) -> float:
        return self.mapped_bytes / GB

    @property
    def memory_gb(self) -> float:
        return self.memory_bytes / GB

    @property
    def disk_gb(self) -> float:
        return self.disk_bytes / GB

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(memory_gb=round(self.memory_gb, 2), disk_gb=round(self.disk_gb, 2), mapped_gb=round(self.mapped_gb, 2))
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ResourceEstimate":
        return cls(stage=str(d["stage"]), model=str(d["model"]), dtype=str(d["dtype"]), params=int(d["params"]),
                   memory_bytes=int(d["memory_bytes"]), disk_bytes=int(d["disk_bytes"]),
                   terms={str(k): int(v) for k, v in (d.get("terms") or {}).items()},
                   mapped_bytes=int(d.get("mapped_bytes") or 0))


def estimate(stage: str, config: Mapping[str, Any] | Any, *, dtype: str = "bfloat16", model: str = "model",
             subnet_fraction: float = 1.0, quant_bits: int = 8, samples: int = 2, batch_tokens: int = 512,
             ordered_cached: bool = False, ir_bytes: int | None = None, train_mode: str = "cheap",
             calibrated_quant: bool = False, mapped_weights: bool = False) -> ResourceEstimate:
    """Peak memory and disk of `stage` for a model with this config loaded in `dtype`.

    subnet_fraction: the subnet's share of the decoder (extract/export/heal of a subnet);
    quant_bits: export weight bits (8, 4, or 16/32 for --quant none); samples: subnets profiled;
    batch_tokens: tokens per forward pass (eval / heal / calibration); ordered_cached: the
    importance-ordered supernet is already in the cache (no ordering pass, no cache write);
    ir_bytes: serve only, the bundle's openvino_model.bin size; train_mode: heal's --train
    (cheap: norms and down_proj, all: every decoder tensor); calibrated_quant: export with GPTQ/AWQ,
    which quantize a copy of the whole model and trace its dequantized float32 version;
    mapped_weights: the weights are memory-mapped from a safetensors checkpoint stored in `dtype`
    (`weights_mapped`), so a whole-model RTN export reads them without holding them in RAM.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; one of {STAGES}")
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype {dtype!r}; one of {list(DTYPE_BYTES)}")
    s = ModelShape.from_config(config)
    b = DTYPE_BYTES[dtype]
    P = s.params()
    W = P * b
    sub = max(0.0, min(1.0, float(subnet_fraction)))
    sub_W = int((s.layers * s.layer_params() * sub + s.head_params()) * b)
    sub_linear = int(s.linear_params() * sub)
    head_f32 = s.vocab * s.hidden * 4               # lm_head upcast for log-softmax / logits
    act = int(batch_tokens * (s.hidden * 16 + s.intermediate * 6) * 4 + batch_tokens * s.vocab * 4)
    t: dict[str, int] = {}
    disk = 0
    mapped = 0
    order_disk = 0 if ordered_cached else W       # the ordered supernet is cached once per model
    if stage == "eval":
        t = {"base": BASE_TORCH, "weights": W, "lm_head_f32": head_f32, "activations": act}
    elif stage == "extract":
        t = {"base": BASE_TORCH, "weights": W, "recovery_stats": _recovery_stats(s, b), "activations": act,
             "save_shard": min(sub_W, 2 * GB)}
        disk = order_disk + sub_W
    elif stage == "search":
        t = {"base": BASE_OV, "weights": W, "lm_head_f32": head_f32, "activations": act,
             "recovery_stats": _recovery_stats(s, b), "ir_conversion": int(W * 0.5 * sub),
             # timing IRs of the full model and the subnets being compared, compiled together (measured
             # with 2 evaluations at 1.1B; whether more stay compiled at once was not measured)
             "compiled_irs": int(W * (1 + 0.75 * min(samples, 2)))}
        disk = order_disk + int(samples * sub_linear * 1.1)
    elif stage == "profile":
        # timing IRs hold the weights in the loaded dtype (bf16 for a bf16 checkpoint), and the measured
        # models are compiled together (interleaved rounds): the full model plus each sample, each counted
        # at the full model's size (with 3/4 per sample the 1.1B shape's 2-sample profile peaked 2.2 GB
        # above the estimate: 12.9 GB measured, bench/results/scale_bench.json)
        t = {"base": BASE_OV, "weights": W, "ir_conversion": W, "compiled_ir": int(W * (1 + samples))}
        disk = int((samples + 1) * W * 0.85)
    elif stage == "export":
        int_bytes = int(sub_linear * quant_bits / 8) + s.head_params()
        t = {"base": BASE_OV, "weights": W, "integer_codes": int_bytes,
             "ir_conversion": int(0.5 * sub_W), "layer_fp32": s.layer_params() * 4 * 2}
        if calibrated_quant:
            t.update(model_copy=sub_W, dequantized_fp32=int(sub_linear * 4))
        elif mapped_weights and sub >= 1.0:
            # Whole-model RTN traces and quantizes the loaded model itself, whose tensors are the mapped
            # checkpoint: only the pages being read (about one decoder layer) have to be resident. Measured
            # (bench/results/scale_bench_rss.json): anonymous RSS peaked at base + ir_conversion +
            # integer_codes (3.1 / 6.9 / 14.1 GB at 1.1B / 3B / 7B against 3.5 / 7.7 / 15.6 estimated);
            # the mapped checkpoint added up to W on top where memory was free (5.4 / 12.4 GB peak RSS).
            mapped = t.pop("weights")
            t["mapped_window"] = s.layer_params() * b
        stage_ir = sub_W
        disk = (0 if sub >= 1.0 else order_disk) + stage_ir + int_bytes
    elif stage == "heal":
        per_layer = s.layer_params() if train_mode == "all" else s.hidden * s.intermediate + 2 * s.hidden
        trained = int(s.layers * per_layer * sub)
        # The student (`hwnas.train.heal.make_student`) is the subnet extracted in the loaded dtype: its unsliced
        # tensors are the teacher's own, but extraction copies the MLP tensors it puts back in the base model's
        # channel order (every layer of an importance-ordered supernet). The trained ones are replaced by their
        # float32 copies, so what stays copied is gate and up with --train cheap, nothing with --train all.
        copied = 0 if train_mode == "all" else int(s.layers * sub * 2 * s.hidden * s.intermediate * b)
        training = {"student_copies": copied,
                    # float32 weight + gradient + two AdamW moments of each trained tensor (the optimizer steps
                    # one tensor at a time, so its temporaries are one tensor's size)
                    "trained_fp32": trained * 4 * 4,
                    "teacher_logits": 2 * batch_tokens * s.vocab * 4, "activations": 6 * act}
        # Recovery's calibration states are freed once the student is extracted (`Recoverer.release`),
        # before the trained tensors exist: the peak is the larger phase, so only recovery's excess counts.
        recovery = _recovery_stats(s, b)
        t = {"base": BASE_TORCH, "weights": W, **training,
             "recovery_over_training": max(0, recovery - sum(training.values()))}
        disk = order_disk + trained * 4 * 2
    elif stage == "train":
        t = {"base": BASE_TORCH, "weights_fp32": P * 4, "grads_and_adam": P * 4 * 3, "activations": 8 * act}
        disk = P * 4 * 4
    elif stage == "serve":
        ir = int(ir_bytes if ir_bytes is not None else s.linear_params() * quant_bits / 8 + s.head_params())
        # At the first request the CPU plugin copies the IR's weights into its own (anonymous) buffers: the
        # measured anonymous RSS after one request was the .bin's size within 3% at 1.1B / 3B / 7B
        # (bench/results/scale_bench_rss.json), while the memory-mapped .bin itself stays file-backed. The KV
        # cache grows with the tokens held (a 3,000-token prompt added 0.08 GB at 1.1B) up to the engine's pool.
        t = {"base": BASE_SERVE, "compiled_weights": ir, "kv_cache": KV_POOL}
        mapped = ir
    mem = sum(t.values())
    return ResourceEstimate(stage=stage, model=model, dtype=dtype, params=P, memory_bytes=int(mem),
                            disk_bytes=int(disk), terms=t, mapped_bytes=int(mapped))


def _recovery_stats(s: ModelShape, dtype_bytes: int) -> int:
    """Recovery (hwnas.model.recovery): the teacher's hidden states at every depth ((L + 1) x 16,384
    calibration tokens x hidden, in the model's dtype), float64 Gram matrices of one layer's refit,
    and the subnet's own float32 stream and MLP activations over the calibration tokens."""
    w, h, tokens = s.intermediate, s.hidden, 16384
    return (s.layers + 1) * tokens * h * dtype_bytes + 8 * (w * w + 2 * h * w) + tokens * (2 * h + w) * 4


def weights_mapped(source: Any, dtype: str) -> bool:
    """Whether loading `source` in `dtype` memory-maps its weights rather than copying them: a folder of
    safetensors stored in that dtype (transformers then keeps the checkpoint's pages as the tensors; a
    GGUF, .bin or other dtype is converted into anonymous memory)."""
    from hwnas.model.loading import stored_dtype

    return (getattr(source, "kind", None) == "hf" and stored_dtype(source) == dtype
            and any(Path(source.path).glob("*.safetensors")))


def available_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def free_disk(path: str | os.PathLike[str]) -> int:
    p = Path(path).expanduser().resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    return int(shutil.disk_usage(p).free)


def check_fits(est: ResourceEstimate, *, disk_path: str | os.PathLike[str] | None = None,
               memory_available: int | None = None, disk_free: int | None = None) -> None:
    """ResourceError (one line) when the stage will not fit in available memory or free disk."""
    if os.environ.get(ENV_VAR, "").strip().lower() in ("off", "0", "no", "false"):
        return
    have = available_memory() if memory_available is None else memory_available
    if est.memory_bytes > have:
        raise ResourceError(
            f"{est.stage} of {est.model} ({est.params / 1e9:.2f}B parameters, {est.dtype}) needs ~{est.memory_gb:.1f} GB "
            f"of memory, this machine has {have / GB:.1f} GB available; free memory, use a machine with more, "
            f"or pick a smaller subnet / model ({ENV_VAR}=off skips this check)")
    if est.disk_bytes and (disk_path is not None or disk_free is not None):
        free = free_disk(disk_path) if disk_free is None else disk_free
        if est.disk_bytes > free:
            raise ResourceError(
                f"{est.stage} of {est.model} writes ~{est.disk_gb:.1f} GB, {disk_path or 'the disk'} has "
                f"{free / GB:.1f} GB free; free disk (`hwnas cache prune --max-gb N`) or write elsewhere")


def model_config(spec: str) -> tuple[Any, dict[str, Any], str]:
    """(ModelSource, config dict, dtype it loads in) of a --model spec, without loading weights."""
    import json

    from hwnas.model.loading import ModelSource, gguf_cache_folder, resolve_dtype, resolve_model  # noqa: F401

    source = resolve_model(spec)
    if source.kind == "hf":
        return source, json.loads((source.path / "config.json").read_text(encoding="utf-8")), resolve_dtype(source)
    return source, _gguf_config(source.path), "float32"   # a GGUF is dequantized to float32


def _gguf_config(path: Path) -> dict[str, Any]:
    """The config fields `ModelShape` needs, from a GGUF header."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def val(name: str, default: Any = None) -> Any:
        f = reader.fields.get(name)
        return default if f is None else f.parts[f.data[0]][0].item()

    f = reader.fields.get("general.architecture")
    arch = bytes(f.parts[f.data[0]]).decode("utf-8") if f is not None else "llama"
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    heads = int(val(f"{arch}.attention.head_count"))
    return {"model_type": arch, "num_hidden_layers": int(val(f"{arch}.block_count")),
            "hidden_size": int(val(f"{arch}.embedding_length")), "intermediate_size": int(val(f"{arch}.feed_forward_length")),
            "num_attention_heads": heads, "num_key_value_heads": int(val(f"{arch}.attention.head_count_kv", heads)),
            "vocab_size": len(tokens.data) if tokens is not None else int(val(f"{arch}.vocab_size", 32000)),
            "tie_word_embeddings": not any(t.name == "output.weight" for t in reader.tensors)}


def subnet_fraction(config: Mapping[str, Any], subnet: Any) -> float:
    """The share of the decoder's parameters a SubnetConfig keeps (1.0 for None)."""
    if subnet is None:
        return 1.0
    s = ModelShape.from_config(config)
    full = s.layers * s.layer_params()
    kept = sum(s.layer_params() - 3 * s.hidden * (s.intermediate - int(w)) for w in subnet.mlp_widths)
    return kept / full if full else 1.0


def check_stage(stage: str, spec: str, *, subnet: Any = None, out: str | os.PathLike[str] | None = None,
                **options: Any) -> ResourceEstimate:
    """Estimate `stage` for --model `spec` (and a subnet) and refuse it up front when it cannot fit.

    Disk is checked where the stage writes: `out` when given, else the hwnas cache folder."""
    from hwnas.model.loading import cache_dir

    source, cfg, dtype = model_config(spec)
    ordered = any((cache_dir() / "supernets").glob(f"{source.name}-*/config.json"))
    options.setdefault("mapped_weights", weights_mapped(source, dtype))
    est = estimate(stage, cfg, dtype=dtype, model=source.name, subnet_fraction=subnet_fraction(cfg, subnet),
                   ordered_cached=ordered, **options)
    check_fits(est, disk_path=out if out is not None else cache_dir())
    return est


def check_bundle(folder: str | os.PathLike[str], stage: str = "serve") -> ResourceEstimate:
    """Estimate serving (or benchmarking) a bundle from its config.json and IR size; refuse when it cannot fit."""
    import json

    folder = Path(folder)
    cfg_file, bin_file = folder / "config.json", folder / "openvino_model.bin"
    if not cfg_file.is_file() or not bin_file.is_file():
        return estimate(stage, {"hidden_size": 1, "num_attention_heads": 1, "num_hidden_layers": 0,
                                "intermediate_size": 1, "vocab_size": 1}, model=folder.name, ir_bytes=0)
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    est = estimate(stage, cfg, model=folder.name, ir_bytes=bin_file.stat().st_size)
    check_fits(est)
    return est
