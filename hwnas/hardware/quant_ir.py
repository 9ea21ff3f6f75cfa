"""Timing IRs in the weight formats a subnet ships with, and the runtime settings it runs with.

A subnet with deployment genes is timed as it would ship, not as a float IR: the float IR of its
architecture (exported once per architecture and cached, `export_ir_cached`) is read, every
linear weight is rounded to its layer's format with `hwnas.model.rtn` (the codes INC writes) and
written into the graph as integer constants (`compress_ir`), embeddings/lm_head in the head
format. The compressed model lives in memory only (`quantized_model`): a float IR of the 135M
model is ~350 MB on disk, and a variant per format combination would multiply that; compressing
costs a few seconds, less than the measurement.

`runtime_properties(props, cfg)` lays the subnet's runtime genes over the target's properties, so
what is timed is what the bundle's manifest records and `hwnas run` applies.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Mapping

from hwnas.errors import ExportError
from hwnas.model.space import SubnetConfig

log = logging.getLogger(__name__)

_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(self_attn|mlp)\.\w+$")
HEAD_NAMES = ("model.embed_tokens", "lm_head")


def runtime_properties(props: Mapping[str, Any], cfg: SubnetConfig | None) -> dict[str, Any]:
    """The target's compile properties with `cfg`'s runtime genes on top (theirs win)."""
    out = dict(props)
    if cfg is not None:
        out.update(dict(cfg.runtime))
    return out


def shipped_weights(ov_model: Any, cfg: SubnetConfig) -> tuple[dict[str, Any], list[str]]:
    """Integer weights (by dense-model module name) and f16-stored weights of `cfg`'s formats, read from a float IR.

    Dense layer j is the j-th kept layer of `cfg`; a layer format ``f16`` and a head format ``f16``
    are stored as f16 constants, everything else as RTN integer codes.
    """
    import numpy as np

    from hwnas.hardware.ov_compress import find_weight_sites
    from hwnas.model.quantized import rtn_int8_rows
    from hwnas.model.rtn import quantize_rtn

    weights: dict[str, Any] = {}
    f16: list[str] = []
    for site in find_weight_sites(ov_model).values():
        data = None
        for name in site.names:
            m = _LAYER_RE.match(name)
            if m and cfg.weight_formats is not None:
                j = int(m.group(1))
                if j >= len(cfg.weight_formats):
                    raise ExportError(f"IR has layer {j} but subnet {cfg.key} keeps {len(cfg.weight_formats)} layers")
                fmt = cfg.weight_formats[j][0 if m.group(2) == "self_attn" else 1]
            elif name in HEAD_NAMES and cfg.head_format is not None:
                fmt = "head-" + cfg.head_format
            else:
                continue
            if fmt.endswith("f16"):
                f16.append(name)
                continue
            if data is None:
                data = np.asarray(site.const.get_data(), dtype=np.float32)
            weights[name] = rtn_int8_rows(name, data) if fmt == "head-int8" else quantize_rtn(data, fmt, name)
    return weights, f16


def quantized_model(float_ir: str | Path, cfg: SubnetConfig, core: Any = None) -> tuple[Any, Any]:
    """The float IR of `cfg`'s architecture with `cfg`'s weight formats applied (an openvino.Model in memory)
    and the compression summary (element type per layer)."""
    import openvino as ov

    from hwnas.hardware.ov_compress import compress_ir

    path = Path(float_ir)
    xml = path / "openvino_model.xml" if path.is_dir() else path
    core = core or ov.Core()
    model = core.read_model(str(xml))
    weights, f16 = shipped_weights(model, cfg)
    summary = compress_ir(model, weights, head_f16=f16)
    return model, summary


def save_quantized_ir(float_ir: str | Path, cfg: SubnetConfig, out_dir: str | Path) -> Path:
    """Write `cfg`'s quantized IR next to copies of the float IR folder's other files (tests, benches)."""
    import shutil

    import openvino as ov

    src = Path(float_ir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith("openvino_model."):
            shutil.copy2(f, out / f.name)
    model, _ = quantized_model(src, cfg)
    ov.save_model(model, str(out / "openvino_model.xml"), compress_to_fp16=False)
    return out
