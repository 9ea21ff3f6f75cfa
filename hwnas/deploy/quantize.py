"""Weight quantization recipes with Intel Neural Compressor (INC 3.x torch API).

A `QuantRecipe` names what was done (algorithm, bits, group size, symmetry, embedding/lm_head
precision, calibration sample and its hash) and is recorded in the bundle manifest.
`quantize_model` runs INC on a dense torch model and returns, besides INC's own model, the
integer codes, scales and zero points of every quantized linear layer (`QuantizedLinear`),
which `hwnas.hardware.ov_compress` writes into the OpenVINO IR as integer constants.

Pitfalls handled here (see ../shared/notes/openvino-and-inc.md):
- INC's `recover()` overflows for asymmetric int8 (it casts `code - zero_point` to int8), so
  its own torch forward is wrong for that recipe. Codes are read with `unpack()` and the float
  weights are recomputed from them (`QuantizedLinear.dequantize`), the way OpenVINO does it.
- A group size must divide the input width of every quantized layer (INC pads a ragged last
  group, which OpenVINO's grouped decompression cannot express); `valid_group_sizes` lists them.
- INC's GPTQ insists on resolving `model_path` even when not layer-wise; it gets a temp folder.

INC leaves embeddings and lm_head alone; their precision (`head`) is handled here with a
per-row symmetric int8 round-to-nearest, or f16, or left f32.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from hwnas.errors import ExportError
from hwnas.model.quantized import QuantizedLinear, rtn_int8_rows  # noqa: F401  (re-exported)

if TYPE_CHECKING:  # pragma: no cover
    pass

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]

# name -> (algorithm, bits, default symmetric)
QUANT_METHODS: dict[str, tuple[str, int | None, bool]] = {
    "none": ("none", None, True),
    "int8": ("rtn", 8, True),
    "int4": ("rtn", 4, False),
    "gptq-int4": ("gptq", 4, False),
    "awq-int4": ("awq", 4, False),
    # per-layer formats from a subnet's deployment genes (`hwnas.deploy.mixed`); not a --quant choice
    "mixed": ("mixed", None, True),
}
HEAD_PRECISIONS = ("f32", "f16", "int8")
DEFAULT_CALIB_SAMPLES = 32
DEFAULT_CALIB_SEQ_LEN = 256
# Preferred int4 group sizes, largest first; the first that divides every layer width wins.
AUTO_GROUP_SIZES = (128, 64, 32)
MIN_GROUP_SIZE = 16
RECIPE_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class CalibrationInfo:
    """Which calibration sequences a recipe saw: enough to reproduce and to detect a change."""

    source: str          # file or folder the texts came from
    n_samples: int       # sequences actually used
    seq_len: int         # tokens per sequence at most
    seed: int
    sha256: str          # hash of the token ids of every sequence, in order

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CalibrationInfo":
        return cls(source=str(d["source"]), n_samples=int(d["n_samples"]), seq_len=int(d["seq_len"]),
                   seed=int(d["seed"]), sha256=str(d["sha256"]))


@dataclass(frozen=True)
class QuantRecipe:
    """What quantization a bundle went through.

    name: "none" | "int8" | "int4" | "gptq-int4" | "awq-int4" (the `--quant` value)
    algorithm: "none" | "rtn" | "gptq" | "awq" (INC algorithm for the decoder linears)
    bits: 8 | 4 | None; group_size: -1 = one scale per output channel, else input columns per
    scale (None: not yet resolved against a model)
    sym: symmetric codes (no zero point) or asymmetric; head: precision of embeddings and lm_head
    calibration: the calibration sample (GPTQ/AWQ only)
    """

    name: str
    algorithm: str
    bits: int | None
    group_size: int | None   # None until resolved against a model (`resolve_group_size`)
    sym: bool
    head: str = "int8"
    calibration: CalibrationInfo | None = None
    layers: tuple[tuple[str, str], ...] = ()   # "mixed" only: (module name, weight format) per decoder linear
    schema_version: int = RECIPE_SCHEMA_VERSION

    @property
    def needs_calibration(self) -> bool:
        return self.algorithm in ("gptq", "awq") or any(f.startswith(("gptq-", "awq-")) for _, f in self.layers)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["calibration"] = self.calibration.to_dict() if self.calibration else None
        if self.layers:
            d["layers"] = dict(self.layers)
        else:
            d.pop("layers")
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "QuantRecipe":
        if not isinstance(d, Mapping):
            raise ExportError(f"quantization recipe must be an object, got {type(d).__name__}")
        try:
            calib = d.get("calibration")
            recipe = cls(
                name=str(d["name"]), algorithm=str(d["algorithm"]),
                bits=None if d["bits"] is None else int(d["bits"]),
                group_size=None if d["group_size"] is None else int(d["group_size"]),
                sym=bool(d["sym"]), head=str(d.get("head", "int8")),
                calibration=CalibrationInfo.from_dict(calib) if calib else None,
                layers=tuple((str(k), str(v)) for k, v in dict(d.get("layers") or {}).items()),
                schema_version=int(d.get("schema_version", RECIPE_SCHEMA_VERSION)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ExportError(f"malformed quantization recipe ({type(e).__name__}: {e})") from None
        recipe.check()
        return recipe

    def check(self) -> "QuantRecipe":
        """Validate fields that do not depend on the model; return self."""
        if self.name not in QUANT_METHODS:
            raise ExportError(f"unknown quantization {self.name!r}; accepted: {', '.join(QUANT_METHODS)}")
        algorithm, bits, _ = QUANT_METHODS[self.name]
        if self.algorithm != algorithm or self.bits != bits:
            raise ExportError(
                f"quantization {self.name!r} means algorithm {algorithm} with {bits} bits, "
                f"not {self.algorithm} with {self.bits}")
        if self.algorithm == "mixed" and not self.layers:
            raise ExportError("quantization 'mixed' needs a weight format per layer (a subnet's weight_formats)")
        if self.head not in HEAD_PRECISIONS:
            raise ExportError(f"unknown embedding/lm_head precision {self.head!r}; accepted: {', '.join(HEAD_PRECISIONS)}")
        gs = self.group_size
        if gs is not None and gs != -1 and gs < MIN_GROUP_SIZE and self.algorithm != "none":
            raise ExportError(f"group size {self.group_size} is invalid; use -1 (per channel) or a width divisor >= {MIN_GROUP_SIZE}")
        return self

    def describe(self) -> str:
        if self.algorithm == "mixed":
            from collections import Counter

            counts = Counter(f for _, f in self.layers)
            return (f"per-layer formats ({', '.join(f'{n} {f}' for f, n in counts.most_common())} linears), "
                    f"embeddings/lm_head {self.head}")
        if self.algorithm == "none":
            return f"no weight quantization (embeddings/lm_head {self.head})"
        g = {-1: "per-channel", None: "group auto"}.get(self.group_size, f"group {self.group_size}")
        return (f"{self.algorithm.upper()} int{self.bits} {'sym' if self.sym else 'asym'} {g}, "
                f"embeddings/lm_head {self.head}")


def make_recipe(name: str, *, group_size: int | None = None, sym: bool | None = None,
                head: str = "int8") -> QuantRecipe:
    """A recipe from a `--quant` name; group_size None means "pick from the model" (`resolve_group_size`).

    int8 defaults to symmetric per-channel; the int4 recipes default to asymmetric with the
    largest of 128/64/32 that divides every layer width.
    """
    if name not in QUANT_METHODS:
        raise ExportError(f"unknown quantization {name!r}; accepted: {', '.join(QUANT_METHODS)}")
    algorithm, bits, default_sym = QUANT_METHODS[name]
    if group_size is None and bits in (8, None):
        group_size = -1
    return QuantRecipe(name=name, algorithm=algorithm, bits=bits,
                       group_size=None if group_size is None else int(group_size),
                       sym=default_sym if sym is None else bool(sym), head=head).check()


# ----------------------------------------------------------------------------- group sizes

def linear_in_features(model: Any) -> dict[str, int]:
    """Input width of every decoder nn.Linear INC would quantize (lm_head excluded)."""
    import torch.nn as nn

    return {n: m.in_features for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and not n.endswith("lm_head")}


def valid_group_sizes(widths: Sequence[int] | Mapping[str, int]) -> list[int]:
    """Group sizes OpenVINO can express for these layer input widths: common divisors >= 16, plus -1."""
    ws = sorted(set(widths.values() if isinstance(widths, Mapping) else widths))
    if not ws:
        return [-1]
    g = 0
    for w in ws:
        g = np.gcd(g, int(w))
    divisors = [d for d in range(MIN_GROUP_SIZE, int(g) + 1) if g % d == 0]
    return [-1] + divisors


def resolve_group_size(recipe: QuantRecipe, model: Any) -> QuantRecipe:
    """Fill in / check the group size against the model's layer widths; returns the concrete recipe."""
    if recipe.algorithm == "none":
        return dataclasses.replace(recipe, group_size=-1).check()
    widths = linear_in_features(model)
    valid = valid_group_sizes(widths)
    if recipe.group_size is None:
        auto = [g for g in AUTO_GROUP_SIZES if g in valid]
        recipe = dataclasses.replace(recipe, group_size=auto[0] if auto else -1)
    elif recipe.group_size not in valid:
        bad = next((n for n, w in widths.items() if w % recipe.group_size), "?")
        raise ExportError(
            f"group size {recipe.group_size} does not divide the input width {widths.get(bad)} of {bad}; "
            f"accepted for this model: {', '.join(map(str, valid))}")
    return recipe.check()


# ----------------------------------------------------------------------------- calibration

@dataclass
class Calibration:
    info: CalibrationInfo
    input_ids: list = field(repr=False)   # list of LongTensor [1, T]


def load_calibration(tokenizer: Any, path: str | Path | None = None, *, n_samples: int = DEFAULT_CALIB_SAMPLES,
                     seq_len: int = DEFAULT_CALIB_SEQ_LEN, seed: int = 0) -> Calibration:
    """A seeded sample of `n_samples` documents (calibration/ by default), tokenized and cut to `seq_len`.

    Raises DataError when the path is missing or holds no usable text.
    """
    import torch

    from hwnas.datadir import CALIBRATION_DIR
    from hwnas.model.calibration import load_texts

    if n_samples < 1 or seq_len < 8:
        raise ExportError(f"calibration needs n_samples >= 1 and seq_len >= 8, got {n_samples} and {seq_len}")
    source = Path(path) if path else CALIBRATION_DIR
    texts = load_texts(source, n=n_samples, seed=seed)
    h = hashlib.sha256()
    seqs = []
    for t in texts:
        ids = tokenizer(t, add_special_tokens=False)["input_ids"][:seq_len]
        if len(ids) < 2:
            continue
        arr = np.asarray(ids, dtype=np.int64)
        h.update(len(arr).to_bytes(4, "little"))
        h.update(arr.tobytes())
        seqs.append(torch.from_numpy(arr).unsqueeze(0))
    if not seqs:
        from hwnas.errors import DataError
        raise DataError(f"calibration data {source} gave no sequence of at least 2 tokens")
    info = CalibrationInfo(source=str(source), n_samples=len(seqs), seq_len=seq_len, seed=seed, sha256=h.hexdigest())
    return Calibration(info=info, input_ids=seqs)


# ----------------------------------------------------------------------------- quantized weights

def from_inc_module(name: str, module: Any) -> QuantizedLinear:
    """Read codes, scales and zero points from one of INC's WeightOnlyLinear modules (via unpack())."""
    p = module.unpack()
    codes = p["int_weight"].cpu().numpy()
    scales = p["scales"].cpu().float().numpy()
    zp = p.get("zp")
    bits = int(module.bits)
    g_idx = getattr(module, "g_idx", None)
    group_size = int(module.group_size)
    if g_idx is not None:
        expect = np.arange(module.in_features) // group_size
        if not np.array_equal(g_idx.cpu().numpy(), expect):
            raise ExportError(f"{name}: INC reordered channels (act_order); OpenVINO's grouped weights need act_order off")
    if zp is None:  # INC without the optimum format: symmetric signed codes
        codes = codes.astype(np.int16) + 2 ** (bits - 1)
        zp_np = np.full(scales.shape, 2 ** (bits - 1), dtype=np.int16)
    else:
        zp_np = zp.cpu().numpy()
    if "int" not in str(getattr(module, "dtype", "int")):
        raise ExportError(f"{name}: INC dtype {module.dtype!r} is not an integer format")
    return QuantizedLinear(name=name, bits=bits, group_size=group_size, codes=codes,
                           scale=scales.astype(np.float16), zero_point=zp_np)


@dataclass
class QuantResult:
    """What `quantize_model` produced.

    model: the INC-quantized torch model (WeightOnlyLinear modules; after `materialize`, plain
    nn.Linear/nn.Embedding with the dequantized weights). weights: integer weights by module name
    (decoder linears, plus "model.embed_tokens"/"lm_head" when head is int8).
    """

    recipe: QuantRecipe
    model: Any
    weights: dict[str, QuantizedLinear]
    head_f16: tuple[str, ...] = ()     # module names whose weight is stored as f16
    # True when `model` is the caller's float model, untouched (RTN quantizes layer by layer on
    # float32 copies): its weights stand in for the integer ones until `compress_ir` swaps them in.
    float_model: bool = False

    def nbytes(self) -> int:
        return sum(q.nbytes() for q in self.weights.values())


@contextlib.contextmanager
def _quiet_inc():
    """INC logs every step at INFO on its own handler; keep that out of the CLI unless hwnas logs at DEBUG.

    Only ever raises INC's threshold: the CLI may have set it higher still (ERROR without -v)."""
    inc_log = logging.getLogger("neural_compressor")
    before = inc_log.level
    if not log.isEnabledFor(logging.DEBUG):
        inc_log.setLevel(max(inc_log.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        inc_log.setLevel(before)


def bind_inc_transformers() -> None:
    """Work around an import-order bug of INC 3.x: its weight-only modules bind `transformers` only when it was
    imported before them, yet test `is_transformers_imported()` when they run, so an INC imported first fails
    later with "NameError: name 'transformers' is not defined". Imports transformers, then binds it where missing."""
    import importlib
    import sys

    import transformers

    for name in ("neural_compressor.torch.algorithms.weight_only.rtn", "neural_compressor.torch.algorithms.weight_only.gptq",
                 "neural_compressor.torch.algorithms.weight_only.teq", "neural_compressor.torch.quantization.config",
                 "neural_compressor.torch.utils.utility"):
        mod = sys.modules.get(name) or importlib.import_module(name)
        if not hasattr(mod, "transformers"):
            mod.transformers = transformers


def _inc_config(recipe: QuantRecipe, tmp: str, model: Any = None):
    bind_inc_transformers()
    from neural_compressor.torch.quantization import AWQConfig, GPTQConfig, RTNConfig

    common = dict(bits=recipe.bits, use_sym=recipe.sym, group_size=recipe.group_size)
    if recipe.algorithm == "rtn":
        # Full range (-8..7 for int4) applies to symmetric codes only; layer-wise loading is off
        # (it re-reads weights from a checkpoint folder, which in-memory subnets do not have).
        return RTNConfig(**common, use_full_range=recipe.sym, use_layer_wise=False)
    if recipe.algorithm == "gptq":
        return GPTQConfig(**common, act_order=False, use_layer_wise=False, model_path=tmp)
    if recipe.algorithm == "awq":
        # INC's automatic absorb-layer detection (a jit trace) fails on transformers 5 models and
        # silently degrades AWQ to RTN; name the family's absorb pairs explicitly (hwnas.model.arch).
        from hwnas.model.arch import adapter_for

        absorb = adapter_for(model.config).awq_absorb()
        return AWQConfig(**common, folding=True, use_layer_wise=False, absorb_layer_dict=absorb)
    raise ExportError(f"no INC algorithm for recipe {recipe.name!r}")


def quantize_model(model: Any, recipe: QuantRecipe, calibration: Calibration | None = None, *,
                   inplace: bool = False, progress: Progress | None = None) -> QuantResult:
    """Quantize the decoder linears of a dense LLaMA-like CausalLM with INC and collect their integer weights.

    The recipe's group size is resolved against the model first (ExportError when invalid). GPTQ
    and AWQ need `calibration`. Embeddings and lm_head are quantized per `recipe.head` here (INC
    leaves them float). The returned model is INC's (call `materialize` for a float model that
    exports to OpenVINO and runs with correct dequantized weights).
    """
    import torch

    recipe = resolve_group_size(recipe, model)
    if recipe.needs_calibration and calibration is None:
        raise ExportError(f"quantization {recipe.name!r} needs calibration data (calibration/ or --calibration PATH)")
    if recipe.needs_calibration:
        recipe = dataclasses.replace(recipe, calibration=calibration.info)
    tick = progress or (lambda done, total, label="": None)
    weights: dict[str, QuantizedLinear] = {}
    streamed = recipe.algorithm in ("rtn", "none")
    if streamed:  # no copy of the model: RTN needs no calibration, so it runs one layer at a time
        if recipe.algorithm == "rtn":
            weights.update(_rtn_by_layer(model, recipe, tick))
    else:
        if not inplace:
            model = copy.deepcopy(model)
        model.eval()
    if not streamed:
        bind_inc_transformers()
        from neural_compressor.torch.quantization import convert, prepare

        tick(0, 3, f"INC {recipe.algorithm} prepare")
        with tempfile.TemporaryDirectory(prefix="hwnas-inc-") as tmp, torch.no_grad(), _quiet_inc():
            conf = _inc_config(recipe, tmp, model)
            try:
                if recipe.algorithm == "awq":
                    model = prepare(model, conf, example_inputs=calibration.input_ids[0])
                else:
                    model = prepare(model, conf)
                if recipe.needs_calibration:
                    for i, ids in enumerate(calibration.input_ids):
                        model(ids)
                        tick(1, 3, f"calibration {i + 1}/{len(calibration.input_ids)}")
                tick(2, 3, f"INC {recipe.algorithm} convert")
                model = convert(model)
            except ExportError:
                raise
            except Exception as e:  # INC raises assorted errors; name the recipe in one line
                raise ExportError(f"Neural Compressor failed on recipe {recipe.describe()}: {type(e).__name__}: {e}") from e
        for name, mod in model.named_modules():
            if type(mod).__name__.endswith("WeightOnlyLinear"):
                qname = name[: -len(".linear")] if name.endswith(".linear") else name
                weights[qname] = from_inc_module(qname, mod)
        leftover = [n for n in linear_in_features(model) if n not in weights and not n.endswith(".linear")]
        if leftover:
            raise ExportError(f"INC left {len(leftover)} linear layers unquantized (e.g. {leftover[0]}); "
                              "recipe cannot be exported as integer weights")
        if any(type(m).__name__ == "MulLinear" for m in model.modules()):
            raise ExportError("INC AWQ left input scales (MulLinear) that cannot be folded; use int4 or gptq-int4")
    head_weights, head_f16 = quantize_head(model, recipe.head)
    weights.update(head_weights)
    tick(3, 3, "quantized")
    n_int = sum(1 for n in weights)
    log.info("quantized %d weight matrices with %s", n_int, recipe.describe())
    return QuantResult(recipe=recipe, model=model, weights=weights, head_f16=tuple(head_f16),
                       float_model=streamed and not inplace)


def quantize_head(model: Any, head: str) -> tuple[dict[str, QuantizedLinear], list[str]]:
    """Embeddings and lm_head (once when tied) per `head`: int8 per-row RTN weights, or names kept as f16 (f32: neither)."""
    weights: dict[str, QuantizedLinear] = {}
    head_f16: list[str] = []
    emb = model.get_input_embeddings()
    lm_head = model.get_output_embeddings()
    tied = lm_head is not None and lm_head.weight.data_ptr() == emb.weight.data_ptr()
    for name, mod in (("model.embed_tokens", emb), ("lm_head", lm_head)):
        if mod is None or (name == "lm_head" and tied):
            continue
        if head == "int8":
            weights[name] = rtn_int8_rows(name, mod.weight.detach())
        elif head == "f16":
            head_f16.append(name)
    return weights, head_f16


def _rtn_by_layer(model: Any, recipe: QuantRecipe, tick: Progress) -> dict[str, QuantizedLinear]:
    """INC's RTN (``quant_tensor``, the function its RTN algorithm runs per layer) on a float32 copy of
    one weight at a time; the model itself is not touched.

    RTN sees each weight alone, so this gives INC's codes for the whole model while memory holds one
    float32 weight instead of a float32 copy of the model (the copy and the upcast made `hwnas export
    --quant int8` of a 1.1B bf16 model peak at 18 GB), and it skips INC's packing of the codes into
    int32 words and unpacking them again (Python loops over columns: most of the export's time).
    tests/integration/test_quantize_ir.py checks the result against INC's `prepare`/`convert`."""
    import torch
    from neural_compressor.torch.algorithms.weight_only.utility import quant_tensor

    names = list(linear_in_features(model))
    weights: dict[str, QuantizedLinear] = {}
    half = 2 ** (recipe.bits - 1)
    with torch.no_grad():
        for k, name in enumerate(names):
            w = model.get_submodule(name).weight.detach().to(torch.float32, copy=True)
            out, inp = w.shape
            gs = inp if recipe.group_size in (-1, None) else int(recipe.group_size)
            codes, scale, zp = quant_tensor(w, bits=recipe.bits, group_size=gs, scheme="sym" if recipe.sym else "asym",
                                            quantile=1.0, dtype="int", return_int=True, full_range=recipe.sym)
            codes = codes.reshape(out, inp).to(torch.int16)
            scale = scale.reshape(out, inp // gs).float()
            if zp is None:  # symmetric: signed codes around 0 -> unsigned around the mid-point
                codes = codes + half
                zp_np = np.full(tuple(scale.shape), half, dtype=np.int16)
            else:
                zp_np = zp.reshape(out, inp // gs).to(torch.int16).numpy()
            weights[name] = QuantizedLinear(name=name, bits=recipe.bits, group_size=gs, codes=codes.numpy(),
                                            scale=scale.numpy().astype(np.float16), zero_point=zp_np)
            del w, codes
            if (k + 1) % 7 == 0 or k + 1 == len(names):
                tick(1, 3, f"INC rtn {k + 1}/{len(names)} weights")
    return weights


def materialize(result: QuantResult) -> Any:
    """Turn `result.model` into a plain float torch model whose weights equal the dequantized integers.

    Replaces INC's WeightOnlyLinear modules by nn.Linear (their forward is wrong for asymmetric
    int8, see module doc), writes dequantized embeddings/lm_head, rounds f16 heads. In place;
    returns the model. This is what gets exported to OpenVINO before `ov_compress` swaps in the
    integer constants, and what accuracy is measured on in PyTorch.
    """
    import torch
    import torch.nn as nn

    model = copy.deepcopy(result.model) if result.float_model else result.model
    for name, q in result.weights.items():
        if name in ("model.embed_tokens", "lm_head"):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        old = getattr(parent, child)
        bias = getattr(old, "bias", None)
        lin = nn.Linear(q.shape[1], q.shape[0], bias=bias is not None)  # float32: the dequantized values
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(q.dequantize()))
            if bias is not None:
                lin.bias.copy_(bias.detach().float())
        setattr(parent, child, lin)
    emb = model.get_input_embeddings()
    lm_head = model.get_output_embeddings()
    with torch.no_grad():
        for name, mod in (("model.embed_tokens", emb), ("lm_head", lm_head)):
            if mod is None:
                continue
            if name in result.weights:
                mod.weight.copy_(torch.from_numpy(result.weights[name].dequantize()))
            elif name in result.head_f16:
                mod.weight.copy_(mod.weight.half().float())
    return model.eval()
