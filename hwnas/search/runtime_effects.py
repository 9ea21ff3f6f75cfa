"""What runtime settings do to accuracy, which torch cannot show: measured once per model through the IR.

A u8 KV cache, dynamic activation quantization or bf16 arithmetic change the numbers OpenVINO
computes, not the weights, so the fake-quantized torch slice that scores a candidate's weight
formats cannot see them. `measure_runtime_effects(validator)` scores the full model's int8 IR (int8
weights and head, as shipped today) on the search split through OpenVINO with every numeric runtime
gene at its most precise allowed value, then with one value changed at a time. The context of each
item is prefilled once and the choices read it back from the KV cache (``context_in_cache``), as
generation reads a prompt: scored with one prefill per choice, the cache's precision never acted
(a u8 KV cache measured exactly 0.0 on the default model), and this is also ~2x faster on 4-choice items. A value's effect is
its choice KL to the full float model minus the baseline's (0 for the precise values). A candidate's
search-split choice KL is its torch KL plus the effects of its runtime values (first order: taken as
additive). Its report split is scored in torch (weights only); what ships is scored through its IR at export.
Cached on disk by model, items, host and OpenVINO version.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

log = logging.getLogger(__name__)


def measure_runtime_effects(validator: Any) -> dict[str, dict[str, float]]:
    """{property: {value: delta choice KL}} for the validator's space (empty without numeric runtime genes)."""
    from hwnas.cache import cache_root
    from hwnas.io import write_json_atomic
    from hwnas.model.deploy_space import NUMERIC_RUNTIME, runtime_rank

    v = validator
    dep = v.supernet.space.deploy
    genes = [(p, vals) for p, vals in (dep.runtime if dep is not None else ()) if p in NUMERIC_RUNTIME and len(vals) > 1]
    if not genes or v.ir_scorer is None or v.target is None:
        return {}
    precise = {p: min(vals, key=lambda x, p=p: runtime_rank(p, x)) for p, vals in genes}
    host_fp = getattr(v.host, "fingerprint", "")
    ov = getattr(v.host, "openvino_version", "")
    canon = json.dumps([v.model_id, v.suite.describe(), genes, precise, host_fp, ov, "context_in_cache"], sort_keys=True,
                       default=str)
    path = cache_root() / "ir" / f"runtime-effects-{hashlib.sha1(canon.encode()).hexdigest()[:16]}.json"
    if path.is_file():
        return json.loads(path.read_text())["effects"]
    full = v.supernet.full_config()
    base = full.with_deploy([("int8", "int8")] * len(full.layers), "int8", precise)
    v.status("runtime genes: choice KL of the int8 full model's IR per runtime value (once per model)")
    kl0 = v.accuracy_ir(base, context_in_cache=True)["choice_kl"]
    effects: dict[str, dict[str, float]] = {}
    measured: dict[str, Any] = {"baseline": {"runtime": precise, "choice_kl": kl0}}
    for prop, values in genes:
        effects[prop] = {}
        for val in values:
            if val == precise[prop]:
                effects[prop][str(val)] = 0.0
                continue
            cfg = base.with_deploy(base.weight_formats, "int8", {**precise, prop: val})
            kl = v.accuracy_ir(cfg, context_in_cache=True)["choice_kl"]
            measured[f"{prop}={val}"] = {"choice_kl": kl}
            effects[prop][str(val)] = round(float(kl - kl0), 6)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"effects": effects, "measured": measured, "items": v.suite.describe()})
    log.info("runtime genes' choice-KL effects: %s", effects)
    return effects
