"""What this machine really is: CPU model, cores, ISA features, OpenVINO version, memory bandwidth.

Every measurement stores the host's `fingerprint`, so profiles made on different machines are
never silently mixed. The fingerprint covers what changes timings systematically (CPU model,
core counts, ISA features, OpenVINO version); the measured memory bandwidth is informative only
(it varies run to run) and is cached per fingerprint so it is measured once.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# Linux /proc/cpuinfo flag -> feature name reported by hwnas.
ISA_FLAGS = {
    "avx2": "avx2",
    "avx512f": "avx512f",
    "avx512_vnni": "avx512_vnni",
    "avx_vnni": "avx_vnni",
    "avx512_bf16": "avx512_bf16",
    "avx512_fp16": "avx512_fp16",
    "amx_tile": "amx_tile",
    "amx_bf16": "amx_bf16",
    "amx_int8": "amx_int8",
    "amx_fp16": "amx_fp16",
}


@dataclass(frozen=True)
class HostInfo:
    cpu_model: str
    vendor: str
    physical_cores: int
    logical_cpus: int
    isa: tuple[str, ...]
    openvino_version: str
    os: str = ""
    memory_bandwidth_gbs: float | None = None
    schema_version: int = field(default=SCHEMA_VERSION)

    # ---- derived features
    @property
    def has_avx512(self) -> bool:
        return "avx512f" in self.isa

    @property
    def has_vnni(self) -> bool:
        return "avx512_vnni" in self.isa or "avx_vnni" in self.isa or "amx_int8" in self.isa

    @property
    def has_bf16(self) -> bool:
        """Native bf16 arithmetic (AVX-512 BF16 or AMX-BF16): OpenVINO's CPU default precision is bf16 there."""
        return "avx512_bf16" in self.isa or "amx_bf16" in self.isa

    @property
    def has_fp16(self) -> bool:
        return "avx512_fp16" in self.isa or "amx_fp16" in self.isa

    @property
    def has_amx(self) -> bool:
        return "amx_tile" in self.isa

    @property
    def is_xeon(self) -> bool:
        return "xeon" in self.cpu_model.lower()

    @property
    def fingerprint(self) -> str:
        """Short stable id of what determines timings: CPU, cores, ISA, OpenVINO version."""
        canon = json.dumps(
            [self.cpu_model, self.physical_cores, self.logical_cpus, sorted(self.isa), self.openvino_version],
            separators=(",", ":"),
        )
        return "h-" + hashlib.sha256(canon.encode()).hexdigest()[:12]

    def describe(self) -> str:
        feats = [name for name, ok in (("AVX-512", self.has_avx512), ("VNNI", self.has_vnni),
                                       ("BF16", self.has_bf16), ("AMX", self.has_amx)) if ok]
        bw = f", {self.memory_bandwidth_gbs:.0f} GB/s copy" if self.memory_bandwidth_gbs else ""
        return (f"{self.cpu_model} ({self.physical_cores} physical cores, {self.logical_cpus} logical; "
                f"{', '.join(feats) or 'no AVX-512/VNNI/BF16/AMX'}{bw}; OpenVINO {self.openvino_version.split('-')[0]})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "fingerprint": self.fingerprint,
            "cpu_model": self.cpu_model,
            "vendor": self.vendor,
            "physical_cores": self.physical_cores,
            "logical_cpus": self.logical_cpus,
            "isa": list(self.isa),
            "features": {"avx512": self.has_avx512, "vnni": self.has_vnni, "bf16": self.has_bf16, "amx": self.has_amx},
            "openvino_version": self.openvino_version,
            "os": self.os,
            "memory_bandwidth_gbs": self.memory_bandwidth_gbs,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HostInfo":
        h = cls(
            cpu_model=d["cpu_model"], vendor=d.get("vendor", ""), physical_cores=int(d["physical_cores"]),
            logical_cpus=int(d["logical_cpus"]), isa=tuple(d.get("isa", ())), openvino_version=d["openvino_version"],
            os=d.get("os", ""), memory_bandwidth_gbs=d.get("memory_bandwidth_gbs"),
        )
        fp = d.get("fingerprint")
        if fp and fp != h.fingerprint:
            from hwnas.errors import MeasurementError

            raise MeasurementError(f"host record says fingerprint {fp} but its fields give {h.fingerprint}; the file was edited")
        return h


# ---------------------------------------------------------------------------- detection
def _cpuinfo() -> tuple[str, str, set[str]]:
    model, vendor, flags = "", "", set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        k, _, v = line.partition(":")
        k, v = k.strip(), v.strip()
        if k == "model name" and not model:
            model = v
        elif k == "vendor_id" and not vendor:
            vendor = v
        elif k == "flags" and not flags:
            flags = set(v.split())
    if not model or not flags:  # non-Linux: py-cpuinfo is slower but portable
        try:
            import cpuinfo  # type: ignore

            info = cpuinfo.get_cpu_info()
            model = model or info.get("brand_raw", "")
            vendor = vendor or info.get("vendor_id_raw", "")
            flags = flags or set(info.get("flags", []))
        except Exception as e:  # noqa: BLE001 - best effort
            log.debug("py-cpuinfo failed: %s", e)
    return model or platform.processor() or "unknown CPU", vendor, flags


def _physical_cores() -> int:
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
        if n:
            return int(n)
    except Exception:  # noqa: BLE001
        pass
    return os.cpu_count() or 1


def openvino_version() -> str:
    import openvino as ov

    return ov.get_version()


def measure_memory_bandwidth(size_mb: int = 64, repeats: int = 5) -> float:
    """Best-of-`repeats` numpy copy bandwidth in GB/s (bytes read + written per second)."""
    import numpy as np

    n = size_mb * (1 << 20) // 8
    src = np.ones(n, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault pages in
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return round(2 * src.nbytes / best / 1e9, 2)


def detect_host(measure_bandwidth: bool = True, use_cache: bool = True) -> HostInfo:
    """Inspect this machine; the memory bandwidth is measured once per fingerprint and cached."""
    model, vendor, flags = _cpuinfo()
    isa = tuple(sorted(name for flag, name in ISA_FLAGS.items() if flag in flags))
    host = HostInfo(
        cpu_model=model, vendor=vendor, physical_cores=_physical_cores(), logical_cpus=os.cpu_count() or 1,
        isa=isa, openvino_version=openvino_version(), os=f"{platform.system()} {platform.release()}",
    )
    if not measure_bandwidth:
        return host
    from hwnas.model.loading import cache_dir

    cache = cache_dir() / "host" / f"{host.fingerprint}.json"
    bw = None
    if use_cache and cache.is_file():
        try:
            bw = json.loads(cache.read_text(encoding="utf-8")).get("memory_bandwidth_gbs")
        except (OSError, json.JSONDecodeError):
            bw = None
    if bw is None:
        bw = measure_memory_bandwidth()
        if use_cache:
            from hwnas.io import write_json_atomic

            try:
                write_json_atomic(cache, {**host.to_dict(), "memory_bandwidth_gbs": bw})
            except Exception as e:  # noqa: BLE001 - a read-only cache only costs a re-measure
                log.debug("cannot cache host info: %s", e)
    return HostInfo(**{**_fields(host), "memory_bandwidth_gbs": float(bw)})


def _fields(h: HostInfo) -> dict[str, Any]:
    import dataclasses

    return {f.name: getattr(h, f.name) for f in dataclasses.fields(h)}


def check_same_host(expected: str, actual: str, what: str) -> None:
    """Raise MeasurementError when two fingerprints differ (profiles from different hosts)."""
    if expected != actual:
        from hwnas.errors import MeasurementError

        raise MeasurementError(
            f"{what} was measured on host {expected}, but this host is {actual}; "
            "re-profile here (hwnas profile) or pass allow_other_host to use it anyway"
        )
