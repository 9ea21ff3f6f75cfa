"""Per-layer quantization from a subnet's deployment genes, with Intel Neural Compressor.

A `SubnetConfig` with `weight_formats` says, for each kept layer, the format of its attention
projections (q/k/v/o) and of its MLP (gate/up/down) (`hwnas.model.formats`). `layer_plan` turns
that into a format per torch module of the dense subnet; `quantize_mixed` quantizes each format
group with its own INC config, restricted to exactly that group's modules (INC 3.x ``white_list``
of escaped, anchored module names), one `prepare`/`convert` per format:

- RTN groups first, then data-aware ones (gptq-, awq-) so these calibrate on a model whose other
  layers already carry their shipped weights;
- after each pass INC's modules are read (`from_inc_module`) and replaced by float linears with
  the dequantized weights (`materialize`), so the next pass sees plain ``nn.Linear``s;
- f16 layers stay float, rounded to f16 here and stored as f16 constants by `compress_ir`;
- embeddings/lm_head per the head format, as `quantize_model` does.

The INC configs are the ones `hwnas.deploy.quantize` uses for whole-model recipes (int8 per-channel
symmetric full range; int4 symmetric full range or asymmetric), so RTN codes equal
`hwnas.model.rtn`'s, which the search scores candidates with.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import tempfile
from collections import OrderedDict
from typing import Any, Mapping

from hwnas.deploy.quantize import (
    Calibration,
    QuantRecipe,
    QuantResult,
    from_inc_module,
    materialize,
    quantize_head,
)
from hwnas.errors import ExportError
from hwnas.model.formats import WeightFormat, parse_weight_format
from hwnas.model.quantized import QuantizedLinear

log = logging.getLogger(__name__)

ATTENTION_PROJ = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
MLP_PROJ = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
# IR element type of the weight constant a format is stored as (symmetric codes are signed, no zero point)
ELEMENT_TYPES = {(8, True): "i8", (8, False): "u8", (4, True): "i4", (4, False): "u4"}


def element_type(fmt: WeightFormat | str) -> str:
    """The IR element type a layer in this format is written with ("f16", "i8", "i4", "u4")."""
    f = parse_weight_format(fmt) if isinstance(fmt, str) else fmt
    return "f16" if not f.quantized else ELEMENT_TYPES[(f.bits, f.sym)]


def layer_plan(subnet: Any, model: Any) -> "OrderedDict[str, WeightFormat]":
    """Weight format per decoder linear of the dense subnet `model` (its layer i = the subnet's i-th kept layer).

    ExportError when the subnet has no weight formats, the model's depth differs, or a group size
    does not divide a layer's input width (e.g. 128 for the 576-wide default model).
    """
    if subnet is None or subnet.weight_formats is None:
        raise ExportError("per-layer quantization needs a subnet with weight_formats")
    layers = model.model.layers
    if len(layers) != len(subnet.weight_formats):
        raise ExportError(f"the dense model has {len(layers)} layers, the subnet's weight_formats {len(subnet.weight_formats)}")
    plan: OrderedDict[str, WeightFormat] = OrderedDict()
    for i, (attn, mlp) in enumerate(subnet.weight_formats):
        for projs, name in ((ATTENTION_PROJ, attn), (MLP_PROJ, mlp)):
            fmt = parse_weight_format(name)
            for proj in projs:
                module = f"model.layers.{i}.{proj}"
                width = model.get_submodule(module).in_features
                if not fmt.divides(width):
                    raise ExportError(f"weight format {fmt.name} of {module} (layer {subnet.layers[i]} of the base model): "
                                      f"group size {fmt.group_size} does not divide its input width {width}")
                plan[module] = fmt
    return plan


def mixed_recipe(plan: Mapping[str, WeightFormat], head: str) -> QuantRecipe:
    """The manifest's recipe for a per-layer quantization: every module's format, the head precision."""
    return QuantRecipe(name="mixed", algorithm="mixed", bits=None, group_size=-1, sym=True, head=head,
                       layers=tuple((n, f.name) for n, f in plan.items())).check()


def inc_config(fmt: WeightFormat, modules: list[str], tmp: str) -> Any:
    """INC 3.x config for one format, applied to exactly `modules` (anchored names in its white list)."""
    from neural_compressor.torch.quantization import AWQConfig, GPTQConfig, RTNConfig

    common = dict(bits=fmt.bits, use_sym=fmt.sym, group_size=fmt.group_size or -1,
                  white_list=[re.escape(m) + "$" for m in modules])
    if fmt.algorithm == "rtn":
        return RTNConfig(**common, use_full_range=fmt.sym, use_layer_wise=False)
    if fmt.algorithm == "gptq":
        return GPTQConfig(**common, act_order=False, use_layer_wise=False, model_path=tmp)
    if fmt.algorithm == "awq":  # absorb pairs named as in hwnas.deploy.quantize (INC's detection fails on Llama)
        absorb = {"input_layernorm": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                  "post_attention_layernorm": ("mlp.gate_proj", "mlp.up_proj"), "mlp.up_proj": "mlp.down_proj"}
        return AWQConfig(**common, folding=True, use_layer_wise=False, absorb_layer_dict=absorb)
    raise ExportError(f"no INC algorithm for weight format {fmt.name!r}")


def _groups(plan: Mapping[str, WeightFormat]) -> "OrderedDict[WeightFormat, list[str]]":
    """Modules per quantized format, RTN formats first (data-aware passes then see the shipped neighbours)."""
    groups: OrderedDict[WeightFormat, list[str]] = OrderedDict()
    for fmt in sorted({f for f in plan.values() if f.quantized}, key=lambda f: (f.algorithm != "rtn", f.name)):
        groups[fmt] = [m for m, f in plan.items() if f == fmt]
    return groups


def _inc_pass(model: Any, fmt: WeightFormat, modules: list[str], calibration: Calibration | None) -> dict[str, QuantizedLinear]:
    """Quantize `modules` of `model` in `fmt` with INC, in place; returns their integer weights (model left float)."""
    inc_log = logging.getLogger("neural_compressor")
    level = inc_log.level
    inc_log.setLevel(logging.ERROR)  # INC warns once per white-listed name that its config "has already been set"
    try:
        return _inc_pass_quiet(model, fmt, modules, calibration)
    finally:
        inc_log.setLevel(level)


def _hidden_linear():
    """A module that computes like nn.Linear but is not one, so INC's data-aware passes cannot see it."""
    import torch.nn as nn
    import torch.nn.functional as F

    class HiddenLinear(nn.Module):
        def __init__(self, lin: nn.Module):
            super().__init__()
            self.inner = [lin]   # a list: not registered as a child module

        def forward(self, x):
            lin = self.inner[0]
            return F.linear(x, lin.weight, lin.bias)

    return HiddenLinear


@contextlib.contextmanager
def _only_visible(model: Any, modules: list[str]):
    """INC 3.10's GPTQ applies its first per-layer config to every linear (its name lookup matches any
    regex), so during a data-aware pass every other decoder linear is swapped for a look-alike it skips."""
    import torch.nn as nn

    keep = set(modules)
    hidden = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and n not in keep
              and not n.endswith("lm_head")}
    wrapper = _hidden_linear()
    for n, m in hidden.items():
        parent, _, child = n.rpartition(".")
        setattr(model.get_submodule(parent), child, wrapper(m))
    try:
        yield
    finally:
        for n, m in hidden.items():
            parent, _, child = n.rpartition(".")
            setattr(model.get_submodule(parent), child, m)


def _inc_pass_quiet(model: Any, fmt: WeightFormat, modules: list[str], calibration: Calibration | None) -> dict[str, QuantizedLinear]:
    import torch

    from hwnas.deploy.quantize import bind_inc_transformers

    bind_inc_transformers()
    from neural_compressor.torch.quantization import convert, prepare

    hide = _only_visible(model, modules) if fmt.algorithm in ("gptq", "awq") else contextlib.nullcontext()
    with tempfile.TemporaryDirectory(prefix="hwnas-inc-") as tmp, torch.no_grad(), hide:
        conf = inc_config(fmt, modules, tmp)
        try:
            if fmt.algorithm == "awq":
                model = prepare(model, conf, example_inputs=calibration.input_ids[0])
            else:
                model = prepare(model, conf)
            if fmt.algorithm in ("gptq", "awq"):
                for ids in calibration.input_ids:
                    model(ids)
            model = convert(model)
        except ExportError:
            raise
        except Exception as e:  # INC raises assorted errors; name the format in one line
            raise ExportError(f"Neural Compressor failed on weight format {fmt.name}: {type(e).__name__}: {e}") from e
    weights = {}
    for name, mod in model.named_modules():
        if type(mod).__name__.endswith("WeightOnlyLinear"):
            qname = name[: -len(".linear")] if name.endswith(".linear") else name
            weights[qname] = from_inc_module(qname, mod)
    missing = sorted(set(modules) - set(weights))
    if missing:
        raise ExportError(f"INC left {len(missing)} layers of format {fmt.name} unquantized (e.g. {missing[0]})")
    extra = sorted(set(weights) - set(modules))
    if extra:
        raise ExportError(f"INC quantized {extra[0]} in format {fmt.name}, which the subnet's genes did not ask for")
    if any(type(m).__name__ == "MulLinear" for m in model.modules()):
        raise ExportError(f"INC AWQ left input scales (MulLinear) that cannot be folded ({fmt.name})")
    materialize(QuantResult(recipe=None, model=model, weights=weights))  # float linears again, dequantized
    return weights


def _minmax_pass(model: Any, fmt: WeightFormat, modules: list[str]) -> dict[str, QuantizedLinear]:
    """`int4_minmax_gG` layers: hwnas's own RTN (`hwnas.model.rtn`), since INC's grids have integer zero
    points; the model's linears are left float with the dequantized weights, as after an INC pass."""
    import torch

    from hwnas.model.rtn import quantize_rtn

    weights = {}
    for m in modules:
        lin = model.get_submodule(m)
        q = quantize_rtn(lin.weight.detach().float().numpy(), fmt, m)
        weights[m] = q
        with torch.no_grad():  # a new tensor: a subnet's weights may share storage with the full model
            lin.weight = torch.nn.Parameter(torch.from_numpy(q.dequantize()).to(lin.weight.dtype), requires_grad=False)
    return weights


def _check_untouched(model: Any, before: Mapping[str, Any], fmt: WeightFormat) -> None:
    """Layers quantized by an earlier pass must keep their weights (AWQ folds scales into neighbours)."""
    import torch

    for m, w in before.items():
        if not torch.equal(model.get_submodule(m).weight, w):
            raise ExportError(f"{fmt.name} changed {m}, already quantized in another format (AWQ folds its scales into "
                              "neighbouring layers); give awq- to a layer's whole attention or MLP block and its neighbours alike")


def quantize_mixed(model: Any, plan: Mapping[str, WeightFormat], head: str,
                   calibration: Calibration | None = None, *, inplace: bool = False) -> QuantResult:
    """Quantize each decoder linear of the dense `model` in its planned format; the model comes back float
    (dequantized weights, f16-rounded f16 layers), ready for export, with the integer weights beside it."""
    import copy

    import torch

    recipe = mixed_recipe(plan, head)
    if recipe.needs_calibration:
        if calibration is None:
            raise ExportError("the subnet's weight formats use gptq-/awq-, which need calibration data "
                              "(calibration/ or --calibration PATH)")
        recipe = dataclasses.replace(recipe, calibration=calibration.info)
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    weights: dict[str, QuantizedLinear] = {}
    for fmt, modules in _groups(plan).items():
        before = {m: model.get_submodule(m).weight.detach().clone() for m in weights}
        if fmt.float_zero:
            log.info("numpy RTN %s on %d layers (a fractional zero point: not an INC grid)", fmt.name, len(modules))
            weights.update(_minmax_pass(model, fmt, modules))
        else:
            log.info("INC %s on %d layers", fmt.name, len(modules))
            weights.update(_inc_pass(model, fmt, modules, calibration))
        _check_untouched(model, before, fmt)
    f16 = [m for m, f in plan.items() if not f.quantized]
    for m in f16:  # a new tensor: a subnet's weights may share storage with the full model
        lin = model.get_submodule(m)
        lin.weight = torch.nn.Parameter(lin.weight.detach().half().float(), requires_grad=False)
    head_weights, head_f16 = quantize_head(model, head)
    weights.update(head_weights)
    result = QuantResult(recipe=recipe, model=model, weights=weights, head_f16=tuple(f16 + head_f16))
    materialize(result)  # embeddings / lm_head as shipped
    log.info("quantized %d weight matrices per layer (%s)", len(weights), recipe.describe())
    return result
