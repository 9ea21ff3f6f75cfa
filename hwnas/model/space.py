"""Search space and subnet configurations.

A subnet keeps some decoder layers of the base model and gives each kept layer an MLP
intermediate width from an allowed set. The space is defined once here and used for
training, search, extraction and export, so the space trained on is the space searched.

Layer choice comes in three modes:
- ``prefix``: keep the first N layers;
- ``skip``: any layer may be dropped, except the ones in ``always_keep`` (a keep flag per layer);
- ``ranked``: keep the N most important layers according to ``layer_order`` (most important first,
  measured by the supernet on calibration text), so one integer chooses which layers go.

The pymoo gene vector lives in `hwnas.model.genes` (`GeneCodec`); `SearchSpace.encode/decode/repair`
delegate to it and add the validation against the space.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from hwnas.errors import InvalidSubnetError, SpaceError
from hwnas.model.deploy_space import DeploySpace
from hwnas.model.formats import check_head_format, check_layer_formats, check_runtime
from hwnas.model.genes import GeneCodec

SCHEMA_VERSION = 1
DEPLOY_SCHEMA_VERSION = 2   # written by spaces with deployment genes (version 1 files have none)
LAYER_MODES = ("prefix", "skip", "ranked")


@dataclass(frozen=True)
class SubnetConfig:
    """Kept decoder layers (indices into the base model) and the MLP width of each.

    Optional deployment genes (see `hwnas.model.formats`): `weight_formats`, one (attention, MLP)
    weight-format pair per kept layer; `head_format` for embeddings/lm_head; `runtime`, OpenVINO
    CPU properties the bundle runs with. None/empty means "decided at export" (today's
    behaviour), and such a subnet keeps the key it always had.
    """

    layers: tuple[int, ...]
    mlp_widths: tuple[int, ...]
    weight_formats: tuple[tuple[str, str], ...] | None = None
    head_format: str | None = None
    runtime: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
        object.__setattr__(self, "mlp_widths", tuple(int(w) for w in self.mlp_widths))
        if len(self.layers) != len(self.mlp_widths):
            raise InvalidSubnetError(
                f"subnet has {len(self.layers)} layers but {len(self.mlp_widths)} mlp_widths; give one width per kept layer"
            )
        if self.weight_formats is not None:
            object.__setattr__(self, "weight_formats", check_layer_formats(self.weight_formats, len(self.layers)))
        if self.head_format is not None:
            check_head_format(self.head_format)
        runtime = dict(self.runtime) if not isinstance(self.runtime, dict) else self.runtime
        object.__setattr__(self, "runtime", check_runtime(runtime))

    @property
    def key(self) -> str:
        """Stable short id: layer count plus a hash of the canonical JSON form."""
        canon = json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)
        return f"l{len(self.layers)}-{hashlib.sha1(canon.encode()).hexdigest()[:8]}"

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def has_deploy_genes(self) -> bool:
        return self.weight_formats is not None or self.head_format is not None or bool(self.runtime)

    def architecture(self) -> "SubnetConfig":
        """The same layers and widths without deployment genes (what the supernet slices)."""
        return SubnetConfig(self.layers, self.mlp_widths)

    def with_deploy(self, weight_formats: Any = None, head_format: str | None = None,
                    runtime: Any = ()) -> "SubnetConfig":
        return SubnetConfig(self.layers, self.mlp_widths, weight_formats, head_format, runtime)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"layers": list(self.layers), "mlp_widths": list(self.mlp_widths)}
        if self.weight_formats is not None:
            d["weight_formats"] = [list(p) for p in self.weight_formats]
        if self.head_format is not None:
            d["head_format"] = self.head_format
        if self.runtime:
            d["runtime"] = dict(self.runtime)
        return d

    @classmethod
    def from_dict(cls, d: Any) -> "SubnetConfig":
        if not isinstance(d, dict) or "layers" not in d or "mlp_widths" not in d:
            raise InvalidSubnetError(
                'a subnet must be a JSON object {"layers": [...], "mlp_widths": [...]}'
                f", got {json.dumps(d)[:80]}"
            )
        layers, widths = d["layers"], d["mlp_widths"]
        if isinstance(widths, int):  # shorthand: one width for every kept layer
            widths = [widths] * len(layers)
        for name, seq in (("layers", layers), ("mlp_widths", widths)):
            if not isinstance(seq, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in seq):
                raise InvalidSubnetError(f"subnet field {name!r} must be a list of integers, got {json.dumps(seq)[:80]}")
        formats = d.get("weight_formats")
        if isinstance(formats, list) and len(formats) == 2 and all(isinstance(f, str) for f in formats):
            formats = [formats] * len(layers)  # shorthand: one [attention, mlp] pair for every kept layer
        if formats is not None and not isinstance(formats, list):
            raise InvalidSubnetError(f"subnet field 'weight_formats' must be a list of [attention, mlp] pairs, "
                                     f"got {json.dumps(formats)[:80]}")
        runtime = d.get("runtime") or {}
        if not isinstance(runtime, dict):
            raise InvalidSubnetError(f"subnet field 'runtime' must be an object of OpenVINO properties, got {json.dumps(runtime)[:80]}")
        return cls(tuple(layers), tuple(widths), formats, d.get("head_format"), runtime)

    @classmethod
    def uniform(cls, num_layers: int, width: int) -> "SubnetConfig":
        """The first `num_layers` layers, all with the same MLP width (the --layers/--mlp-width shorthand)."""
        return cls(tuple(range(num_layers)), (width,) * num_layers)

    def n_params(self, config: Any) -> int:
        """Parameter count of this subnet as a dense LLaMA model (tied embeddings counted once)."""
        h = config.hidden_size
        n_heads = config.num_attention_heads
        n_kv = getattr(config, "num_key_value_heads", None) or n_heads
        head_dim = getattr(config, "head_dim", None) or h // n_heads
        attn = h * n_heads * head_dim * 2 + h * n_kv * head_dim * 2
        if getattr(config, "attention_bias", False):
            attn += n_heads * head_dim * 2 + n_kv * head_dim * 2
        norms = 2 * h
        per_layer = [attn + norms + 3 * h * w + (2 * w + h if getattr(config, "mlp_bias", False) else 0) for w in self.mlp_widths]
        emb = config.vocab_size * h
        head = 0 if getattr(config, "tie_word_embeddings", False) else config.vocab_size * h
        return int(sum(per_layer) + emb + head + h)

    def describe(self) -> str:
        widths = sorted(set(self.mlp_widths))
        w = str(widths[0]) if len(widths) == 1 else f"{min(widths)}-{max(widths)}"
        text = f"{len(self.layers)} layers, MLP {w}"
        if self.weight_formats is not None:
            from collections import Counter
            counts = Counter(f for pair in self.weight_formats for f in pair)
            text += ", weights " + "/".join(f"{n}x{f}" for f, n in counts.most_common())
        if self.head_format is not None:
            text += f", head {self.head_format}"
        if self.runtime:
            text += ", " + " ".join(f"{k}={v}" for k, v in self.runtime)
        return text


@dataclass(frozen=True)
class SearchSpace:
    """Which subnets exist: layer-count range, layer mode, and allowed MLP widths; optionally the
    deployment genes (`deploy`: per-layer weight formats, head format, runtime settings)."""

    num_layers: int
    full_width: int
    widths: tuple[int, ...]
    layer_mode: str = "skip"
    min_layers: int = 1
    max_layers: int = 0  # 0 means num_layers
    always_keep: tuple[int, ...] = ()
    layer_order: tuple[int, ...] | None = None
    base_model: str = ""
    schema_version: int = field(default=SCHEMA_VERSION)
    deploy: DeploySpace | None = None

    def __post_init__(self) -> None:
        if isinstance(self.deploy, dict):
            object.__setattr__(self, "deploy", DeploySpace.from_dict(self.deploy))
        object.__setattr__(self, "schema_version", DEPLOY_SCHEMA_VERSION if self.deploy is not None else SCHEMA_VERSION)
        object.__setattr__(self, "widths", tuple(sorted({int(w) for w in self.widths})))
        object.__setattr__(self, "always_keep", tuple(sorted({int(i) for i in self.always_keep})))
        if self.max_layers == 0:
            object.__setattr__(self, "max_layers", self.num_layers)
        if self.layer_order is not None:
            object.__setattr__(self, "layer_order", tuple(int(i) for i in self.layer_order))
        self._check()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_model_config(cls, config: Any, base_model: str = "", **overrides: Any) -> "SearchSpace":
        """Defaults derived from the model: 50%-100% of the layers, widths 2/8..8/8 of the MLP in multiples of 64.

        In ``skip`` mode the first and last layers are always kept: dropping either is known to hurt
        far more than dropping a middle layer, and keeping them halves nothing of the search's reach.
        """
        n = int(config.num_hidden_layers)
        full = int(getattr(config, "hwnas_full_width", None) or config.intermediate_size)
        widths = default_widths(full)
        params: dict[str, Any] = dict(
            num_layers=n,
            full_width=full,
            widths=widths,
            layer_mode="skip",
            min_layers=max(1, math.ceil(n / 2)),
            max_layers=n,
            always_keep=(0, n - 1) if n > 2 else (),
            base_model=base_model,
        )
        params.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**params)

    @classmethod
    def from_dict(cls, d: dict[str, Any], defaults: "SearchSpace | None" = None) -> "SearchSpace":
        """Build from a dict; keys missing in `d` come from `defaults` (the model-derived space)."""
        known = {"num_layers", "full_width", "widths", "layer_mode", "min_layers", "max_layers",
                 "always_keep", "layer_order", "base_model", "schema_version", "deploy"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SpaceError(f"unknown search-space key(s) {unknown}; accepted: {sorted(known)}")
        version = d.get("schema_version", SCHEMA_VERSION)
        if version not in (SCHEMA_VERSION, DEPLOY_SCHEMA_VERSION):
            raise SpaceError(f"search-space schema_version {version!r} is not supported; accepted: "
                             f"{SCHEMA_VERSION}, {DEPLOY_SCHEMA_VERSION}")
        base = defaults.to_dict() if defaults else {}
        base.update({k: v for k, v in d.items() if k != "deploy"})
        base_deploy = defaults.deploy if defaults else None
        deploy = base_deploy
        if d.get("deploy") is not None:
            deploy = DeploySpace.from_dict(d["deploy"], defaults=base_deploy)
        elif "deploy" in d:
            deploy = None  # deploy = null in a file turns the genes off
        base["deploy"] = deploy
        try:
            return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in base.items()})
        except TypeError as e:
            raise SpaceError(f"incomplete search space: {e}") from None

    @classmethod
    def from_file(cls, path: str | Path, defaults: "SearchSpace | None" = None) -> "SearchSpace":
        """Read a space (or overrides of the model's default space) from TOML or JSON."""
        path = Path(path)
        if not path.is_file():
            raise SpaceError(f"search-space file {path} not found")
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix.lower() == ".toml":
                import tomllib

                data = tomllib.loads(text)
                data = data.get("space", data)
            else:
                data = json.loads(text)
        except Exception as e:  # noqa: BLE001 - any parse error becomes one line
            raise SpaceError(f"cannot parse search-space file {path}: {e}") from None
        if not isinstance(data, dict):
            raise SpaceError(f"search-space file {path} must hold a table/object")
        return cls.from_dict(data, defaults=defaults)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "base_model": self.base_model,
            "num_layers": self.num_layers,
            "full_width": self.full_width,
            "widths": list(self.widths),
            "layer_mode": self.layer_mode,
            "min_layers": self.min_layers,
            "max_layers": self.max_layers,
            "always_keep": list(self.always_keep),
            "layer_order": list(self.layer_order) if self.layer_order is not None else None,
            **({"deploy": self.deploy.to_dict()} if self.deploy is not None else {}),
        }

    def with_(self, **changes: Any) -> "SearchSpace":
        return replace(self, **changes)

    def _check(self) -> None:
        n = self.num_layers
        if self.layer_mode not in LAYER_MODES:
            raise SpaceError(f"layer_mode {self.layer_mode!r} is not one of {list(LAYER_MODES)}")
        if n < 1:
            raise SpaceError(f"num_layers must be >= 1, got {n}")
        if not (1 <= self.min_layers <= self.max_layers <= n):
            raise SpaceError(
                f"layer counts must satisfy 1 <= min_layers <= max_layers <= {n}; got {self.min_layers}..{self.max_layers}"
            )
        if not self.widths or any(w < 1 or w > self.full_width for w in self.widths):
            raise SpaceError(f"widths must lie in 1..{self.full_width}, got {list(self.widths)}")
        bad = [i for i in self.always_keep if not 0 <= i < n]
        if bad:
            raise SpaceError(f"always_keep names layer(s) {bad}; the model has layers 0..{n - 1}")
        if len(self.always_keep) > self.max_layers:
            raise SpaceError(f"always_keep keeps {len(self.always_keep)} layers but max_layers is {self.max_layers}")
        if self.layer_mode == "ranked":
            if self.layer_order is None or sorted(self.layer_order) != list(range(n)):
                raise SpaceError(f"layer_mode 'ranked' needs layer_order, a permutation of 0..{n - 1}")
        if self.deploy is not None:
            self.deploy.check_widths((), self.widths)  # down_proj reads the MLP width (hidden widths: check_model)

    # ------------------------------------------------------------------ validation
    def validate(self, cfg: SubnetConfig, structure: bool = True) -> SubnetConfig:
        """Raise InvalidSubnetError unless `cfg` is a subnet of this space.

        With ``structure=False`` only the model bounds and allowed widths are checked (any layer
        subset of allowed size), which is what ``extract``/``eval`` of a user-given subnet need.
        """
        n = self.num_layers
        if not cfg.layers:
            raise InvalidSubnetError("a subnet must keep at least one layer")
        bad = [i for i in cfg.layers if not 0 <= i < n]
        if bad:
            raise InvalidSubnetError(f"subnet names layer {bad[0]}, but the model has layers 0..{n - 1}")
        if list(cfg.layers) != sorted(set(cfg.layers)):
            raise InvalidSubnetError(f"subnet layers must be increasing and unique, got {list(cfg.layers)}")
        badw = [w for w in cfg.mlp_widths if w not in self.widths]
        if badw:
            raise InvalidSubnetError(f"MLP width {badw[0]} is not in the search space; allowed widths: {list(self.widths)}")
        if structure and self.deploy is not None:
            self._validate_genes(cfg)
        if not structure:
            return cfg
        k = len(cfg.layers)
        if not self.min_layers <= k <= self.max_layers:
            raise InvalidSubnetError(
                f"subnet keeps {k} layers; the search space allows {self.min_layers}..{self.max_layers}"
            )
        if self.layer_mode == "prefix" and list(cfg.layers) != list(range(k)):
            raise InvalidSubnetError(f"layer_mode 'prefix' keeps the first N layers; got {list(cfg.layers)}")
        if self.layer_mode == "skip":
            missing = sorted(set(self.always_keep) - set(cfg.layers))
            if missing:
                raise InvalidSubnetError(f"subnet drops layer(s) {missing}, which the search space always keeps")
        if self.layer_mode == "ranked":
            assert self.layer_order is not None
            want = sorted(self.layer_order[:k])
            if list(cfg.layers) != want:
                raise InvalidSubnetError(
                    f"layer_mode 'ranked' keeps the {k} most important layers {want}; got {list(cfg.layers)}"
                )
        return cfg

    def _validate_genes(self, cfg: SubnetConfig) -> None:
        """A subnet of a space with deployment genes carries each of them, with an allowed value."""
        dep = self.deploy
        assert dep is not None
        if cfg.weight_formats is None or cfg.head_format is None:
            raise InvalidSubnetError(f"subnet {cfg.describe()} has no weight formats/head format; this search space "
                                     "chooses them (deployment genes)")
        for i, (a, m) in zip(cfg.layers, cfg.weight_formats):
            if a not in dep.attention_formats:
                raise InvalidSubnetError(f"layer {i}: attention format {a} is not in the search space; allowed: "
                                         f"{list(dep.attention_formats)}")
            if m not in dep.mlp_formats:
                raise InvalidSubnetError(f"layer {i}: MLP format {m} is not in the search space; allowed: {list(dep.mlp_formats)}")
        if cfg.head_format not in dep.head_formats:
            raise InvalidSubnetError(f"head format {cfg.head_format} is not in the search space; allowed: {list(dep.head_formats)}")
        rt = dict(cfg.runtime)
        if set(rt) != set(dep.runtime_names):
            raise InvalidSubnetError(f"subnet runtime settings {sorted(rt)} differ from the search space's "
                                     f"{list(dep.runtime_names)}")
        for prop, values in dep.runtime:
            if rt[prop] not in values:
                raise InvalidSubnetError(f"runtime setting {prop}={rt[prop]!r} is not in the search space; allowed: {list(values)}")

    def contains(self, cfg: SubnetConfig) -> bool:
        try:
            self.validate(cfg)
            return True
        except InvalidSubnetError:
            return False

    # ------------------------------------------------------------------ pymoo encoding (see genes.py)
    @cached_property
    def genes(self) -> GeneCodec:
        """The gene codec pymoo searches with; built once per space."""
        return GeneCodec(self.num_layers, self.widths, self.layer_mode, self.min_layers, self.max_layers,
                         self.always_keep, self.layer_order,
                         () if self.deploy is None else (*self.deploy.choices()[:3], *self.deploy.choices()[3]))

    @property
    def n_var(self) -> int:
        return self.genes.n_var

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Integer bounds of each variable: layer genes first, then one width index per base layer."""
        return self.genes.bounds()

    def _kept_from_genes(self, x: np.ndarray) -> list[int]:
        return self.genes.kept_from_genes(x)

    def encode(self, cfg: SubnetConfig) -> np.ndarray:
        """Integer vector for pymoo; width genes of dropped layers are set to the largest width."""
        self.validate(cfg)
        if self.deploy is None:
            return self.genes.encode(cfg.layers, cfg.mlp_widths)
        dep = self.deploy
        assert cfg.weight_formats is not None and cfg.head_format is not None
        rt = dict(cfg.runtime)
        idx = ([dep.attention_formats.index(a) for a, _ in cfg.weight_formats],
               [dep.mlp_formats.index(m) for _, m in cfg.weight_formats],
               dep.head_formats.index(cfg.head_format),
               [values.index(rt[prop]) for prop, values in dep.runtime])
        return self.genes.encode(cfg.layers, cfg.mlp_widths, idx)

    def decode(self, x: Iterable[int]) -> SubnetConfig:
        """Inverse of encode; raises InvalidSubnetError for vectors outside the space (see repair)."""
        kept, widths = self.genes.decode(x)
        if self.deploy is None:
            return self.validate(SubnetConfig(kept, widths))
        return self.validate(self.with_genes(SubnetConfig(kept, widths), *self.genes.decode_deploy(x, kept)))

    def with_genes(self, cfg: SubnetConfig, attention: Iterable[int], mlp: Iterable[int], head: int,
                   runtime: Iterable[int]) -> SubnetConfig:
        """`cfg`'s architecture with deployment genes given as indices into this space's allowed values."""
        dep = self.deploy
        if dep is None:
            raise InvalidSubnetError("this search space has no deployment genes")
        formats = [(dep.attention_formats[a], dep.mlp_formats[m]) for a, m in zip(attention, mlp)]
        rt = {prop: values[i] for (prop, values), i in zip(dep.runtime, runtime)}
        return cfg.architecture().with_deploy(formats, dep.head_formats[head], rt)

    def _corner(self, cfg: SubnetConfig, fast: bool) -> SubnetConfig:
        if self.deploy is None:
            return cfg
        a, m, h, r = self.deploy.fast_index() if fast else self.deploy.precise_index()
        n = len(cfg.layers)
        return self.with_genes(cfg, [a] * n, [m] * n, h, r)

    def repair(self, x: Iterable[int], rng: np.random.Generator | None = None) -> np.ndarray:
        """Clip to bounds and fix the kept-layer count in skip mode, so any vector decodes."""
        return self.genes.repair(x, rng)

    # ------------------------------------------------------------------ sampling
    def _layers_for_count(self, k: int, rng: np.random.Generator | None) -> tuple[int, ...]:
        return self.genes.layers_for_count(k, rng)

    def sample(self, rng: np.random.Generator) -> SubnetConfig:
        """Uniform layer count, then uniform layers (mode-dependent) and widths."""
        lo = max(self.min_layers, len(self.always_keep) if self.layer_mode == "skip" else 1)
        k = int(rng.integers(lo, self.max_layers + 1))
        layers = self._layers_for_count(k, rng)
        widths = tuple(int(rng.choice(self.widths)) for _ in layers)
        cfg = SubnetConfig(layers, widths)
        if self.deploy is None:
            return cfg
        na, nm, nh, nr = self.deploy.choices()
        return self.with_genes(cfg, [int(rng.integers(na)) for _ in layers], [int(rng.integers(nm)) for _ in layers],
                               int(rng.integers(nh)), [int(rng.integers(c)) for c in nr])

    def largest(self) -> SubnetConfig:
        """All layers at full width (with deployment genes: every gene at its most precise value)."""
        layers = self._layers_for_count(self.max_layers, None)
        return self._corner(SubnetConfig(layers, (self.widths[-1],) * len(layers)), fast=False)

    def smallest(self) -> SubnetConfig:
        """Fewest layers at the narrowest width (with deployment genes: every gene at its least precise value)."""
        k = max(self.min_layers, len(self.always_keep) if self.layer_mode == "skip" else 1)
        layers = self._layers_for_count(k, None)
        return self._corner(SubnetConfig(layers, (self.widths[0],) * len(layers)), fast=True)

    def features(self, cfg: SubnetConfig) -> np.ndarray:
        """Predictor features: a keep flag and a width fraction per base layer, plus totals."""
        n = self.num_layers
        keep = np.zeros(n)
        width = np.zeros(n)
        for layer, w in zip(cfg.layers, cfg.mlp_widths):
            keep[layer] = 1.0
            width[layer] = w / self.full_width
        base = np.concatenate([keep, width, [keep.sum() / n, width.sum() / n]])
        if self.deploy is None or cfg.weight_formats is None:
            return base
        return np.concatenate([base, self.gene_features(cfg)])

    def gene_features(self, cfg: SubnetConfig) -> np.ndarray:
        """Deployment genes as predictor features: per base layer the bits/16 of its attention and MLP
        weights (0 when dropped), one-hots of every format kind's share of kept layers, the head and
        each runtime value (one-hot)."""
        from hwnas.model.formats import parse_weight_format

        dep = self.deploy
        assert dep is not None and cfg.weight_formats is not None
        n = self.num_layers
        abits, mbits = np.zeros(n), np.zeros(n)
        ashare, mshare = np.zeros(len(dep.attention_formats)), np.zeros(len(dep.mlp_formats))
        for i, (a, m) in zip(cfg.layers, cfg.weight_formats):
            abits[i] = (parse_weight_format(a).bits or 16) / 16
            mbits[i] = (parse_weight_format(m).bits or 16) / 16
            ashare[dep.attention_formats.index(a)] += 1 / len(cfg.layers)
            mshare[dep.mlp_formats.index(m)] += 1 / len(cfg.layers)
        head = np.array([1.0 if h == cfg.head_format else 0.0 for h in dep.head_formats])
        rt = dict(cfg.runtime)
        runtime = [1.0 if rt.get(p) == v else 0.0 for p, values in dep.runtime for v in values]
        return np.concatenate([abits, mbits, ashare, mshare, head, runtime])


def default_widths(full: int, steps: int = 8, lowest_step: int = 2, multiple: int = 64) -> tuple[int, ...]:
    """Widths k/steps of `full` for k = lowest_step..steps, rounded to `multiple`; the last is `full` itself."""
    out = set()
    for k in range(lowest_step, steps + 1):
        w = full if k == steps else max(multiple, int(round(full * k / steps / multiple)) * multiple)
        out.add(min(w, full))
    return tuple(sorted(out))


def parse_subnet_spec(spec: str) -> SubnetConfig:
    """A subnet from inline JSON or a JSON file path; errors name what was wrong."""
    text = spec.strip()
    if not text.startswith("{"):
        path = Path(spec)
        if not path.is_file():
            raise InvalidSubnetError(
                f"--subnet {spec!r} is neither inline JSON nor an existing JSON file; "
                'use e.g. \'{"layers": [0, 1, 2], "mlp_widths": [1536, 1152, 768]}\''
            )
        text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidSubnetError(f"--subnet is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if isinstance(data, dict) and "subnet" in data and "layers" not in data:
        data = data["subnet"]  # accept a candidate record from candidates.jsonl / pareto.json
    return SubnetConfig.from_dict(data)
