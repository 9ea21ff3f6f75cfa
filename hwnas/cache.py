"""hwnas's cache folder: what is in it, how big it is, and keeping it under a size cap.

Layout: ``$HWNAS_CACHE_DIR`` (default ``~/.cache/hwnas``) holds one folder per kind (`KINDS`),
each holding entries (a folder or a file) that a later run reuses: GGUF models converted to
safetensors, importance-ordered supernets, OpenVINO IRs exported for timing, NNCF baselines, host
fingerprints. Every entry can be rebuilt, so any of it may be deleted at any time.

Size cap: after every `hwnas` command the least recently used entries are deleted until the cache
is at most ``$HWNAS_CACHE_MAX_GB`` (default `DEFAULT_MAX_GB`; 0 or ``off`` = no cap). Entries used
in the last `GRACE_S` seconds are never evicted automatically (another run may be reading them).
"Used" is the entry's modification time, which the cache's readers refresh on every hit (`touch`).
Deletion renames an entry out of the way first, so a reader never sees half of one.
"""
from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from hwnas.errors import HwnasError

DIR_ENV = "HWNAS_CACHE_DIR"  # the same variable hwnas.model.loading.cache_dir() reads
MAX_ENV = "HWNAS_CACHE_MAX_GB"
DEFAULT_MAX_GB = 20.0
GRACE_S = 600.0
KINDS = {
    "ir": "OpenVINO IRs of subnets, exported for timing (search, profile)",
    "models": "GGUF models converted to safetensors folders",
    "supernets": "importance-ordered supernets (MLP channels and layer ranking)",
    "baselines": "NNCF int8 baseline IRs (bench)",
    "host": "host fingerprints and memory bandwidth",
    "test-models": "the test suite's shared, read-only converted default model",
}


class CacheError(HwnasError):
    """A cache option or the cache folder is unusable."""


@dataclass(frozen=True)
class Entry:
    kind: str
    path: Path
    nbytes: int
    last_used: float  # seconds since the epoch


def cache_root() -> Path:
    return Path(os.environ.get(DIR_ENV) or Path.home() / ".cache" / "hwnas")


def max_bytes() -> int | None:
    """The size cap from $HWNAS_CACHE_MAX_GB (None: no cap)."""
    raw = os.environ.get(MAX_ENV, "").strip().lower()
    if raw in ("", "default"):
        return int(DEFAULT_MAX_GB * 1e9)
    if raw in ("0", "off", "none"):
        return None
    try:
        gb = float(raw)
    except ValueError:
        raise CacheError(f"{MAX_ENV}={raw!r} is not a number of GB; give e.g. 20, or 0/off for no cap") from None
    if gb < 0:
        raise CacheError(f"{MAX_ENV}={raw!r} is negative; give a size in GB, or 0/off for no cap")
    return int(gb * 1e9) if gb > 0 else None


def _size(path: Path) -> int:
    if path.is_symlink():
        return 0  # a link into another cache (tests) is not counted twice
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def entries(root: Path | None = None) -> list[Entry]:
    """Every cache entry, oldest use first. Names starting with '.' (writes in progress) are skipped."""
    root = root or cache_root()
    out = []
    for kind in KINDS:
        folder = root / kind
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.name.startswith("."):
                continue
            try:
                used = p.lstat().st_mtime
            except OSError:
                continue
            out.append(Entry(kind, p, _size(p), used))
    return sorted(out, key=lambda e: e.last_used)


def usage(root: Path | None = None) -> dict[str, tuple[int, int]]:
    """kind -> (entries, bytes), for every kind (zero when absent)."""
    got = {k: (0, 0) for k in KINDS}
    for e in entries(root):
        n, b = got[e.kind]
        got[e.kind] = (n + 1, b + e.nbytes)
    return got


def touch(path: str | os.PathLike) -> None:
    """Mark a cache entry as just used (its place in the LRU order); never fails the caller."""
    try:
        os.utime(path)
    except OSError:
        pass


def remove(entry: Entry) -> None:
    """Delete one entry: renamed away first (atomic for readers), then deleted."""
    p = entry.path
    if p.is_symlink() or p.is_file():
        p.unlink(missing_ok=True)
        return
    trash = p.with_name(f".deleting-{p.name}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(p, trash)
    except FileNotFoundError:
        return
    os.chmod(trash, 0o755)  # read-only folders (the tests' shared model), the entry's own included, must be deletable
    for root, dirs, _ in os.walk(trash):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
    shutil.rmtree(trash, ignore_errors=True)


def clear(kinds: list[str] | None = None, root: Path | None = None) -> tuple[int, int]:
    """Delete every entry (of `kinds`); return (entries, bytes) deleted."""
    bad = sorted(set(kinds or ()) - set(KINDS))
    if bad:
        raise CacheError(f"unknown cache kind {bad[0]!r}; accepted: {', '.join(KINDS)}")
    n = b = 0
    for e in entries(root):
        if kinds and e.kind not in kinds:
            continue
        remove(e)
        n, b = n + 1, b + e.nbytes
    return n, b


def prune(limit_bytes: int, root: Path | None = None, grace_s: float = 0.0) -> list[Entry]:
    """Delete least recently used entries until the cache holds at most `limit_bytes`.

    Entries used within the last `grace_s` seconds are kept even if that leaves the cache over.
    """
    if limit_bytes < 0:
        raise CacheError(f"--max-gb must be >= 0, got {limit_bytes / 1e9:g}")
    all_entries = entries(root)
    total = sum(e.nbytes for e in all_entries)
    now = time.time()
    evicted = []
    for e in all_entries:  # oldest use first
        if total <= limit_bytes:
            break
        if now - e.last_used < grace_s:
            continue
        remove(e)
        total -= e.nbytes
        evicted.append(e)
    return evicted


def enforce_cap(root: Path | None = None) -> list[Entry]:
    """Apply $HWNAS_CACHE_MAX_GB (run after every command); entries used in the last GRACE_S stay."""
    cap = max_bytes()
    if cap is None:
        return []
    root = root or cache_root()
    if not root.is_dir():
        return []
    return prune(cap, root, grace_s=GRACE_S)
