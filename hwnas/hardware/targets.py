"""Targets: where and how a subnet is measured (OpenVINO properties + workload), read from TOML.

`--target NAME` resolves `profiles/NAME.toml` next to the package; `--target path.toml` reads a
user's own file. Every key and value is checked, and an error names the bad key or value and
lists what is accepted, so a misspelled property never silently falls back to a default.

A target may say ``INFERENCE_NUM_THREADS = "physical_cores"`` and ask for bf16 precision; both are
resolved against the measured host (`Target.resolved_properties(host)`): on a CPU without native
bf16, a bf16 request runs in f32 and the measurement records the properties really used.
"""
from __future__ import annotations

import difflib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from hwnas.datadir import REPO_ROOT
from hwnas.errors import TargetError

if TYPE_CHECKING:  # pragma: no cover
    from hwnas.hardware.host import HostInfo

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
PROFILES_ENV = "HWNAS_PROFILES_DIR"
PROFILES_DIR = REPO_ROOT / "profiles"

PRECISIONS = ("f32", "bf16", "f16")
KV_PRECISIONS = ("f32", "f16", "bf16", "u8", "u4")
HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
CORE_TYPES = ("ANY_CORE", "PCORE_ONLY", "ECORE_ONLY")
THREAD_WORDS = ("physical_cores",)


# ---------------------------------------------------------------------------- value checkers
def ov_value(v: Any) -> Any:
    """A target property value as OpenVINO's compile_model takes it (booleans as YES/NO, the rest as strings)."""
    if isinstance(v, bool):
        return "YES" if v else "NO"
    return str(v) if not isinstance(v, str) else v


def _choice(*allowed: str) -> Callable[[str, Any], Any]:
    def check(key: str, v: Any) -> Any:
        if not isinstance(v, str) or v not in allowed:
            raise ValueError(f"{key} = {v!r} is not accepted; accepted: {list(allowed)}")
        return v

    return check


def _pos_int_or(*words: str) -> Callable[[str, Any], Any]:
    def check(key: str, v: Any) -> Any:
        if isinstance(v, bool) or not (isinstance(v, int) and v >= 1) and v not in words:
            extra = f" or one of {list(words)}" if words else ""
            raise ValueError(f"{key} = {v!r} is not accepted; give a positive integer{extra}")
        return v

    return check


def _bool(key: str, v: Any) -> Any:
    if not isinstance(v, bool):
        raise ValueError(f"{key} = {v!r} is not accepted; give true or false")
    return v


def _nonneg_int(key: str, v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{key} = {v!r} is not accepted; give an integer >= 0")
    return v


# OpenVINO CPU properties a target may set, with their checkers.
OPENVINO_PROPERTIES: dict[str, Callable[[str, Any], Any]] = {
    "INFERENCE_PRECISION_HINT": _choice(*PRECISIONS),
    "PERFORMANCE_HINT": _choice(*HINTS),
    "INFERENCE_NUM_THREADS": _pos_int_or(*THREAD_WORDS),
    "NUM_STREAMS": _pos_int_or("AUTO"),
    "KV_CACHE_PRECISION": _choice(*KV_PRECISIONS),
    "ENABLE_CPU_PINNING": _bool,
    "ENABLE_HYPER_THREADING": _bool,
    "SCHEDULING_CORE_TYPE": _choice(*CORE_TYPES),
    "DYNAMIC_QUANTIZATION_GROUP_SIZE": _nonneg_int,
    "KEY_CACHE_GROUP_SIZE": _nonneg_int,
    "VALUE_CACHE_GROUP_SIZE": _nonneg_int,
}
TOP_KEYS = ("schema_version", "name", "description", "expected_cpu", "openvino", "workload", "measure")


@dataclass(frozen=True)
class Workload:
    """What is measured: a prompt of `prompt_tokens` random tokens, then `new_tokens` greedy tokens.

    TTFT and TPOT are reported at the first batch size (the latency case), throughput at the last.
    """

    prompt_tokens: int = 64
    new_tokens: int = 16
    batch_sizes: tuple[int, ...] = (1, 4)

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch_sizes", tuple(self.batch_sizes))

    @property
    def latency_batch(self) -> int:
        return self.batch_sizes[0]

    @property
    def throughput_batch(self) -> int:
        return self.batch_sizes[-1]

    def to_dict(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens, "new_tokens": self.new_tokens, "batch_sizes": list(self.batch_sizes)}


@dataclass(frozen=True)
class MeasureSettings:
    """How a session of interleaved rounds is run and summarised (hwnas.hardware.measure.measure_many).

    warmup: generations per model before timing; repeats: timed rounds (one generation of every
    model each); estimator: how rounds are summarised (hwnas.hardware.robust.ESTIMATORS);
    interference_tol: a round is set aside when the reference kernel ran more than this fraction
    slower than its best (0 turns the check off); max_rel_ci: a figure whose 95% interval is wider
    than +-this fraction is re-measured and, if that does not help, flagged; max_remeasure: budget
    of extra rounds, in units of `repeats`; max_cv: the spread criterion of files written before
    `max_rel_ci` existed, used only when `max_rel_ci` is 0.
    """

    warmup: int = 1
    repeats: int = 3
    max_cv: float = 0.10
    max_remeasure: int = 1
    estimator: str = "round_min"
    interference_tol: float = 0.25
    max_rel_ci: float = 0.03

    def to_dict(self) -> dict[str, Any]:
        return {"warmup": self.warmup, "repeats": self.repeats, "max_cv": self.max_cv, "max_remeasure": self.max_remeasure,
                "estimator": self.estimator, "interference_tol": self.interference_tol, "max_rel_ci": self.max_rel_ci}


WORKLOAD_KEYS = ("prompt_tokens", "new_tokens", "batch_sizes")
MEASURE_KEYS = ("warmup", "repeats", "max_cv", "max_remeasure", "estimator", "interference_tol", "max_rel_ci")


@dataclass(frozen=True)
class Target:
    """A named measurement target: OpenVINO properties, workload and measurement settings."""

    name: str
    openvino: dict[str, Any]
    workload: Workload = field(default_factory=Workload)
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    description: str = ""
    expected_cpu: tuple[str, ...] = ()
    path: str = ""
    schema_version: int = SCHEMA_VERSION

    def resolved_properties(self, host: "HostInfo | None" = None) -> dict[str, Any]:
        """The properties passed to `compile_model` on `host`: symbolic thread counts resolved, bf16
        replaced by f32 where the CPU has no native bf16 (OpenVINO would emulate it slowly)."""
        props = dict(self.openvino)
        threads = props.get("INFERENCE_NUM_THREADS")
        if threads == "physical_cores":
            props["INFERENCE_NUM_THREADS"] = host.physical_cores if host else (os.cpu_count() or 1)
        if props.get("INFERENCE_PRECISION_HINT") == "bf16" and host is not None and not host.has_bf16:
            log.warning("target %s asks for bf16 but %s has no native bf16; measuring in f32", self.name, host.cpu_model)
            props["INFERENCE_PRECISION_HINT"] = "f32"
        if props.get("INFERENCE_PRECISION_HINT") == "f16" and host is not None and not host.has_fp16:
            log.warning("target %s asks for f16 but %s has no native f16 arithmetic; measuring in f32", self.name, host.cpu_model)
            props["INFERENCE_PRECISION_HINT"] = "f32"
        return props

    def cpu_matches(self, cpu_model: str) -> bool:
        """True when the target names no expected CPU, or `cpu_model` contains one of the names."""
        return not self.expected_cpu or any(e.lower() in cpu_model.lower() for e in self.expected_cpu)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "name": self.name,
            "description": self.description,
            "expected_cpu": list(self.expected_cpu),
            "openvino": dict(self.openvino),
            "workload": self.workload.to_dict(),
            "measure": self.measure.to_dict(),
            "path": self.path,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "target") -> "Target":
        """Validate and build; `source` names the file in error messages."""
        if not isinstance(d, dict):
            raise TargetError(f"{source}: a target must be a table of keys, got {type(d).__name__}")
        d = dict(d)
        path = d.pop("path", "")
        _check_keys(d, TOP_KEYS, source, "key")
        version = d.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise TargetError(f"{source}: schema_version {version!r} is not supported; accepted: [{SCHEMA_VERSION}]")
        name = d.get("name")
        if not isinstance(name, str) or not name:
            raise TargetError(f"{source}: 'name' must be a non-empty string")
        expected = d.get("expected_cpu", [])
        if isinstance(expected, str):
            expected = [expected]
        if not isinstance(expected, list) or not all(isinstance(e, str) for e in expected):
            raise TargetError(f"{source}: 'expected_cpu' must be a list of CPU-name substrings, e.g. [\"Xeon\"]")
        ov = d.get("openvino", {})
        if not isinstance(ov, dict):
            raise TargetError(f"{source}: [openvino] must be a table of OpenVINO properties")
        _check_keys(ov, tuple(OPENVINO_PROPERTIES), source, "OpenVINO property", section="openvino")
        props: dict[str, Any] = {}
        for k, v in ov.items():
            try:
                props[k] = OPENVINO_PROPERTIES[k](k, v)
            except ValueError as e:
                raise TargetError(f"{source}: [openvino] {e}") from None
        workload = _workload(d.get("workload", {}), source)
        measure = _measure(d.get("measure", {}), source)
        description = d.get("description", "")
        if not isinstance(description, str):
            raise TargetError(f"{source}: 'description' must be a string")
        return cls(name=name, openvino=props, workload=workload, measure=measure, description=description,
                   expected_cpu=tuple(expected), path=str(path))


def _check_keys(d: dict[str, Any], accepted: tuple[str, ...], source: str, what: str, section: str = "") -> None:
    unknown = [k for k in d if k not in accepted]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(str(k), accepted, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        where = f"[{section}] " if section else ""
        raise TargetError(f"{source}: unknown {what} {where}{k!r}{hint}; accepted: {list(accepted)}")


def _workload(d: Any, source: str) -> Workload:
    if not isinstance(d, dict):
        raise TargetError(f"{source}: [workload] must be a table with keys {list(WORKLOAD_KEYS)}")
    _check_keys(d, WORKLOAD_KEYS, source, "workload key", section="workload")
    w = Workload()
    vals = {**w.to_dict(), **d}
    for k in ("prompt_tokens", "new_tokens"):
        v = vals[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < (2 if k == "new_tokens" else 1):
            lo = 2 if k == "new_tokens" else 1
            raise TargetError(f"{source}: [workload] {k} = {v!r} is not accepted; give an integer >= {lo}")
    bs = vals["batch_sizes"]
    if isinstance(bs, int) and not isinstance(bs, bool):
        bs = [bs]
    if not isinstance(bs, list) or not bs or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in bs):
        raise TargetError(f"{source}: [workload] batch_sizes = {bs!r} is not accepted; give a list of positive integers, e.g. [1, 8]")
    if len(set(bs)) != len(bs):
        raise TargetError(f"{source}: [workload] batch_sizes = {bs!r} repeats a value; give distinct batch sizes")
    return Workload(vals["prompt_tokens"], vals["new_tokens"], tuple(bs))


def _measure(d: Any, source: str) -> MeasureSettings:
    if not isinstance(d, dict):
        raise TargetError(f"{source}: [measure] must be a table with keys {list(MEASURE_KEYS)}")
    _check_keys(d, MEASURE_KEYS, source, "measure key", section="measure")
    vals = {**MeasureSettings().to_dict(), **d}
    for k, lo in (("warmup", 0), ("repeats", 1), ("max_remeasure", 0)):
        v = vals[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise TargetError(f"{source}: [measure] {k} = {v!r} is not accepted; give an integer >= {lo}")
    cv = vals["max_cv"]
    if isinstance(cv, bool) or not isinstance(cv, (int, float)) or not 0 < cv < 1:
        raise TargetError(f"{source}: [measure] max_cv = {cv!r} is not accepted; give a number between 0 and 1, e.g. 0.1")
    for k, hi in (("interference_tol", 10.0), ("max_rel_ci", 1.0)):
        v = vals[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < hi:
            raise TargetError(f"{source}: [measure] {k} = {v!r} is not accepted; give a number >= 0 and < {hi:g} "
                              f"(0 turns it off), e.g. {MeasureSettings().to_dict()[k]}")
    from hwnas.hardware.robust import ESTIMATORS

    if vals["estimator"] not in ESTIMATORS:
        raise TargetError(f"{source}: [measure] estimator = {vals['estimator']!r} is not accepted; accepted: {list(ESTIMATORS)}")
    return MeasureSettings(vals["warmup"], vals["repeats"], float(cv), vals["max_remeasure"], vals["estimator"],
                           float(vals["interference_tol"]), float(vals["max_rel_ci"]))


# ---------------------------------------------------------------------------- loading
def profiles_dir() -> Path:
    """Folder of the shipped target files ($HWNAS_PROFILES_DIR overrides)."""
    return Path(os.environ.get(PROFILES_ENV) or PROFILES_DIR)


def available_targets() -> list[str]:
    d = profiles_dir()
    return sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else []


def load_target(name_or_path: "str | os.PathLike[str] | Target") -> Target:
    """A shipped target by name (`xeon`) or a TOML file path (`my.toml`)."""
    if isinstance(name_or_path, Target):
        return name_or_path
    spec = str(name_or_path)
    path = Path(spec).expanduser()
    looks_like_path = spec.endswith(".toml") or os.sep in spec or "/" in spec
    if not looks_like_path:
        path = profiles_dir() / f"{spec}.toml"
        if not path.is_file():
            avail = available_targets()
            raise TargetError(
                f"unknown target {spec!r}; available targets: {', '.join(avail) or '(none found in ' + str(profiles_dir()) + ')'}"
                " (or give a path to your own .toml file)"
            )
    elif not path.is_file():
        raise TargetError(f"target file {spec!r} not found; give an existing .toml file or one of: {', '.join(available_targets())}")
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise TargetError(f"cannot read target file {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise TargetError(f"target file {path} is not valid TOML: {e}") from None
    data.setdefault("name", path.stem)
    data["path"] = str(path)
    return Target.from_dict(data, source=f"target file {path}")
