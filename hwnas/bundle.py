"""Bundles: a quantized subnet as an OpenVINO IR folder that edge servers load, plus a manifest.

A bundle is a folder in optimum-intel's layout (``openvino_model.xml/.bin`` stateful with KV
cache, ``config.json``, ``generation_config.json``, tokenizer files, ``openvino_tokenizer.xml`` /
``openvino_detokenizer.xml``), so ``openvino_genai.LLMPipeline(dir, "CPU")`` and
``optimum.intel.OVModelForCausalLM.from_pretrained(dir)`` load it as is, and
``hwnas_manifest.json`` (`BundleManifest`): subnet, source-model hash, supernet provenance,
quantization recipe with its calibration hash, target and host fingerprint, measured speed,
report-split accuracy, the sha256 of every other file, tool versions, and a greedy-generation
smoke record. The manifest carries a digest of its own canonical JSON, so a hand edit is
detected (integrity, not authenticity: anyone can recompute it).

`export_bundle` builds one in a temporary folder moved into place when complete (optionally also
``OUT.tar.gz``); `verify_bundle` checks a folder or archive (archives with absolute or ``..``
paths, links or devices are refused before anything is extracted).

Pipeline: extract the subnet (dense torch) -> INC quantization (`hwnas.quantize`) -> float model
with the dequantized weights -> optimum-intel export (`hwnas.irexport`) -> integer weights swapped
into the IR (`hwnas.ov_compress`) -> save without f16 compression.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Mapping, Sequence

from .errors import BundleError, DataError, ExportError, OutputError, SearchError
from .quantize import QuantRecipe

log = logging.getLogger(__name__)

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
    files: {relative path: FileEntry} for every file but the manifest.
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
        from .io import write_json_atomic

        return write_json_atomic(Path(folder) / MANIFEST_FILE, self.to_dict())


def _json_default(o: Any) -> Any:
    from .io import _json_default as base

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


# ----------------------------------------------------------------------------- files and checksums

def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def list_files(folder: str | Path) -> list[str]:
    """Every entry under `folder` as a relative POSIX path, manifest excluded (symlinks included, as entries)."""
    folder = Path(folder)
    out = []
    for root, dirs, files in os.walk(folder):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            rel = Path(root, name).relative_to(folder).as_posix()
            if rel != MANIFEST_FILE:
                out.append(rel)
    return sorted(out)


def checksum_files(folder: str | Path) -> dict[str, FileEntry]:
    folder = Path(folder)
    return {rel: FileEntry(sha256_file(folder / rel), (folder / rel).stat().st_size) for rel in list_files(folder)}


def _check_relpath(name: str, what: str) -> None:
    p = PurePosixPath(name)
    bad = (not name or name.startswith("/") or "\\" in name or p.is_absolute() or ".." in p.parts
           or (bool(p.parts) and ":" in p.parts[0]))
    if bad:
        raise BundleError(f"{what} {name!r} is an absolute path or leaves the bundle folder (..)")


# ----------------------------------------------------------------------------- archives

def write_archive(folder: str | Path, archive: str | Path, force: bool = False) -> Path:
    """Write `folder` as a .tar.gz whose single top-level folder is the bundle's name; atomic, reproducible."""
    folder, archive = Path(folder), Path(archive)
    if archive.exists() and not force:
        raise OutputError(f"archive {archive} already exists; choose another path or pass --force")
    archive.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{archive.name}.", suffix=".tmp", dir=archive.parent)
    os.close(fd)
    mtime = int((folder / MANIFEST_FILE).stat().st_mtime) if (folder / MANIFEST_FILE).exists() else 0
    try:
        with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
            names = list_files(folder) + ([MANIFEST_FILE] if (folder / MANIFEST_FILE).exists() else [])
            for rel in sorted(names):
                info = tar.gettarinfo(str(folder / rel), arcname=f"{folder.name}/{rel}")
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = mtime
                info.mode = 0o644
                with open(folder / rel, "rb") as f:
                    tar.addfile(info, f)
        os.replace(tmp, archive)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return archive


def check_archive_members(archive: str | Path) -> list[str]:
    """Names of the archive's members; BundleError for absolute/``..`` paths, links or special files.

    Reads only the tar headers: nothing is written.
    """
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise BundleError(f"{archive} is not a readable tar archive: {e}") from None
    names = []
    with tar:
        for m in tar.getmembers():
            _check_relpath(m.name, f"archive {archive} holds member")
            if m.issym() or m.islnk():
                raise BundleError(f"archive {archive} holds a link {m.name!r} -> {m.linkname!r}; bundles contain plain files only")
            if not (m.isfile() or m.isdir()):
                raise BundleError(f"archive {archive} holds a special file {m.name!r}; bundles contain plain files only")
            names.append(m.name)
    return names


def extract_archive(archive: str | Path, dest: str | Path) -> Path:
    """Safely extract a bundle archive into `dest`; returns the bundle folder inside it."""
    names = check_archive_members(archive)
    dest = Path(dest)
    with tarfile.open(archive, "r:*") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:  # pragma: no cover - Python without extraction filters; members were checked above
            tar.extractall(dest)
    tops = {PurePosixPath(n).parts[0] for n in names if PurePosixPath(n).parts}
    if (dest / MANIFEST_FILE).is_file():
        return dest
    if len(tops) == 1 and (dest / next(iter(tops)) / MANIFEST_FILE).is_file():
        return dest / next(iter(tops))
    raise BundleError(f"archive {archive} holds no {MANIFEST_FILE} at its top level or in a single top folder")


def is_archive(path: str | Path) -> bool:
    p = str(path)
    return Path(p).is_file() and p.endswith(ARCHIVE_SUFFIXES)


# ----------------------------------------------------------------------------- generation (smoke, run)

def greedy_tokens(folder: str | Path, prompt_ids: Sequence[int], n: int = SMOKE_TOKENS,
                  properties: Mapping[str, Any] | None = None) -> list[int]:
    """Greedy decode `n` tokens with the bundle's stateful IR (no tokenizer needed)."""
    import numpy as np
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(str(Path(folder) / IR_XML), "CPU", dict(properties or EXACT_PROPERTIES))
    req = compiled.create_infer_request()
    req.reset_state()
    ids = np.asarray([list(prompt_ids)], dtype=np.int64)
    past = 0
    out: list[int] = []
    for _ in range(n):
        t = ids.shape[1]
        res = req.infer({
            "input_ids": ids, "attention_mask": np.ones((1, past + t), dtype=np.int64),
            "position_ids": np.arange(past, past + t, dtype=np.int64)[None], "beam_idx": np.zeros(1, dtype=np.int32),
        })
        logits = res[compiled.output("logits")]
        tok = int(np.argmax(logits[0, -1]))
        out.append(tok)
        past += t
        ids = np.asarray([[tok]], dtype=np.int64)
    return out


def genai_pipeline(folder: str | Path, properties: Mapping[str, Any] | None = None):
    """openvino_genai.LLMPipeline on the bundle (needs its tokenizer IRs)."""
    import openvino_genai

    props = {k: ("YES" if v else "NO") if isinstance(v, bool) else str(v) for k, v in dict(properties or {}).items()}
    return openvino_genai.LLMPipeline(str(folder), "CPU", **props)


def generate_text(folder: str | Path, prompt: str, max_new_tokens: int = 32, *, properties: Mapping[str, Any] | None = None,
                  streamer: Callable[[str], Any] | None = None) -> str:
    """Greedy generation from a bundle with openvino-genai, streaming subwords to `streamer`."""
    import openvino_genai

    pipe = genai_pipeline(folder, properties)
    cfg = openvino_genai.GenerationConfig()
    cfg.max_new_tokens = max_new_tokens
    cfg.do_sample = False
    if streamer is not None:
        def _stream(sub: str) -> bool:
            streamer(sub)
            return False  # keep going
        out = pipe.generate(prompt, cfg, _stream)
    else:
        out = pipe.generate(prompt, cfg)
    return str(out)


# ----------------------------------------------------------------------------- verification

@dataclass
class VerifyReport:
    path: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    manifest: BundleManifest | None = None
    generated: str | None = None
    measurement: dict | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"path": self.path, "ok": self.ok, "problems": self.problems, "warnings": self.warnings,
                "checks": self.checks, "generated": self.generated, "measurement": self.measurement}


def verify_bundle(path: str | Path, *, load: bool = True, generate: bool = True, measure: bool = False,
                  tolerance: float = 0.25, properties: Mapping[str, Any] | None = None,
                  measure_fn: Callable[[Path, dict | None], dict] | None = None) -> VerifyReport:
    """Check a bundle folder or archive; the report's `problems` is empty when it passes.

    Checks: archive members (before extracting), manifest schema and digest, every listed file
    present with its size and sha256, no unlisted file, the IR loads and compiles, a greedy
    generation reproduces the manifest's smoke tokens (a warning when it differs on another host)
    and, with the tokenizer IRs, openvino-genai generates text. With `measure`, TPOT is
    re-measured and must be within `tolerance` of the manifest's on the same host.
    """
    path = Path(path)
    if not path.exists():
        raise BundleError(f"bundle {path} does not exist; give a bundle folder or a .tar.gz archive")
    if path.is_file():
        if not str(path).endswith(ARCHIVE_SUFFIXES):
            raise BundleError(f"{path} is neither a bundle folder nor a {'/'.join(ARCHIVE_SUFFIXES)} archive")
        with tempfile.TemporaryDirectory(prefix="hwnas-verify-") as tmp:
            report = VerifyReport(path=str(path))
            try:
                folder = extract_archive(path, tmp)
            except BundleError as e:
                report.problems.append(str(e))
                return report
            report.checks.append("archive members are plain files inside one folder")
            inner = verify_bundle(folder, load=load, generate=generate, measure=measure, tolerance=tolerance,
                                  properties=properties, measure_fn=measure_fn)
            inner.path = str(path)
            inner.checks.insert(0, report.checks[0])
            return inner
    report = VerifyReport(path=str(path))
    try:
        manifest = read_manifest(path)
    except BundleError as e:
        report.problems.append(str(e))
        return report
    report.manifest = manifest
    report.checks.append("manifest schema and digest")
    listed = manifest.file_entries()
    present = set(list_files(path))
    for rel in sorted(set(listed) - present):
        report.problems.append(f"missing file {rel}")
    for rel in sorted(present - set(listed)):
        report.problems.append(f"unexpected file {rel} (not in the manifest)")
    for rel in sorted(set(listed) & present):
        p = path / rel
        if p.is_symlink() or not p.is_file():
            report.problems.append(f"{rel} is not a plain file")
            continue
        e = listed[rel]
        size = p.stat().st_size
        if size != e.bytes:
            report.problems.append(f"{rel} has {size} bytes, manifest says {e.bytes}")
        elif sha256_file(p) != e.sha256:
            report.problems.append(f"{rel} checksum mismatch (sha256 differs from the manifest)")
    for rel in REQUIRED_FILES:
        if rel not in listed:
            report.problems.append(f"manifest lists no {rel}; a bundle needs {', '.join(REQUIRED_FILES)}")
    if report.problems:
        return report
    report.checks.append(f"{len(listed)} files present with matching sha256, no extra files")
    if not load:
        return report
    try:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(path / IR_XML))
        names = {n for i in model.inputs for n in i.get_names()}
        if not {"input_ids", "attention_mask", "position_ids", "beam_idx"} <= names or not model.get_sinks():
            report.problems.append(f"{IR_XML} is not a stateful LLM IR (inputs {sorted(names)})")
            return report
        core.compile_model(model, "CPU")
        del model
        report.checks.append("IR reads and compiles on CPU")
    except Exception as e:  # noqa: BLE001 - any OpenVINO failure is a verification failure
        report.problems.append(f"IR does not load: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        return report
    if generate:
        smoke = manifest.smoke or {}
        prompt_ids = smoke.get("prompt_ids") or [0]
        try:
            toks = greedy_tokens(path, prompt_ids, len(smoke.get("tokens") or []) or SMOKE_TOKENS)
        except Exception as e:  # noqa: BLE001
            report.problems.append(f"greedy generation failed: {type(e).__name__}: {e}")
            return report
        if smoke.get("tokens") and toks != list(smoke["tokens"]):
            report.warnings.append(f"greedy tokens {toks} differ from the build host's {smoke['tokens']} "
                                   "(expected only on another CPU or OpenVINO version)")
        else:
            report.checks.append(f"greedy generation of {len(toks)} tokens matches the manifest")
        if (path / "openvino_tokenizer.xml").is_file() and (path / "openvino_detokenizer.xml").is_file():
            try:
                report.generated = generate_text(path, smoke.get("prompt") or SMOKE_PROMPT, 8, properties=EXACT_PROPERTIES)
                report.checks.append("openvino_genai.LLMPipeline generates text")
            except Exception as e:  # noqa: BLE001
                report.problems.append(f"openvino_genai.LLMPipeline failed: {type(e).__name__}: {e}")
    if measure:
        _verify_speed(report, path, manifest, tolerance, measure_fn)
    return report


def _verify_speed(report: VerifyReport, path: Path, manifest: BundleManifest, tolerance: float,
                  measure_fn: Callable[[Path, dict | None], dict] | None) -> None:
    recorded = manifest.measurement or {}
    fn = measure_fn or measure_bundle
    try:
        m = fn(path, manifest.target)
    except Exception as e:  # noqa: BLE001
        report.problems.append(f"speed re-measurement failed: {type(e).__name__}: {e}")
        return
    report.measurement = m
    if not recorded.get("tpot_ms"):
        report.warnings.append("manifest holds no measured TPOT to compare with")
        return
    host = current_host()
    same_host = bool(host and manifest.host and host.get("fingerprint") == manifest.host.get("fingerprint"))
    ratio = float(m["tpot_ms"]) / float(recorded["tpot_ms"])
    msg = f"TPOT {m['tpot_ms']:.2f} ms vs {recorded['tpot_ms']:.2f} ms in the manifest ({ratio:.2f}x)"
    if ratio > 1 + tolerance:
        (report.problems if same_host else report.warnings).append(
            msg + ("" if same_host else " on a different host"))
    else:
        report.checks.append(msg)


# ----------------------------------------------------------------------------- host and measurement

def current_host() -> dict | None:
    """This machine's HostInfo as a dict with its fingerprint (None when hwnas.host is unavailable)."""
    try:
        from .host import detect_host
    except ImportError:  # pragma: no cover
        return None
    return detect_host(measure_bandwidth=False).to_dict()  # includes "fingerprint"


def measure_bundle(folder: str | Path, target: Any = None, name: str | None = None) -> dict:
    """TTFT/TPOT/throughput of a bundle's IR on this host under `target` (name, Target or manifest dict)."""
    from .measure import measure_ir
    from .targets import Target, load_target

    if isinstance(target, Mapping):
        target = Target.from_dict(dict(target), source="manifest target")
    target = load_target(target or "xeon")
    return measure_ir(Path(folder), target, subnet_key=name or Path(folder).name, kind="model").to_dict()


# ----------------------------------------------------------------------------- picking a subnet from a search

@dataclass(frozen=True)
class Pick:
    subnet: Any            # SubnetConfig
    record: dict           # the search record it came from
    rule: str              # how it was chosen, for the manifest


def pick_from_search(search_dir: str | Path, pick: str) -> Pick:
    """A subnet from a search folder's ``pareto.json``.

    pick: an index N into pareto.json (0 = first record as listed), a subnet key (``l18-3fa9c01b``),
    or ``fastest-within X``: the lowest-TPOT record whose accuracy is at most X percentage points
    below the full model's on the search split and, where the search measured it (report.jsonl),
    on the report split too; the full model itself when no subnet qualifies. The full model's
    accuracy is the record flagged ``full_model`` in candidates.jsonl (the search always
    validates the full model), else the ``vs_full`` the search stored in each pareto.json record.
    """
    from .space import SubnetConfig

    search_dir = Path(search_dir)
    pareto_path = search_dir / "pareto.json"
    if not pareto_path.is_file():
        raise SearchError(f"--from {search_dir} holds no pareto.json; give the --out folder of `hwnas search`")
    try:
        front = json.loads(pareto_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise SearchError(f"{pareto_path} is not valid JSON: {e}") from None
    if not isinstance(front, list) or not front:
        raise SearchError(f"{pareto_path} holds no Pareto records")
    pick = str(pick).strip()
    rec: dict | None = None
    if pick.startswith("fastest-within"):
        arg = pick[len("fastest-within"):].strip().lstrip("=").strip()
        try:
            points = float(arg)
        except ValueError:
            raise SearchError(f"--pick {pick!r}: give 'fastest-within POINTS', e.g. 'fastest-within 1.0'") from None
        from .io import read_jsonl
        from .search import REPORT_FILE, pick_from_front

        try:
            full = next((r for r in read_jsonl(search_dir / "candidates.jsonl") if r.get("full_model")), None)
            reports = {r["key"]: r["report"] for r in read_jsonl(search_dir / REPORT_FILE)} \
                if (search_dir / REPORT_FILE).is_file() else {}
        except (json.JSONDecodeError, KeyError):
            full, reports = None, {}
        front = [dict(r, report=r.get("report") or reports.get(r.get("key"))) for r in front]
        if full is not None:
            full = dict(full, report=reports.get(full["key"]))
        rec = pick_from_front(front, full, points)
        if rec is None:
            raise SearchError(f"--pick {pick!r}: no subnet on the Pareto front of {search_dir} is within {points:g} "
                              "points of the full model's accuracy")
        split = "search and report splits" if (full or {}).get("report") else "search split"
        rule = f"fastest-within {points:g} points of the full model ({split})"
        if full is not None and rec.get("key") == full["key"]:
            log.warning("no subnet on the Pareto front of %s is within %g points of the full model on the %s; "
                        "picking the full model", search_dir, points, split)
            rule += "; no subnet qualified, so the full model"
    elif pick.lstrip("-").isdigit():
        n = int(pick)
        if not 0 <= n < len(front):
            raise SearchError(f"--pick {n} is beyond the Pareto front of {search_dir}: it has {len(front)} records "
                              f"(0-{len(front) - 1}); or give a subnet key or 'fastest-within POINTS'")
        rec = front[n]
        rule = f"record {n} of pareto.json"
    else:
        matches = [r for r in front if r.get("key") == pick]
        if not matches:
            keys = ", ".join(str(r.get("key")) for r in front[:5])
            raise SearchError(f"--pick {pick!r} is not an index, a key on the Pareto front ({keys}...) or 'fastest-within POINTS'")
        rec = matches[0]
        rule = f"key {pick}"
    if "subnet" not in rec:
        raise SearchError(f"Pareto record {rec.get('key')!r} in {pareto_path} has no 'subnet'")
    return Pick(subnet=SubnetConfig.from_dict(rec["subnet"]), record=dict(rec), rule=rule)


# ----------------------------------------------------------------------------- accuracy on the IR

def ir_accuracy(folder: str | Path, tokenizer: Any, tasks: Sequence[str] = DEFAULT_TASKS, *, split: str = "report",
                limit: int | None = None, data_dir: str | Path | None = None, seed: int = 0,
                properties: Mapping[str, Any] | None = None, progress: Progress | None = None) -> dict:
    """Multiple-choice accuracy of an IR folder, scored with OpenVINO the way hwnas.evaluate scores torch.

    Items, splits and metrics come from `hwnas.evaluate.TaskSuite`; each choice is one prefill
    of context + choice (KV state reset between), its log-likelihood summed over the choice tokens.
    Returns {"split", "limit", "tasks": {name: {"acc", "acc_norm", "n"}}, "mean": mean acc}.
    """
    import numpy as np
    import openvino as ov

    from .evaluate import TaskSuite, mc_metrics, truncate_request

    suite = TaskSuite(tokenizer, list(tasks), split=split, limit=limit, data_dir=data_dir, seed=seed)
    cfg_file = Path(folder) / "config.json"
    max_len = json.loads(cfg_file.read_text()).get("max_position_embeddings") if cfg_file.is_file() else None
    compiled = ov.Core().compile_model(str(Path(folder) / IR_XML), "CPU", dict(properties or {}))
    req = compiled.create_infer_request()
    logits_out = compiled.output("logits")
    total = suite.n_items
    done = 0
    results: dict[str, dict] = {}
    for name, data in suite.data.items():
        if data.requests is None:
            continue
        lls = []
        for r in data.requests:
            r = truncate_request(r, max_len)  # as hwnas.evaluate does, so both score the same tokens
            if all(len(c) == 1 for c in r.continuations):
                # one-token choices (MMLU's " A".." D"): one prefill of the context scores them all
                lp = _log_softmax(_prefill(req, logits_out, list(r.context))[-1:])
                scores = [float(lp[0, c[0]]) for c in r.continuations]
            else:
                scores = []
                for cont in r.continuations:
                    lg = _prefill(req, logits_out, list(r.context) + list(cont[:-1]))[len(r.context) - 1:]
                    scores.append(float(_log_softmax(lg)[np.arange(len(cont)), list(cont)].sum()))
            lls.append(np.asarray(scores))
            done += 1
            if progress:
                progress(done, total, name)
        m = mc_metrics(lls, [r.gold for r in data.requests], [np.array(r.choice_bytes, dtype=float) for r in data.requests])
        results[name] = {k: m[k] for k in ("acc", "acc_norm", "n")}
    accs = [v["acc"] for v in results.values() if v["acc"] is not None]
    return {"split": split, "limit": limit, "scored_with": "openvino", "tasks": results,
            "mean": float(np.mean(accs)) if accs else None}


def _prefill(req: Any, logits_out: Any, seq: list[int]) -> Any:
    """Logits [T, vocab] of one fresh prefill of `seq` (KV state reset first)."""
    import numpy as np

    req.reset_state()
    t = len(seq)
    res = req.infer({"input_ids": np.asarray([seq], dtype=np.int64), "attention_mask": np.ones((1, t), dtype=np.int64),
                     "position_ids": np.arange(t, dtype=np.int64)[None], "beam_idx": np.zeros(1, dtype=np.int32)})
    return res[logits_out][0]


def _log_softmax(lg: Any) -> Any:
    import numpy as np

    lg = np.asarray(lg, dtype=np.float64)
    lg = lg - lg.max(axis=-1, keepdims=True)
    return lg - np.log(np.exp(lg).sum(axis=-1, keepdims=True))


# ----------------------------------------------------------------------------- building

@dataclass
class BundleResult:
    path: Path
    manifest: BundleManifest
    archive: Path | None = None

    @property
    def nbytes(self) -> int:
        return sum(e.bytes for e in self.manifest.file_entries().values())


def check_export_inputs(out: str | Path, *, force: bool = False, archive: bool = False,
                        calibration: str | Path | None = None) -> None:
    """Input checks that must fail before any work (nothing is written)."""
    from .io import check_writable_dir_target

    check_writable_dir_target(out, force=force)
    if archive:
        a = archive_path(out)
        if a.exists() and not force:
            raise OutputError(f"archive {a} already exists; choose another --out or pass --force")
    if calibration is not None and not Path(calibration).exists():
        raise DataError(f"calibration file {calibration} not found; give a .jsonl/.json/.txt file or a folder of them")


def archive_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".tar.gz")


def export_bundle(
    model: str | Any,
    out: str | Path,
    *,
    recipe: QuantRecipe,
    subnet: Any = None,
    layers: int | None = None,
    mlp_width: int | None = None,
    target: str | Any = "xeon",
    calibration: str | Path | None = None,
    calib_samples: int = 32,
    calib_seq_len: int = 256,
    seed: int = 0,
    force: bool = False,
    archive: bool = False,
    measure: bool = True,
    accuracy_tasks: Sequence[str] | None = None,
    accuracy_limit: int | None = None,
    data_dir: str | Path | None = None,
    search: dict | None = None,
    order_channels: bool = True,
    progress: Progress | None = None,
) -> BundleResult:
    """Quantize `subnet` of `model` with `recipe` and write the bundle to `out`.

    model: a --model spec ("default", folder, .gguf) or a LoadedModel. subnet: SubnetConfig, or
    `layers` [+ `mlp_width`] (first N layers, one width; default full), or neither (the model as loaded). accuracy_tasks: report-split tasks scored on the final IR (None: skip).
    measure: measure TTFT/TPOT/throughput with hwnas.measure on this host (skipped with a warning
    when the module is unavailable). Raises HwnasError subclasses; `out` is untouched on failure.
    """
    from .io import atomic_dir
    from .targets import load_target

    tick = progress or (lambda done, total, label="": None)
    recipe.check()
    check_export_inputs(out, force=force, archive=archive, calibration=calibration)
    tgt = load_target(target)
    steps = 7
    tick(0, steps, "loading model")
    loaded, dense, supernet_meta, subnet = _load_dense(model, subnet, order_channels, layers, mlp_width)
    tokenizer = loaded.tokenizer
    calib = None
    if recipe.needs_calibration:
        from .quantize import load_calibration

        calib = load_calibration(tokenizer, calibration, n_samples=calib_samples, seq_len=calib_seq_len, seed=seed)
    tick(1, steps, f"quantizing ({recipe.name})")
    from .quantize import materialize, quantize_model

    result = quantize_model(dense, recipe, calib, inplace=dense is not loaded.model)
    recipe = result.recipe
    qmodel = materialize(result)
    out = Path(out)
    with atomic_dir(out, force=force) as tmp:
        tick(2, steps, "exporting OpenVINO IR")
        summary = _write_ir(qmodel, tokenizer, result, tmp)
        del qmodel
        tick(3, steps, "smoke generation")
        prompt_ids = [int(i) for i in tokenizer(SMOKE_PROMPT, add_special_tokens=False)["input_ids"]][:32] or [0]
        smoke = {"prompt": SMOKE_PROMPT, "prompt_ids": prompt_ids, "tokens": greedy_tokens(tmp, prompt_ids),
                 "properties": dict(EXACT_PROPERTIES)}
        host = current_host()
        measurement = None
        if measure:
            tick(4, steps, "measuring speed")
            try:
                measurement = measure_bundle(tmp, tgt, name=out.name)
            except ImportError:
                log.warning("hwnas.measure is not available; the manifest holds no speed measurement")
        accuracy = None
        if accuracy_tasks:
            tick(5, steps, "scoring accuracy (report split)")
            host_props = tgt.resolved_properties(_host_obj())
            accuracy = ir_accuracy(tmp, tokenizer, accuracy_tasks, split="report", limit=accuracy_limit,
                                   data_dir=data_dir, seed=seed, properties=host_props)
        tick(6, steps, "checksums and manifest")
        files = checksum_files(tmp)
        manifest = BundleManifest(
            name=out.name,
            model=_model_record(loaded),
            subnet=dict(subnet.to_dict(), key=subnet.key) if subnet is not None else None,
            supernet=supernet_meta,
            quantization=recipe.to_dict(),
            calibration_sha256=recipe.calibration.sha256 if recipe.calibration else None,
            ir=summary,
            target=tgt.to_dict(),
            host=host,
            measurement=measurement,
            accuracy=accuracy,
            smoke=smoke,
            search=search,
            files=files,
            tool_versions=tool_versions(),
            seed=seed,
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        manifest.write(tmp)
    tick(7, steps, "done")
    arch = write_archive(out, archive_path(out), force=force) if archive else None
    log.info("bundle %s written (%s)", out, recipe.describe())
    return BundleResult(path=out, manifest=manifest, archive=arch)


def _host_obj():
    try:
        from .host import detect_host

        return detect_host(measure_bandwidth=False)
    except ImportError:  # pragma: no cover
        return None


def _load_dense(model: Any, subnet: Any, order_channels: bool, layers: int | None = None,
                mlp_width: int | None = None) -> tuple[Any, Any, dict | None, Any]:
    """(LoadedModel, dense torch model of the subnet, supernet provenance, SubnetConfig or None)."""
    from .models import LoadedModel, load_model
    from .supernet import Supernet, load_supernet, resolve_subnet_option

    whole = subnet is None and layers is None and mlp_width is None
    if whole:
        loaded = model if isinstance(model, LoadedModel) else load_model(model)
        meta = {"subnet_of": loaded.subnet.to_dict()} if loaded.subnet is not None else None
        return loaded, loaded.model, meta or loaded.supernet_meta, None
    if isinstance(model, LoadedModel):
        loaded, sn = model, Supernet.from_loaded(model, order=order_channels)
    else:  # the ordered supernet is cached per model, as `hwnas search` / `hwnas extract` use it
        loaded, sn = load_supernet(model, order=order_channels)
    if subnet is None:
        subnet = resolve_subnet_option(None, layers, mlp_width, sn.full_width)
    sn.space.validate(subnet, structure=False)
    dense = sn.extract(subnet)
    meta = {k: v for k, v in sn.meta.items() if k not in ("channel_order", "layer_scores")}
    meta["channels_ordered"] = bool(sn.meta.get("channels_ordered", order_channels))
    return loaded, dense, meta, subnet


def _model_record(loaded: Any) -> dict:
    src = loaded.source
    return {**src.to_dict(), "sha256": src.sha256()}


def _write_ir(qmodel: Any, tokenizer: Any, result: Any, folder: Path) -> dict:
    """Export the dequantized model, swap in the integer weights, save into `folder` (f32/int, no f16 pass)."""
    import gc

    import openvino as ov

    from .irexport import export_ir
    from .ov_compress import compress_ir

    stage = folder / ".stage"
    export_ir(qmodel, stage, tokenizer, force=True)
    core = ov.Core()
    ov_model = core.read_model(str(stage / IR_XML))
    try:
        summary = compress_ir(ov_model, result.weights, head_f16=result.head_f16)
        ov_model.set_rt_info(json.dumps(result.recipe.to_dict()), ["hwnas", "quantization"])
        ov.save_model(ov_model, str(folder / IR_XML), compress_to_fp16=False)
    finally:
        del ov_model
        gc.collect()
    for p in stage.iterdir():
        if p.name not in (IR_XML, IR_BIN) and p.is_file():
            shutil.copy2(p, folder / p.name)
    shutil.rmtree(stage)
    return summary.to_dict()
