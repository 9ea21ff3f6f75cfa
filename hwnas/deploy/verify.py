"""Verifying a bundle: files and checksums, loading, smoke generation and (optionally) speed."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from hwnas.deploy.archive import extract_archive, list_files, sha256_file
from hwnas.deploy.manifest import (
    ARCHIVE_SUFFIXES,
    IR_XML,
    REQUIRED_FILES,
    SMOKE_PROMPT,
    SMOKE_TOKENS,
    BundleManifest,
    read_manifest,
)
from hwnas.deploy.runtime import generate_text, greedy_tokens
from hwnas.deploy.settings import bundle_target, check_properties
from hwnas.errors import BundleError

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
    generation: dict | None = None  # GenQualityReport.to_dict() of the re-run generation check

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"path": self.path, "ok": self.ok, "problems": self.problems, "warnings": self.warnings,
                "checks": self.checks, "generated": self.generated, "measurement": self.measurement,
                "generation": self.generation}


def verify_bundle(path: str | Path, *, load: bool = True, generate: bool = True, measure: bool = False,
                  tolerance: float = 0.25, properties: Mapping[str, Any] | None = None,
                  measure_fn: Callable[[Path, dict | None], dict] | None = None,
                  full_model: Any = None) -> VerifyReport:
    """Check a bundle folder or archive; the report's `problems` is empty when it passes.

    Checks: archive members (before extracting), manifest schema and digest, every listed file
    present with its size and sha256, no unlisted file, the IR loads and compiles, a greedy
    generation reproduces the manifest's smoke tokens (a warning when it differs on another host)
    and, with the tokenizer IRs, openvino-genai generates text. With `measure`, TPOT is
    re-measured and must be within `tolerance` of the manifest's on the same host. With `generate` and
    a manifest ``generation`` record, the generation-quality check is re-run against the full model's
    recorded greedy tokens (`hwnas.deploy.gencheck`); `full_model` (torch) adds its NLL check.
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
                                  properties=properties, measure_fn=measure_fn, full_model=full_model)
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
            toks = greedy_tokens(path, prompt_ids, len(smoke.get("tokens") or []) or SMOKE_TOKENS,
                                 properties=check_properties(manifest))
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
                report.generated = generate_text(path, smoke.get("prompt") or SMOKE_PROMPT, 8,
                                                 properties=check_properties(manifest))
                report.checks.append("openvino_genai.LLMPipeline generates text")
            except Exception as e:  # noqa: BLE001
                report.problems.append(f"openvino_genai.LLMPipeline failed: {type(e).__name__}: {e}")
        if manifest.generation:
            _verify_generation(report, path, manifest.generation, full_model)
        if (path / "hwnas_speculative.json").is_file():
            from hwnas.deploy.spec_bundle import check_speculative

            checks, problems = check_speculative(path, manifest.smoke)
            report.checks += checks
            report.problems += problems
    if measure:
        _verify_speed(report, path, manifest, tolerance, measure_fn)
    return report


def _verify_generation(report: VerifyReport, path: Path, record: dict, full_model: Any) -> None:
    from hwnas.deploy.gencheck import verify_generation
    from hwnas.errors import DataError

    try:
        rep, warnings = verify_generation(path, record, full_model=full_model)
    except DataError as e:
        report.problems.append(str(e))
        return
    except Exception as e:  # noqa: BLE001 - any OpenVINO failure is a verification failure
        report.problems.append(f"generation check failed to run: {type(e).__name__}: {e}")
        return
    report.generation = rep.to_dict()
    report.warnings += warnings
    if rep.passed:
        report.checks.append(f"generation check: {rep.summary()}")
    else:
        report.problems.append(f"generation check: {rep.summary()}")


def _verify_speed(report: VerifyReport, path: Path, manifest: BundleManifest, tolerance: float,
                  measure_fn: Callable[[Path, dict | None], dict] | None) -> None:
    recorded = manifest.measurement or {}
    fn = measure_fn or measure_bundle
    try:
        m = fn(path, bundle_target(manifest))  # the bundle's runtime genes over its target
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
    """This machine's HostInfo as a dict with its fingerprint (None when hwnas.hardware.host is unavailable)."""
    try:
        from hwnas.hardware.host import detect_host
    except ImportError:  # pragma: no cover
        return None
    return detect_host(measure_bandwidth=False).to_dict()  # includes "fingerprint"


def measure_bundle(folder: str | Path, target: Any = None, name: str | None = None) -> dict:
    """TTFT/TPOT/throughput of a bundle's IR on this host under `target` (name, Target or manifest dict)."""
    from hwnas.hardware.measure import measure_ir
    from hwnas.hardware.targets import Target, load_target

    if isinstance(target, Mapping):
        target = Target.from_dict(dict(target), source="manifest target")
    target = load_target(target or "xeon")
    return measure_ir(Path(folder), target, subnet_key=name or Path(folder).name, kind="model").to_dict()


