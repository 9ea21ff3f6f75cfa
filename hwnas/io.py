"""Atomic file and folder writes, so an interrupted run never leaves half-written output."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from hwnas.errors import OutputError


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write text to a temp file in the same folder, then rename it over `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON (indented, keys in insertion order) atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line and fsync, so a killed run keeps every finished record."""
    path = Path(path)
    line = json.dumps(record, default=_json_default) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read JSON lines, ignoring a torn last line left by a killed writer."""
    path = Path(path)
    if not path.exists():
        return []
    out: list[dict] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # torn final line from an interrupted append
            raise
    return out


def check_writable_dir_target(out: str | os.PathLike, force: bool = False) -> Path:
    """Check that `out` can become a new output folder (absent or empty, or force), parent writable."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise OutputError(f"--out {out} exists and is not a folder; give a new folder path")
        if any(out.iterdir()) and not force:
            raise OutputError(f"--out {out} already exists and is not empty; choose a new folder or pass --force")
    parent = out.resolve().parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"--out {out} cannot be created: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK):
        raise OutputError(f"--out {out} is not writable (no write permission on {probe})")
    check_can_create_in(probe, f"--out {out}")
    return out


def check_can_create_in(folder: str | os.PathLike, what: str) -> None:
    """Create and remove an empty folder in `folder`: os.access says yes to root on /proc and /sys."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".hwnas-probe-", dir=folder))
    except OSError as e:
        raise OutputError(f"{what} is not writable: cannot create anything in {folder} ({e.strerror or e}); "
                          "choose a folder you can write to") from None


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temp folder next to `out`; on success move it into place, on failure delete it."""
    out = check_writable_dir_target(out, force=force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as e:
        raise OutputError(f"cannot create {out}: {e.strerror or e}; choose a folder you can write to") from None
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def _json_default(o: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return o.to_dict() if hasattr(o, "to_dict") else dataclasses.asdict(o)
    if isinstance(o, Path):
        return str(o)
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
