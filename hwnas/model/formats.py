"""The deployment genes' vocabulary: per-layer weight formats, the embeddings/lm_head format,
and OpenVINO runtime settings.

One place names them so the search space, the search records, INC quantization, the IR writer,
the latency model and the bundle manifest all spell a format the same way:

- a layer weight format is ``f16`` (left unquantized), ``int8`` (per-output-channel symmetric),
  ``int4_{sym|asym}_g{G}`` (grouped, G input channels per scale, integer zero point as INC writes
  it), optionally prefixed by a data-aware algorithm (``gptq-``, ``awq-``; RTN when no prefix), or
  ``int4_minmax_g{G}``: each group's min and max mapped onto codes 0 and 15, the zero point kept
  fractional (f16). That is GGUF's Q4_1 grid: a model read from a Q4_1 GGUF (the default model)
  is stored in ``int4_minmax_g32`` without any loss, where INC's integer zero point re-rounds it;
- a head format (embeddings and lm_head) is ``int8`` or ``f16``;
- a runtime setting is an OpenVINO CPU property from `RUNTIME_GENES` with one of its values.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from hwnas.errors import InvalidSubnetError

ALGORITHMS = ("rtn", "gptq", "awq")
HEAD_FORMATS = ("int8", "f16")
# OpenVINO CPU properties the search may choose, with every value hwnas accepts for each.
# Which of them a host supports is decided in `hwnas.hardware` (e.g. bf16 needs AVX512-BF16/AMX).
RUNTIME_GENES: dict[str, tuple[Any, ...]] = {
    "KV_CACHE_PRECISION": ("u8", "f16", "bf16", "f32"),
    "DYNAMIC_QUANTIZATION_GROUP_SIZE": (0, 16, 32, 64, 128, 256),
    "INFERENCE_PRECISION_HINT": ("bf16", "f32", "f16"),
    "INFERENCE_NUM_THREADS": tuple(range(1, 257)),
    "NUM_STREAMS": tuple(range(1, 65)),
}
_FORMAT_RE = re.compile(r"^(?:(gptq|awq)-)?(?:(f16)|(int8)|int4_(sym|asym|minmax)_g(\d+))$")
FORMAT_HELP = ("f16, int8, or int4_sym_gG / int4_asym_gG / int4_minmax_gG (G a group size, e.g. 64), "
               "optionally prefixed gptq- or awq- (not minmax)")


@dataclass(frozen=True)
class WeightFormat:
    """How one linear layer's weights ship: bits, symmetry, group size (None = per output channel)."""

    bits: int | None          # None for f16 (unquantized)
    sym: bool = True
    group_size: int | None = None
    algorithm: str = "rtn"
    float_zero: bool = False  # minmax: fractional (f16) zero point, scale = (max - min) / 15 (GGUF Q4_1's grid)

    @property
    def name(self) -> str:
        if self.bits is None:
            base = "f16"
        elif self.bits == 8:
            base = "int8"
        else:
            kind = "minmax" if self.float_zero else ("sym" if self.sym else "asym")
            base = f"int4_{kind}_g{self.group_size}"
        return base if self.algorithm == "rtn" else f"{self.algorithm}-{base}"

    @property
    def quantized(self) -> bool:
        return self.bits is not None

    def divides(self, in_features: int) -> bool:
        """Whether this format can be applied to a layer with this many input channels."""
        return self.group_size is None or in_features % self.group_size == 0

    def __str__(self) -> str:
        return self.name


def parse_weight_format(name: str) -> WeightFormat:
    """A `WeightFormat` from its name; InvalidSubnetError naming the accepted forms otherwise."""
    m = _FORMAT_RE.match(str(name).strip())
    if not m:
        raise InvalidSubnetError(f"unknown weight format {name!r}; accepted: {FORMAT_HELP}")
    algo, f16, int8, sym, group = m.groups()
    algorithm = algo or "rtn"
    if f16:
        if algo:
            raise InvalidSubnetError(f"weight format {name!r}: f16 is unquantized, {algo}- does not apply")
        return WeightFormat(bits=None)
    if int8:
        return WeightFormat(bits=8, sym=True, group_size=None, algorithm=algorithm)
    g = int(group)
    if g < 16 or g & (g - 1):
        raise InvalidSubnetError(f"weight format {name!r}: group size {g} must be a power of two >= 16")
    if sym == "minmax" and algo:
        raise InvalidSubnetError(f"weight format {name!r}: minmax is round-to-nearest on each group's own range; "
                                 f"{algo}- applies to int4_sym_gG / int4_asym_gG (INC's grids)")
    return WeightFormat(bits=4, sym=(sym == "sym"), group_size=g, algorithm=algorithm, float_zero=(sym == "minmax"))


def check_head_format(name: str) -> str:
    if name not in HEAD_FORMATS:
        raise InvalidSubnetError(f"unknown head format {name!r}; accepted: {', '.join(HEAD_FORMATS)}")
    return name


def check_runtime(settings: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Runtime settings as a sorted tuple of (OpenVINO property, value), each checked against `RUNTIME_GENES`."""
    out = []
    for key, value in settings.items():
        if key not in RUNTIME_GENES:
            raise InvalidSubnetError(f"unknown runtime setting {key!r}; accepted: {', '.join(RUNTIME_GENES)}")
        allowed = RUNTIME_GENES[key]
        if isinstance(allowed[0], int):
            if isinstance(value, bool) or not isinstance(value, int) or value not in allowed:
                raise InvalidSubnetError(f"runtime setting {key}={value!r} is not accepted; use an integer in "
                                         f"{allowed[0]}..{allowed[-1]}" if len(allowed) > 8 else
                                         f"runtime setting {key}={value!r} is not accepted; use one of {list(allowed)}")
        elif value not in allowed:
            raise InvalidSubnetError(f"runtime setting {key}={value!r} is not accepted; use one of {list(allowed)}")
        out.append((key, value))
    return tuple(sorted(out))


def check_layer_formats(formats: Iterable[Iterable[str]], n_layers: int) -> tuple[tuple[str, str], ...]:
    """Per kept layer (attention format, MLP format), each a valid weight-format name (canonical spelling)."""
    out = []
    for item in formats:
        pair = tuple(item)
        if len(pair) != 2:
            raise InvalidSubnetError(f"each layer's weight formats must be [attention, mlp], got {list(pair)}")
        out.append(tuple(parse_weight_format(p).name for p in pair))
    if len(out) != n_layers:
        raise InvalidSubnetError(f"subnet has {n_layers} layers but {len(out)} weight-format pairs; give one "
                                 "[attention, mlp] pair per kept layer")
    return tuple(out)  # type: ignore[return-value]
