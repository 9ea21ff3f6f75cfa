"""A heal folder (made by `hwnas heal`) read back and put onto a dense subnet.

This is the model stage's half of healing: export and eval load a heal's trained tensors onto
the extracted subnet without importing the training code that made them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hwnas.errors import HwnasError
from hwnas.model.space import SubnetConfig

RECORD_FILE = "hwnas_heal.json"
TENSORS_FILE = "healed.safetensors"


class HealError(HwnasError):
    """Bad heal input, or a heal folder that does not match the model/subnet it is applied to."""


def read_record(folder: str | Path) -> dict[str, Any]:
    f = Path(folder) / RECORD_FILE
    if not f.is_file():
        raise HealError(f"{folder} is not a heal folder (no {RECORD_FILE}); make one with `hwnas heal`")
    return json.loads(f.read_text(encoding="utf-8"))


def set_param(model: Any, name: str, tensor: Any, requires_grad: bool) -> Any:
    """Replace (never write into) `name`: the old tensor may be shared with the supernet."""
    import torch

    mod_name, _, attr = name.rpartition(".")
    mod = model.get_submodule(mod_name)
    p = torch.nn.Parameter(tensor, requires_grad=requires_grad)
    setattr(mod, attr, p)
    return p


def heal_subnet(folder: str | Path) -> SubnetConfig:
    """The subnet a finished heal folder is for."""
    rec = read_record(folder)
    if rec.get("status") != "done":
        raise HealError(f"the heal in {folder} did not finish (status {rec.get('status')!r}); continue it with "
                        "`hwnas heal ... --resume`")
    return SubnetConfig.from_dict(rec["subnet"])


def apply_heal(dense: Any, folder: str | Path, *, subnet: SubnetConfig, model_sha256: str | None) -> dict[str, Any]:
    """Put a heal's trained tensors onto the dense `subnet` (replacing, never writing into, its tensors).

    Refuses a heal made for another subnet or another model. Returns what a manifest records.
    """
    from safetensors.torch import load_file

    rec = read_record(folder)
    healed_for = heal_subnet(folder)
    if healed_for != subnet:
        raise HealError(f"--heal {folder} was made for subnet {healed_for.key}, not {subnet.key}")
    want = (rec.get("model") or {}).get("sha256")
    if want and model_sha256 and want != model_sha256:
        raise HealError(f"--heal {folder} was made for model sha256 {want[:12]}…, not this model ({model_sha256[:12]}…)")
    tensors = load_file(str(Path(folder) / TENSORS_FILE))
    names = {n for n, _ in dense.named_parameters()}
    unknown = sorted(set(tensors) - names)
    if unknown:
        raise HealError(f"--heal {folder} holds tensors this subnet lacks: {unknown[:3]}")
    dtype = next(dense.parameters()).dtype
    for name, t in tensors.items():
        old = dense.get_parameter(name)
        if tuple(old.shape) != tuple(t.shape):
            raise HealError(f"--heal {folder}: {name} has shape {tuple(t.shape)}, the subnet's is {tuple(old.shape)}")
        set_param(dense, name, t.to(dtype), requires_grad=False)
    return {"folder": str(folder), "train": rec["config"]["train"], "steps": rec.get("steps_done"),
            "tokens": rec.get("tokens"), "seconds": rec.get("seconds"), "trained_parameters": rec.get("trained_parameters"),
            "fidelity_before": rec.get("fidelity_before"), "fidelity_after": rec.get("fidelity_after")}
