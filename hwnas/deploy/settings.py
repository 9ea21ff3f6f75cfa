"""A bundle's runtime settings: the OpenVINO properties it was scored and timed with, applied wherever it runs.

A subnet's runtime genes (`SubnetConfig.runtime`: KV-cache precision, dynamic quantization group
size, inference precision, threads, streams; `hwnas.model.formats.RUNTIME_GENES`) are set over the
target's properties. The manifest's ``runtime`` record keeps the genes, the properties they
resolved to on the build host, and the numerics used for the smoke and generation checks, so
`hwnas run`, `hwnas serve`, `hwnas bench`, `hwnas verify` and the export's own measurement,
holdout scoring and generation check all run the bundle with the settings that were measured.

A bundle without genes (``runtime`` absent or empty) behaves as before: the target's properties
at run time, `EXACT_PROPERTIES` for the checks.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from hwnas.deploy.manifest import EXACT_PROPERTIES

# OpenVINO properties a bundle's pipeline is given (LLMPipeline, OVModel compile, server)
RUNTIME_KEYS = ("INFERENCE_PRECISION_HINT", "KV_CACHE_PRECISION", "INFERENCE_NUM_THREADS", "NUM_STREAMS",
                "PERFORMANCE_HINT", "ENABLE_HYPER_THREADING", "ENABLE_CPU_PINNING", "DYNAMIC_QUANTIZATION_GROUP_SIZE")
# genes that change numerics (and so the smoke tokens and the generation check); threads/streams do not
NUMERIC_GENES = ("KV_CACHE_PRECISION", "INFERENCE_PRECISION_HINT", "DYNAMIC_QUANTIZATION_GROUP_SIZE")


def with_genes(target: Any, genes: Mapping[str, Any] | None) -> Any:
    """`target` (a Target) with the runtime genes set over its OpenVINO properties."""
    if not genes:
        return target
    return dataclasses.replace(target, openvino={**target.openvino, **dict(genes)})


def numeric_properties(genes: Mapping[str, Any] | None, host: Any = None) -> dict[str, Any]:
    """Properties for the smoke generation and generation check: exact f32 numerics, except where a gene
    chose the precision the bundle ships with (bf16 falls back to f32 on a host without it, as targets do)."""
    from hwnas.hardware.targets import Target

    over = {k: (str(v) if k == "DYNAMIC_QUANTIZATION_GROUP_SIZE" else v) for k, v in dict(genes or {}).items()
            if k in NUMERIC_GENES}
    if not over:
        return dict(EXACT_PROPERTIES)
    return Target(name="numerics", openvino={**EXACT_PROPERTIES, **over}).resolved_properties(host)


def runtime_record(genes: Mapping[str, Any] | None, target: Any, host: Any) -> dict | None:
    """The manifest's ``runtime`` record (None without genes): genes, properties on the build host, numerics."""
    if not genes:
        return None
    props = with_genes(target, genes).resolved_properties(host)
    return {"genes": dict(genes), "properties": {k: v for k, v in props.items() if k in RUNTIME_KEYS},
            "numerics": numeric_properties(genes, host)}


def manifest_genes(manifest: Any) -> dict[str, Any]:
    """A bundle's runtime genes (empty for a bundle without them)."""
    return dict((getattr(manifest, "runtime", None) or {}).get("genes") or {})


def bundle_target(manifest: Any, target: str | Any = None) -> Any:
    """The Target a bundle runs under: `target` (name, path or Target) or the manifest's, with the bundle's genes over it.

    None when neither is known (a manifest without a target and no `target`)."""
    from hwnas.hardware.targets import Target, load_target

    if target is not None:
        tgt = target if isinstance(target, Target) else load_target(target)
    elif manifest.target:
        tgt = Target.from_dict(dict(manifest.target), source="bundle manifest")
    else:
        tgt = None
    genes = manifest_genes(manifest)
    if tgt is None:
        return Target(name="bundle runtime", openvino=genes) if genes else None
    return with_genes(tgt, genes)


def bundle_properties(manifest: Any, target: str | Any = None, host: Any = None) -> dict[str, Any]:
    """The OpenVINO properties to run a bundle with on this host (`RUNTIME_KEYS` only)."""
    tgt = bundle_target(manifest, target)
    if tgt is None:
        return {}
    if host is None:
        from hwnas.hardware.host import detect_host

        host = detect_host(measure_bandwidth=False)
    return {k: v for k, v in tgt.resolved_properties(host).items() if k in RUNTIME_KEYS}


def check_properties(manifest: Any) -> dict[str, Any]:
    """Numerics of the bundle's smoke and generation checks (as recorded; `EXACT_PROPERTIES` for old bundles)."""
    smoke = getattr(manifest, "smoke", None) or {}
    return dict(smoke.get("properties") or EXACT_PROPERTIES)
