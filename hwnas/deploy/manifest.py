"""Bundle manifest: what a bundle holds and how it was made, with a digest of its own canonical JSON.

Bundles: a quantized subnet as an OpenVINO IR folder that edge servers load, plus a manifest.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Mapping

from hwnas.deploy.quantize import QuantRecipe
from hwnas.errors import BundleError, ExportError

Progress = Callable[[int, int, str], None]

MANIFEST_FILE = "hwnas_manifest.json"
MANIFEST_KIND = "hwnas-bundle"
MANIFEST_SCHEMA_VERSION = 1
IR_XML = "openvino_model.xml"
IR_BIN = "openvino_model.bin"
REQUIRED_FILES = (IR_XML, IR_BIN, "config.json")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
SMOKE_PROMPT = "The capital of France is"
SMOKE_TOKENS = 8
DEFAULT_TASKS = ("arc_easy", "arc_challenge", "mmlu", "piqa")
# Numerics used for the smoke generation (build and verify): f32 math and KV cache, no
# dynamic activation quantization, so the same IR on the same CPU gives the same tokens.
EXACT_PROPERTIES = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32",
                    "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
TOOL_PACKAGES = ("hwnas", "openvino", "openvino-genai", "openvino-tokenizers", "neural-compressor", "torch",
                 "transformers", "optimum-intel", "nncf")


def tool_versions() -> dict[str, str]:
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for pkg in TOOL_PACKAGES:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "absent"
    return out


# ----------------------------------------------------------------------------- manifest

def _canonical(d: Mapping[str, Any]) -> bytes:
    return json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    bytes: int

    def to_dict(self) -> dict:
        return {"sha256": self.sha256, "bytes": self.bytes}


_MANIFEST_FIELDS = {
    "schema_version": int, "kind": str, "created": str, "name": str, "model": dict, "subnet": (dict, type(None)),
    "supernet": (dict, type(None)), "quantization": dict, "calibration_sha256": (str, type(None)),
    "ir": dict, "target": (dict, type(None)), "host": (dict, type(None)), "measurement": (dict, type(None)),
    "accuracy": (dict, type(None)), "smoke": (dict, type(None)), "files": dict, "tool_versions": dict,
    "seed": int, "search": (dict, type(None)),
    "generation": (dict, type(None)),  # optional: older manifests have none
    "runtime": (dict, type(None)),     # optional: runtime genes and the properties they resolved to
    "build_seconds": (dict, type(None)),  # optional: wall seconds of each export step on the build host
}


@dataclass(frozen=True)
class BundleManifest:
    """What is in a bundle and where it came from (``hwnas_manifest.json``).

    model: {"spec", "kind", "name", "sha256"} of the source model; subnet: {"layers", "mlp_widths",
    "key"} or None for the whole model; supernet: channel-order/training provenance; quantization:
    `QuantRecipe.to_dict()`; ir: weight element-type counts of the IR; target: `Target.to_dict()`;
    host: `HostInfo.to_dict()` plus "fingerprint"; measurement: {"ttft_ms", "tpot_ms",
    "throughput_tok_s", ...} or None; accuracy: {"split", "limit", "tasks": {task: acc}, "mean"}
    or None; smoke: {"prompt", "prompt_ids", "tokens"} greedy output on the build host;
    generation: the generation-quality check (`hwnas.deploy.gencheck`): prompt ids, the full
    model's reference greedy tokens, the bundle's tokens, thresholds and scores; None when not run;
    runtime: the subnet's runtime genes, the OpenVINO properties they resolved to on the build host,
    and the numerics of the smoke/generation checks (`hwnas.deploy.settings`); None without genes.
    files: {relative path: FileEntry} for every file but the manifest. build_seconds: wall seconds of
    each export step (load, full-model holdout, quantize, IR, checks, measure, accuracy) on the build host.
    """

    name: str
    model: dict
    quantization: dict
    files: dict
    ir: dict = field(default_factory=dict)
    subnet: dict | None = None
    supernet: dict | None = None
    calibration_sha256: str | None = None
    target: dict | None = None
    host: dict | None = None
    measurement: dict | None = None
    accuracy: dict | None = None
    smoke: dict | None = None
    search: dict | None = None
    generation: dict | None = None
    runtime: dict | None = None
    build_seconds: dict | None = None
    tool_versions: dict = field(default_factory=dict)
    seed: int = 0
    created: str = ""
    kind: str = MANIFEST_KIND
    schema_version: int = MANIFEST_SCHEMA_VERSION

    @property
    def recipe(self) -> QuantRecipe:
        return QuantRecipe.from_dict(self.quantization)

    def file_entries(self) -> dict[str, FileEntry]:
        return {k: FileEntry(**v) if isinstance(v, dict) else v for k, v in self.files.items()}

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["files"] = {k: (v.to_dict() if isinstance(v, FileEntry) else dict(v)) for k, v in sorted(self.files.items())}
        d = json.loads(json.dumps(d, default=_json_default))
        d["manifest_sha256"] = hashlib.sha256(_canonical(d)).hexdigest()
        return d

    @classmethod
    def from_dict(cls, d: Any, *, check_digest: bool = True) -> "BundleManifest":
        """Validate the schema (and by default the manifest's own digest); BundleError names the problem."""
        if not isinstance(d, dict):
            raise BundleError(f"manifest must be a JSON object, got {type(d).__name__}")
        if d.get("kind") != MANIFEST_KIND:
            raise BundleError(f"manifest kind is {d.get('kind')!r}, expected {MANIFEST_KIND!r}")
        if d.get("schema_version") != MANIFEST_SCHEMA_VERSION:
            raise BundleError(f"manifest schema_version {d.get('schema_version')!r} is not supported; accepted: [{MANIFEST_SCHEMA_VERSION}]")
        body = {k: v for k, v in d.items() if k != "manifest_sha256"}
        if check_digest:
            digest = d.get("manifest_sha256")
            if digest != hashlib.sha256(_canonical(body)).hexdigest():
                raise BundleError("manifest was modified after the bundle was built (manifest_sha256 does not match its content)")
        unknown = sorted(set(body) - set(_MANIFEST_FIELDS))
        if unknown:
            raise BundleError(f"manifest has unknown field {unknown[0]!r}; accepted: {sorted(_MANIFEST_FIELDS)}")
        for k, typ in _MANIFEST_FIELDS.items():
            if k in ("name", "model", "quantization", "files") and k not in body:
                raise BundleError(f"manifest lacks required field {k!r}")
            if k in body and not isinstance(body[k], typ):
                raise BundleError(f"manifest field {k!r} has type {type(body[k]).__name__}")
        files = {}
        for path, e in body["files"].items():
            if not (isinstance(e, dict) and isinstance(e.get("sha256"), str) and isinstance(e.get("bytes"), int)):
                raise BundleError(f"manifest entry for file {path!r} must be {{\"sha256\": str, \"bytes\": int}}")
            _check_relpath(path, "manifest file entry")
            files[path] = FileEntry(e["sha256"], e["bytes"])
        try:
            QuantRecipe.from_dict(body["quantization"])
        except ExportError as e:
            raise BundleError(f"manifest field 'quantization': {e}") from None
        kw = {k: body[k] for k in _MANIFEST_FIELDS if k in body}
        kw["files"] = files
        return cls(**kw)

    def write(self, folder: str | Path) -> Path:
        from hwnas.io import write_json_atomic

        return write_json_atomic(Path(folder) / MANIFEST_FILE, self.to_dict())


def _json_default(o: Any) -> Any:
    from hwnas.io import _json_default as base

    return base(o)


def read_manifest(folder: str | Path, *, check_digest: bool = True) -> BundleManifest:
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{folder} is not a bundle: {MANIFEST_FILE} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{path} is not valid JSON: {e}") from None
    return BundleManifest.from_dict(data, check_digest=check_digest)


def _check_relpath(name: str, what: str) -> None:
    p = PurePosixPath(name)
    bad = (not name or name.startswith("/") or "\\" in name or p.is_absolute() or ".." in p.parts
           or (bool(p.parts) and ":" in p.parts[0]))
    if bad:
        raise BundleError(f"{what} {name!r} is an absolute path or leaves the bundle folder (..)")
