"""The deployment genes a search may choose, with the values allowed for each.

A `DeploySpace` is the part of a `SearchSpace` beyond depth and width: which weight formats
each kept layer's attention projections and MLP may ship in, which format embeddings/lm_head
ship in, and which OpenVINO runtime settings (with their allowed values) the bundle runs with.
A gene with one allowed value is pinned (a space file pins a gene by listing one value).

Formats are ordered from most to least precise (`precision_rank`), so the space's most
accurate corner (`SearchSpace.largest`) and fastest corner (`smallest`) are well defined.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from hwnas.errors import InvalidSubnetError, SpaceError
from hwnas.model.formats import HEAD_FORMATS, RUNTIME_GENES, check_runtime, parse_weight_format

DEFAULT_GROUP_SIZES = (128, 64, 32)
# Per runtime property: values from most to least precise (first = the accurate corner).
_RUNTIME_PRECISION: dict[str, tuple[Any, ...]] = {
    "KV_CACHE_PRECISION": ("f32", "f16", "bf16", "u8"),
    "DYNAMIC_QUANTIZATION_GROUP_SIZE": (0, 256, 128, 64, 32, 16),
    "INFERENCE_PRECISION_HINT": ("f32", "f16", "bf16"),
}
# Runtime properties whose value changes the numbers a bundle computes (the others only change speed).
NUMERIC_RUNTIME = tuple(_RUNTIME_PRECISION)


def precision_rank(fmt: str) -> tuple:
    """Sort key, most precise first: f16, int8, then int4 asym before sym, smaller groups first."""
    f = parse_weight_format(fmt)
    if f.bits is None:
        return (0,)
    return (1 if f.bits == 8 else 2, 0 if not f.sym else 1, f.group_size or 0, f.algorithm)


def runtime_rank(prop: str, value: Any) -> int:
    order = _RUNTIME_PRECISION.get(prop)
    return order.index(value) if order and value in order else 0


def default_group_size(widths: Iterable[int]) -> int:
    """The largest of 128/64/32 dividing every input width (INC pads ragged groups; OpenVINO cannot)."""
    ws = list(widths)
    for g in DEFAULT_GROUP_SIZES:
        if all(w % g == 0 for w in ws):
            return g
    raise SpaceError(f"no int4 group size of {list(DEFAULT_GROUP_SIZES)} divides the layer widths {sorted(set(ws))}")


@dataclass(frozen=True)
class DeploySpace:
    """Allowed deployment genes. Tuples keep their order (index = gene value); duplicates are refused."""

    attention_formats: tuple[str, ...]
    mlp_formats: tuple[str, ...]
    head_formats: tuple[str, ...] = HEAD_FORMATS
    runtime: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    # Measured, not chosen: per base layer the KL when its attention / MLP alone is int4 (`hwnas.search.sensitivity`),
    # a predictor feature. Not part of the space's identity or its file.
    sensitivity: tuple[tuple[float, ...], tuple[float, ...]] | None = field(default=None, compare=False, repr=False)
    # Known, not chosen: formats the source file holds its weights in (`hwnas.model.source_grid`), exact for this
    # model: the search is seeded with them (`hwnas.search.sensitivity.source_grid_seeds`). Not part of the identity.
    lossless: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        for field_name in ("attention_formats", "mlp_formats"):
            vals = tuple(getattr(self, field_name))
            try:
                names = tuple(parse_weight_format(v).name for v in vals)
            except InvalidSubnetError as e:
                raise SpaceError(f"deploy.{field_name}: {e}") from None
            _check_list(field_name, names)
            data_aware = [v for v in names if parse_weight_format(v).algorithm != "rtn"]
            if data_aware:
                raise SpaceError(f"deploy.{field_name}: {data_aware[0]} needs calibration for every candidate; the search "
                                 "scores round-to-nearest formats (f16, int8, int4_sym_gG, int4_asym_gG)")
            object.__setattr__(self, field_name, names)
        heads = tuple(self.head_formats)
        bad = [h for h in heads if h not in HEAD_FORMATS]
        if bad:
            raise SpaceError(f"deploy.head_formats: unknown head format {bad[0]!r}; accepted: {', '.join(HEAD_FORMATS)}")
        _check_list("head_formats", heads)
        object.__setattr__(self, "head_formats", heads)
        items = self.runtime.items() if isinstance(self.runtime, Mapping) else self.runtime
        rt = []
        for prop, values in sorted(items, key=lambda kv: kv[0]):
            values = tuple(values) if isinstance(values, (list, tuple)) else (values,)
            try:
                for v in values:
                    check_runtime({prop: v})
            except InvalidSubnetError as e:
                raise SpaceError(f"deploy.runtime: {e}") from None
            _check_list(f"runtime.{prop}", values)
            rt.append((prop, values))
        object.__setattr__(self, "runtime", tuple(rt))

    # ------------------------------------------------------------------ construction
    @classmethod
    def default(cls, input_widths: Iterable[int], *, has_bf16: bool = False, formats: Iterable[str] | None = None,
                source_formats: Iterable[str] = ()) -> "DeploySpace":
        """Per-channel int8 plus int4 sym/asym at the largest group size dividing every input width, plus
        the formats the source file stores its weights in (`hwnas.model.source_grid.lossless_formats`, e.g.
        int4_minmax_g32 for a Q4_1 GGUF) where they divide every width; runtime: KV cache u8 or f16,
        dynamic activation quantization off or group 32, and bf16 vs f32 inference precision only where
        the CPU runs bf16 natively (`has_bf16`)."""
        widths = list(input_widths)
        if formats is None:
            g = default_group_size(widths)
            formats = ("int8", f"int4_asym_g{g}", f"int4_sym_g{g}")
        formats = tuple(formats)
        lossless = tuple(f for f in source_formats if all(parse_weight_format(f).divides(w) for w in widths))
        formats += tuple(f for f in lossless if f not in formats)
        runtime: dict[str, tuple[Any, ...]] = {"KV_CACHE_PRECISION": ("u8", "f16"),
                                               "DYNAMIC_QUANTIZATION_GROUP_SIZE": (0, 32)}
        if has_bf16:
            runtime["INFERENCE_PRECISION_HINT"] = ("bf16", "f32")
        return cls(formats, formats, HEAD_FORMATS, tuple(runtime.items()), lossless=lossless)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], defaults: "DeploySpace | None" = None) -> "DeploySpace":
        """From a space file's ``deploy`` table; keys missing come from `defaults`. A one-value list pins a gene;
        ``formats`` sets attention and MLP formats at once; runtime values may be a list or one value."""
        if not isinstance(d, Mapping):
            raise SpaceError(f"search-space key 'deploy' must be a table/object, got {type(d).__name__}")
        known = {"formats", "attention_formats", "mlp_formats", "head_formats", "runtime"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SpaceError(f"unknown deploy key(s) {unknown}; accepted: {sorted(known)}")
        base = defaults.to_dict() if defaults else {}
        if "formats" in d:
            base["attention_formats"] = base["mlp_formats"] = _as_list("formats", d["formats"])
        for k in ("attention_formats", "mlp_formats", "head_formats"):
            if k in d:
                base[k] = _as_list(k, d[k])
        if "runtime" in d:
            if not isinstance(d["runtime"], Mapping):
                raise SpaceError("deploy.runtime must map OpenVINO properties to allowed values, e.g. "
                                 '{"KV_CACHE_PRECISION": ["u8", "f16"]}')
            rt = dict(base.get("runtime") or {})
            for prop, vals in d["runtime"].items():
                if prop not in RUNTIME_GENES:
                    raise SpaceError(f"deploy.runtime: unknown runtime setting {prop!r}; accepted: {', '.join(RUNTIME_GENES)}")
                if vals is None or vals == []:
                    rt.pop(prop, None)  # an empty list drops the gene: the target's own value is used
                else:
                    rt[prop] = vals
            base["runtime"] = rt
        missing = [k for k in ("attention_formats", "mlp_formats") if k not in base]
        if missing:
            raise SpaceError(f"deploy table needs {missing[0]} (or formats) when the space has no default genes")
        return cls(tuple(base["attention_formats"]), tuple(base["mlp_formats"]),
                   tuple(base.get("head_formats") or HEAD_FORMATS), tuple((base.get("runtime") or {}).items()))

    def to_dict(self) -> dict[str, Any]:
        return {"attention_formats": list(self.attention_formats), "mlp_formats": list(self.mlp_formats),
                "head_formats": list(self.head_formats), "runtime": {k: list(v) for k, v in self.runtime}}

    # ------------------------------------------------------------------ queries
    @property
    def runtime_names(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.runtime)

    def choices(self) -> tuple[int, int, int, tuple[int, ...]]:
        """Number of values per gene kind: (attention, MLP, head, one per runtime property)."""
        return (len(self.attention_formats), len(self.mlp_formats), len(self.head_formats),
                tuple(len(v) for _, v in self.runtime))

    def check_widths(self, attention_in: Iterable[int], mlp_in: Iterable[int]) -> None:
        """Every grouped format must divide the input width of every layer it may be applied to."""
        for name, fmts, widths in (("attention_formats", self.attention_formats, tuple(attention_in)),
                                   ("mlp_formats", self.mlp_formats, tuple(mlp_in))):
            for f in fmts:
                wf = parse_weight_format(f)
                bad = [w for w in widths if not wf.divides(w)]
                if bad:
                    raise SpaceError(f"deploy.{name}: {f} has group size {wf.group_size}, which does not divide the "
                                     f"input width {bad[0]}; use a group size dividing {sorted(set(widths))}")

    def int4_probe_format(self) -> str | None:
        """The most precise 4-bit format both attention and MLP may use (what sensitivity is measured in), other
        than the source's own grid (exact for this model: nothing to measure) unless it is the only one."""
        both = [f for f in self.attention_formats if f in self.mlp_formats and parse_weight_format(f).bits == 4]
        both = [f for f in both if f not in self.lossless] or both
        return min(both, key=precision_rank) if both else None

    def precise_index(self) -> tuple[int, int, int, tuple[int, ...]]:
        """Gene indices of the most precise value of each kind (the accurate corner)."""
        return (_argbest(self.attention_formats, precision_rank), _argbest(self.mlp_formats, precision_rank),
                _argbest(self.head_formats, lambda h: HEAD_FORMATS[::-1].index(h)),
                tuple(_argbest(v, lambda x, p=p: runtime_rank(p, x)) for p, v in self.runtime))

    def fast_index(self) -> tuple[int, int, int, tuple[int, ...]]:
        """Gene indices of the least precise value of each kind (the fast corner)."""
        return (_argworst(self.attention_formats, precision_rank), _argworst(self.mlp_formats, precision_rank),
                _argworst(self.head_formats, lambda h: HEAD_FORMATS[::-1].index(h)),
                tuple(_argworst(v, lambda x, p=p: runtime_rank(p, x)) for p, v in self.runtime))


def _argbest(values: tuple, key) -> int:
    return min(range(len(values)), key=lambda i: (key(values[i]), i))


def _argworst(values: tuple, key) -> int:
    return max(range(len(values)), key=lambda i: (key(values[i]), -i))


def _as_list(name: str, v: Any) -> list:
    if isinstance(v, str):
        return [v]
    if not isinstance(v, (list, tuple)) or not v:
        raise SpaceError(f"deploy.{name} must be a non-empty list, got {v!r}")
    return list(v)


def _check_list(name: str, values: tuple) -> None:
    if not values:
        raise SpaceError(f"deploy.{name} must allow at least one value")
    if len(set(values)) != len(values):
        raise SpaceError(f"deploy.{name} lists a value twice: {list(values)}")
