"""Where evaluation data lives: --data-dir, else $HWNAS_DATA_DIR, else ../shared/data next to the repo."""
from __future__ import annotations

import os
from pathlib import Path

from hwnas.errors import DataError

ENV_VAR = "HWNAS_DATA_DIR"
REPO_ROOT = Path(__file__).resolve().parent.parent
CALIBRATION_DIR = REPO_ROOT / "calibration"


def resolve_data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Return the data folder, checking it exists; the error lists every place that was tried."""
    tried: list[str] = []
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
    elif os.environ.get(ENV_VAR):
        candidates.append(Path(os.environ[ENV_VAR]))
    else:
        candidates += [REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for c in candidates:
        tried.append(str(c))
        if c.is_dir():
            return c
    raise DataError(
        f"data directory not found (tried {', '.join(tried)}); pass --data-dir or set {ENV_VAR}"
    )
