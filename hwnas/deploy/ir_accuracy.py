"""Multiple-choice accuracy of an OpenVINO IR folder, scored the way hwnas.accuracy.evaluate scores torch."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from hwnas.deploy.manifest import DEFAULT_TASKS, IR_XML, Progress

# ----------------------------------------------------------------------------- accuracy on the IR

def ir_accuracy(folder: str | Path, tokenizer: Any, tasks: Sequence[str] = DEFAULT_TASKS, *, split: str = "report",
                limit: int | None = None, data_dir: str | Path | None = None, seed: int = 0,
                properties: Mapping[str, Any] | None = None, progress: Progress | None = None,
                suite: Any = None, keep_items: bool = False) -> dict:
    """Multiple-choice accuracy of an IR folder, scored with OpenVINO the way hwnas.accuracy.evaluate scores torch.

    Items, splits and metrics come from `hwnas.accuracy.evaluate.TaskSuite`; each choice is one prefill
    of context + choice (KV state reset between), its log-likelihood summed over the choice tokens.
    Returns {"split", "limit", "tasks": {name: {"acc", "acc_norm", "n"}}, "mean": mean acc}; with
    `keep_items`, also ``"_items"`` (per-item results for a paired comparison, not JSON). `suite`: a
    TaskSuite to score instead of building one from tasks/split/limit.
    """
    import numpy as np
    import openvino as ov

    from hwnas.accuracy.evaluate import TaskSuite, task_metrics, truncate_request

    suite = suite or TaskSuite(tokenizer, list(tasks), split=split, limit=limit, data_dir=data_dir, seed=seed)
    cfg_file = Path(folder) / "config.json"
    max_len = json.loads(cfg_file.read_text()).get("max_position_embeddings") if cfg_file.is_file() else None
    compiled = ov.Core().compile_model(str(Path(folder) / IR_XML), "CPU", dict(properties or {}))
    req = compiled.create_infer_request()
    logits_out = compiled.output("logits")
    total = suite.n_items
    done = 0
    results: dict[str, dict] = {}
    all_lls: dict[str, list] = {}
    for name, data in suite.data.items():
        if data.requests is None:
            continue
        lls = []
        for r in data.requests:
            r = truncate_request(r, max_len)  # as hwnas.accuracy.evaluate does, so both score the same tokens
            if all(len(c) == 1 for c in r.continuations) and not r.prefixes:
                # one-token choices (MMLU's " A".." D"): one prefill of the context scores them all
                lp = _log_softmax(_prefill(req, logits_out, list(r.context))[-1:])
                scores = [float(lp[0, c[0]]) for c in r.continuations]
            else:
                scores = []
                for j, cont in enumerate(r.continuations):
                    ctx = list(r.context) + list(r.prefix(j))  # a partially scored item's option is context
                    lg = _prefill(req, logits_out, ctx + list(cont[:-1]))[len(ctx) - 1:]
                    scores.append(float(_log_softmax(lg)[np.arange(len(cont)), list(cont)].sum()))
            lls.append(np.asarray(scores))
            done += 1
            if progress:
                progress(done, total, name)
        all_lls[name] = lls
        m = task_metrics(suite._task_items({name: lls})[name])
        results[name] = {k: m[k] for k in ("acc", "acc_norm", "n")}
    accs = [v["acc"] for v in results.values() if v["acc"] is not None]
    accn = [v["acc_norm"] for v in results.values() if v["acc_norm"] is not None]
    return {"split": suite.split, "limit": suite.limit, "scored_with": "openvino", "tasks": results,
            "mean": float(np.mean(accs)) if accs else None, "mean_acc_norm": float(np.mean(accn)) if accn else None,
            **({"_items": suite._task_items(all_lls)} if keep_items else {})}


def _prefill(req: Any, logits_out: Any, seq: list[int]) -> Any:
    """Logits [T, vocab] of one fresh prefill of `seq` (KV state reset first)."""
    import numpy as np

    req.reset_state()
    t = len(seq)
    res = req.infer({"input_ids": np.asarray([seq], dtype=np.int64), "attention_mask": np.ones((1, t), dtype=np.int64),
                     "position_ids": np.arange(t, dtype=np.int64)[None], "beam_idx": np.zeros(1, dtype=np.int32)})
    return res[logits_out][0]


def _log_softmax(lg: Any) -> Any:
    import numpy as np

    lg = np.asarray(lg, dtype=np.float64)
    lg = lg - lg.max(axis=-1, keepdims=True)
    return lg - np.log(np.exp(lg).sum(axis=-1, keepdims=True))


