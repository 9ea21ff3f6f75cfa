"""Dense LLaMA (torch) -> stateful OpenVINO IR with KV cache, in optimum-intel's folder layout.

`export_ir(model, out_dir, tokenizer=None)` writes what `OVModelForCausalLM.from_pretrained` and
`openvino_genai.LLMPipeline` load: ``openvino_model.xml/.bin`` (inputs ``input_ids``,
``attention_mask``, ``position_ids``, ``beam_idx``; the KV cache lives in the model's state),
``config.json``, ``generation_config.json`` and, when a tokenizer is given, its files plus
``openvino_tokenizer.xml`` / ``openvino_detokenizer.xml``. It uses optimum-intel's exporter on the
model instance, so a subnet with per-layer MLP widths and skipped layers exports like any Llama.
The folder is written to a temporary name and moved into place when complete, with
``hwnas_ir.json`` recording the structure and tool versions.

`export_ir_cached(model, key)` is the measurement path: IRs are kept under
``$HWNAS_CACHE_DIR/ir`` (default ~/.cache/hwnas/ir) by key and tool versions, so nothing is
exported twice.

optimum runs ``torch.jit.trace`` with ``check_trace=True`` for Llama, which re-runs the model twice
to compare traces and takes more than half of the export time; hwnas turns that check off and
instead tests the exported logits against PyTorch (tests/integration/test_irexport.py).
"""
from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from hwnas.errors import ExportError

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: extracted subnets keep MLP channels in the base model's order (Supernet.base_order)
IR_XML = "openvino_model.xml"
IR_BIN = "openvino_model.bin"
TOKENIZER_XML = "openvino_tokenizer.xml"
DETOKENIZER_XML = "openvino_detokenizer.xml"
META_FILE = "hwnas_ir.json"
STATEFUL_INPUTS = ("input_ids", "attention_mask", "position_ids", "beam_idx")
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")


def tool_versions() -> dict[str, str]:
    """Versions of the tools that shape the exported graph (stamped into every IR folder)."""
    import importlib.metadata as md

    out = {}
    for pkg in ("openvino", "optimum-intel", "optimum", "transformers", "torch", "openvino-tokenizers"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def model_structure(model: Any) -> dict[str, Any]:
    """Layer count, per-layer MLP widths and the architecture fields that shape the graph."""
    cfg = model.config
    layers = model.model.layers
    return {
        "num_layers": len(layers),
        "mlp_widths": [int(layer.mlp.gate_proj.out_features) for layer in layers],
        "hidden_size": int(cfg.hidden_size),
        "num_attention_heads": int(cfg.num_attention_heads),
        "num_key_value_heads": int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads),
        "vocab_size": int(cfg.vocab_size),
        "tie_word_embeddings": bool(getattr(cfg, "tie_word_embeddings", False)),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
    }


def model_fingerprint(model: Any, weights: bool = True) -> str:
    """sha256 of the structure and (by default) every parameter's bytes; short hex."""
    import torch

    h = hashlib.sha256(json.dumps(model_structure(model), sort_keys=True).encode())
    if weights:
        seen: set[int] = set()
        with torch.no_grad():
            for name, p in model.named_parameters(remove_duplicate=False):
                if id(p) in seen:
                    continue
                seen.add(id(p))
                h.update(name.encode())
                t = p.detach().contiguous()
                h.update(t.view(torch.uint8).reshape(-1).numpy().tobytes() if t.dtype == torch.bfloat16
                         else t.numpy().tobytes())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _no_trace_check() -> Iterator[None]:
    """Skip torch.jit.trace's check_trace re-runs inside optimum's exporter (see module doc)."""
    import optimum.exporters.openvino.convert as conv

    orig = conv.allow_skip_tracing_check
    conv.allow_skip_tracing_check = lambda *a, **k: True
    try:
        yield
    finally:
        conv.allow_skip_tracing_check = orig


def _export_into(model: Any, folder: Path, tokenizer: Any, stateful: bool, compress_to_fp16: bool) -> None:
    import torch
    from optimum.exporters.openvino import export_from_model

    ov_config = None
    if compress_to_fp16:
        from optimum.intel.openvino.configuration import OVConfig

        ov_config = OVConfig(dtype="fp16")
    task = "text-generation-with-past" if stateful else "text-generation"
    t0 = time.perf_counter()
    # optimum calls gc.collect() after each conversion; with torch + transformers loaded that walks
    # millions of long-lived objects. Freezing them first makes those collections cheap.
    # Tracing runs the model once on tiny dummy inputs: one torch thread is enough, and on a busy
    # machine it avoids OpenMP threads spinning against other processes (~25% faster export here).
    threads = torch.get_num_threads()
    gc.freeze()
    torch.set_num_threads(1)
    try:
        with torch.no_grad(), _no_trace_check(), _quiet_export():
            # A bf16/f16 model is traced with OpenVINO's 16-bit patch (what optimum-cli does for a 16-bit
            # checkpoint): weights stay 16-bit constants, no float32 copy of the model is made.
            export_from_model(model, folder, task=task, stateful=stateful, ov_config=ov_config,
                              patch_16bit_model=model.dtype in (torch.bfloat16, torch.float16))
    finally:
        torch.set_num_threads(threads)
        gc.unfreeze()
    log.info("exported %d-layer model to %s in %.1fs", len(model.model.layers), folder, time.perf_counter() - t0)
    if tokenizer is not None:
        export_tokenizer(tokenizer, folder)


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """optimum and torch's tracer print TracerWarnings for every traced branch; keep them out of the CLI."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def export_tokenizer(tokenizer: Any, folder: str | os.PathLike[str]) -> None:
    """Save the HF tokenizer files and OpenVINO tokenizer/detokenizer models into `folder`."""
    import copy

    import openvino as ov
    from openvino_tokenizers import convert_tokenizer

    folder = Path(folder)
    tokenizer.save_pretrained(folder)
    tok = copy.copy(tokenizer)
    # Generation pads on the left (as optimum-intel sets for text-generation tasks).
    with contextlib.suppress(Exception):
        tok.padding_side = "left"
        tok.truncation_side = "left"
    try:
        converted = convert_tokenizer(tok, with_detokenizer=True)
    except Exception as e:  # noqa: BLE001 - openvino_tokenizers raises many types
        raise ExportError(f"cannot convert tokenizer {type(tokenizer).__name__} to OpenVINO: {e}") from None
    ov_tok, ov_detok = converted
    ov.save_model(ov_tok, str(folder / TOKENIZER_XML))
    ov.save_model(ov_detok, str(folder / DETOKENIZER_XML))


def check_ir(folder: str | os.PathLike[str], stateful: bool = True) -> None:
    """Raise ExportError unless `folder` holds a (stateful) IR with the expected inputs."""
    import openvino as ov

    folder = Path(folder)
    xml = folder / IR_XML
    if not xml.is_file() or not (folder / IR_BIN).is_file():
        raise ExportError(f"{folder} has no {IR_XML}/{IR_BIN}")
    m = ov.Core().read_model(str(xml))
    names = {n for i in m.inputs for n in i.get_names()}
    want = set(STATEFUL_INPUTS) if stateful else {"input_ids", "attention_mask"}
    missing = sorted(want - names)
    if missing:
        raise ExportError(f"exported IR {xml} lacks input(s) {missing}; it has {sorted(names)}")
    if stateful and not m.get_sinks():
        raise ExportError(f"exported IR {xml} is not stateful (no KV-cache state); re-export with stateful=True")


def export_ir(
    model: Any,
    out_dir: str | os.PathLike[str],
    tokenizer: Any = None,
    *,
    stateful: bool = True,
    compress_to_fp16: bool = False,
    force: bool = False,
    extra_meta: dict[str, Any] | None = None,
) -> Path:
    """Export a dense LlamaForCausalLM to `out_dir` (optimum-intel layout), atomically.

    `stateful=False` gives a cache-less IR (prefill only), used for fixed-shape sanity checks.
    `compress_to_fp16` stores weights as f16 (half the size; the CPU decompresses them at load).
    `out_dir` must be new or empty unless `force`.
    """
    from hwnas.io import atomic_dir

    with atomic_dir(out_dir, force=force) as tmp:
        try:
            _export_into(model, tmp, tokenizer, stateful, compress_to_fp16)
        except ExportError:
            raise
        except Exception as e:  # noqa: BLE001 - tracing/conversion errors surface as one line
            raise ExportError(f"OpenVINO export of the {len(model.model.layers)}-layer model failed: {type(e).__name__}: {e}") from e
        check_ir(tmp, stateful=stateful)
        _write_meta(tmp, model, stateful, compress_to_fp16, extra_meta)
    return Path(out_dir)


def _write_meta(folder: Path, model: Any, stateful: bool, compress_to_fp16: bool, extra: dict[str, Any] | None) -> None:
    meta = {
        "schema_version": 1,
        "format_version": FORMAT_VERSION,
        "stateful": stateful,
        "weights": "f16" if compress_to_fp16 else str(next(model.parameters()).dtype).replace("torch.", ""),
        "structure": model_structure(model),
        "versions": tool_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    meta.update(extra or {})
    (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------- cache
def ir_cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    from hwnas.model.loading import cache_dir as default_cache

    return Path(cache_dir) if cache_dir is not None else default_cache() / "ir"


def _settings_tag(stateful: bool, compress_to_fp16: bool) -> str:
    """Short hash of what makes two exports of the same model differ: tool versions and options."""
    canon = json.dumps([FORMAT_VERSION, tool_versions(), stateful, compress_to_fp16], sort_keys=True)
    return hashlib.sha256(canon.encode()).hexdigest()[:8]


def cached_ir_path(key: str, *, stateful: bool = True, compress_to_fp16: bool = False,
                   cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where `export_ir_cached` keeps the IR for `key` (whether or not it exists yet)."""
    if not _KEY_RE.match(key):
        key = "k-" + hashlib.sha256(key.encode()).hexdigest()[:24]
    return ir_cache_root(cache_dir) / f"{key}-{_settings_tag(stateful, compress_to_fp16)}"


def is_complete(folder: Path) -> bool:
    return (folder / META_FILE).is_file() and (folder / IR_XML).is_file() and (folder / IR_BIN).is_file()


def export_ir_cached(
    model: Any = None,
    key: str | None = None,
    *,
    build: Callable[[], Any] | None = None,
    stateful: bool = True,
    compress_to_fp16: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[Path, bool]:
    """The IR of `model` from the cache, exporting it on a miss. Returns (folder, exported_now).

    `key` identifies the model (e.g. model hash + subnet key); by default the structure and every
    weight are hashed. With `key` and `build` instead of `model`, the model is only built (e.g. a
    subnet extracted from the supernet, GBs for a 7B model) on a cache miss. Concurrent writers
    are safe: the first complete folder wins.
    """
    if (model is None) == (build is None) or (build is not None and key is None):
        raise ValueError("export_ir_cached needs a model, or a key and a build function")
    key = key or "m-" + model_fingerprint(model)
    dest = cached_ir_path(key, stateful=stateful, compress_to_fp16=compress_to_fp16, cache_dir=cache_dir)
    if is_complete(dest):
        log.debug("IR cache hit %s", dest)
        with contextlib.suppress(OSError):  # last use, for the cache's LRU size cap (hwnas.cache)
            os.utime(dest)
        return dest, False
    if model is None:
        model = build()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        try:
            _export_into(model, tmp, None, stateful, compress_to_fp16)
        except Exception as e:  # noqa: BLE001
            raise ExportError(f"OpenVINO export of {key} failed: {type(e).__name__}: {e}") from e
        check_ir(tmp, stateful=stateful)
        _write_meta(tmp, model, stateful, compress_to_fp16, {"cache_key": key})
        if dest.exists() and not is_complete(dest):
            shutil.rmtree(dest, ignore_errors=True)  # a stale partial entry (older hwnas, killed run)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not is_complete(dest):
                raise
            log.debug("another process exported %s first", key)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest, True
