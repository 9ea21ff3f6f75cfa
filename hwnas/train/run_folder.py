"""The run folder of one training run (see `hwnas.train.instatune`): what it holds, whether --out
may be used for this run, its latest checkpoint, and the atomic final model folder."""
from __future__ import annotations

import json
import logging
import os
import platform
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from hwnas.errors import HwnasError

if TYPE_CHECKING:
    from hwnas.train.instatune import TrainConfig

log = logging.getLogger(__name__)

RUN_FILE = "hwnas_train_run.json"
LOG_FILE = "train_log.jsonl"
CKPT_DIR = "checkpoints"


class TrainError(HwnasError):
    """A training run cannot start or resume (bad option, output folder holding another run)."""


def fingerprint(cfg: TrainConfig, model_sha: str, data_sha: str, space: dict[str, Any] | None) -> dict[str, Any]:
    """What must match for --out to be resumed: result-deciding config, model and data hashes, space."""
    return {"config": cfg.result_fields(), "model_sha256": model_sha, "data_sha256": data_sha, "space": space}


def _diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k} ({va!r} there, {vb!r} now)")
    return out


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint folder (one with state.pt), or None."""
    d = out / CKPT_DIR
    if not d.is_dir():
        return None
    cks = sorted(p for p in d.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / "state.pt").is_file())
    return cks[-1] if cks else None


def check_run_dir(out: Path, fingerprint: dict[str, Any], resume: bool) -> str:
    """Decide what to do with --out: 'new', 'resume' or 'done'; raise TrainError when it holds
    something else (nothing is touched in that case)."""
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out} exists and is not a folder; give a new folder path")
    if not out.exists() or not any(out.iterdir()):
        if resume:
            log.warning("--resume: %s holds no run yet; starting a new one", out)
        return "new"
    run_file = out / RUN_FILE
    if not run_file.is_file():
        raise TrainError(f"--out {out} already exists and holds something other than a hwnas training run; choose a new folder")
    try:
        run = json.loads(run_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise TrainError(f"--out {out}: cannot read {RUN_FILE} ({e}); choose a new folder") from None
    diff = _diff(run.get("fingerprint", {}), fingerprint)
    if diff:
        raise TrainError(f"--out {out} holds a different training run (differs in: {'; '.join(diff[:4])}); "
                         "choose a new folder, nothing was overwritten")
    if run.get("status") == "complete":
        if resume:
            return "done"
        raise TrainError(f"--out {out} already holds this finished run; choose a new folder (or pass --resume to reuse it)")
    if not resume:
        ck = latest_checkpoint(out)
        at = f"last checkpoint at step {ck.name.split('-')[1].lstrip('0') or 0}" if ck else "no checkpoint yet"
        raise TrainError(f"--out {out} holds an unfinished run of this configuration ({at}); pass --resume to continue it")
    return "resume"


def run_versions() -> dict[str, str]:
    """Python, hwnas, torch and transformers versions, stamped into the run record."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("hwnas", "torch", "transformers"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def finalize(sn: Any, tokenizer: Any, out: Path, extra_meta: dict[str, Any]) -> None:
    """Write the supernet model folder into the run folder; config.json is moved last, so the
    folder only becomes a loadable model once every weight file is in place."""
    staging = out / ".final"
    shutil.rmtree(staging, ignore_errors=True)
    sn.save(staging, tokenizer, extra_meta=extra_meta, force=True)
    names = sorted(p.name for p in staging.iterdir())
    for name in [n for n in names if n != "config.json"] + ["config.json"]:
        os.replace(staging / name, out / name)
    staging.rmdir()


def iter_log(out_dir: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a run's train_log.jsonl (steps and validations), in order."""
    from hwnas.io import read_jsonl

    yield from read_jsonl(Path(out_dir) / LOG_FILE)
