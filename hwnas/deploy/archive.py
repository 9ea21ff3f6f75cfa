"""Bundle files, checksums and archives (tar), with archive members checked before anything is extracted."""
from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from hwnas.deploy.manifest import ARCHIVE_SUFFIXES, MANIFEST_FILE, FileEntry, _check_relpath
from hwnas.errors import BundleError, OutputError

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
        raise BundleError(f"{archive} is not a readable .tar.gz/.tar archive ({str(e).splitlines()[0].rstrip(':')}); give a bundle folder or the archive `hwnas export --archive` wrote") from None
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


