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
                suite: Any = None, keep_items: bool = False, context_in_cache: bool = False) -> dict:
    """Multiple-choice accuracy of an IR folder, scored with OpenVINO the way hwnas.accuracy.evaluate scores torch.

    Items, splits and metrics come from `hwnas.accuracy.evaluate.TaskSuite`; each choice is one prefill
    of context + choice (KV state reset between), its log-likelihood summed over the choice tokens.
    Returns {"split", "limit", "tasks": {name: {"acc", "acc_norm", "n"}}, "mean": mean acc}; with
    `keep_items`, also ``"_items"`` (per-item results for a paired comparison, not JSON). `suite`: a
    TaskSuite to score instead of building one from tasks/split/limit.

    `context_in_cache`: prefill the context once and feed every choice in one batch that reads it
    back from the KV cache (`_score_from_cache`), as generation reads a prompt: the cache's precision
    (a u8 KV cache) then acts on the score, which one prefill per choice cannot show (its attention
    uses the fresh keys and values). Equal to the per-choice scores within ~2e-3 nats with an f16
    cache and f32 arithmetic; faster on 4-choice items. Export's holdout and the runtime effects score
    this way; the default stays one prefill per choice, with which the committed frontier figures
    were measured.
    """
    import numpy as np

    from hwnas.accuracy.evaluate import TaskSuite, task_metrics, truncate_request

    suite = suite or TaskSuite(tokenizer, list(tasks), split=split, limit=limit, data_dir=data_dir, seed=seed)
    cfg_file = Path(folder) / "config.json"
    max_len = json.loads(cfg_file.read_text()).get("max_position_embeddings") if cfg_file.is_file() else None
    req = _Scorer(folder, properties)
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
            if context_in_cache:
                scores = _score_from_cache(req, r)
            elif all(len(c) == 1 for c in r.continuations) and not r.prefixes:
                # one-token choices (MMLU's " A".." D"): one prefill of the context scores them all
                lp = _log_softmax(req.prefill(list(r.context), -1))
                scores = [float(lp[0, c[0]]) for c in r.continuations]
            else:
                scores = []
                for j, cont in enumerate(r.continuations):
                    ctx = list(r.context) + list(r.prefix(j))  # a partially scored item's option is context
                    lg = req.prefill(ctx + list(cont[:-1]), len(ctx) - 1)
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


def _score_from_cache(req: "_Scorer", r: Any) -> list[float]:
    """Each choice's log-likelihood, with the context prefilled once into the KV cache and the choices
    (option prefix + continuation but its last token) fed as one right-padded batch that continues from
    it: `beam_idx` zeros copy the cached context to every row."""
    import numpy as np

    t = len(r.context)   # empty when a partially scored item's options differ from their first token
    last = None
    if t:
        last = _log_softmax(req.prefill(list(r.context), -1))[0]   # predicts a run's first token
    else:
        req.request.reset_state()
    runs = [list(r.prefix(j)) + list(c) for j, c in enumerate(r.continuations)]
    n_fed = max(len(x) for x in runs) - 1
    rows = None
    if n_fed > 0:
        b = len(runs)
        ids = np.zeros((b, n_fed), dtype=np.int64)
        mask = np.zeros((b, t + n_fed), dtype=np.int64)
        mask[:, :t] = 1
        for k, x in enumerate(runs):
            ids[k, :len(x) - 1] = x[:-1]
            mask[k, t:t + len(x) - 1] = 1
        rows = req.infer({"input_ids": ids, "attention_mask": mask,
                          "position_ids": np.tile(np.arange(t, t + n_fed, dtype=np.int64), (b, 1)),
                          "beam_idx": np.zeros(b, dtype=np.int32)}, 0)
    scores = []
    for j, cont in enumerate(r.continuations):
        npre = len(r.prefix(j))
        # the state predicting continuation token k sits at row position npre + k - 1 (-1: the context's last)
        at = [npre + k - 1 for k in range(len(cont))]
        lp = [float(last[cont[k]]) if p < 0 else None for k, p in enumerate(at)]
        inner = [p for p in at if p >= 0]
        if inner:
            ls = _log_softmax(rows[j, inner[0]:inner[-1] + 1])
            for k, p in enumerate(at):
                if p >= 0:
                    lp[k] = float(ls[p - inner[0], cont[k]])
        scores.append(float(sum(lp)))
    return scores


class _Scorer:
    """One compiled IR whose LM head runs only on the positions a score reads (``logits_from`` input, see
    `hwnas.hardware.measure.slice_logits_from_input`; logits are sliced after the fact when the graph has
    no head MatMul to slice)."""

    def __init__(self, folder: str | Path, properties: Mapping[str, Any] | None):
        import openvino as ov

        from hwnas.hardware.measure import LOGITS_FROM, slice_logits_from_input

        core = ov.Core()
        model = core.read_model(str(Path(folder) / IR_XML))
        self.sliced = slice_logits_from_input(model)
        self._from_name = LOGITS_FROM
        compiled = core.compile_model(model, "CPU", dict(properties or {}))
        self.request = compiled.create_infer_request()
        self.logits = compiled.output("logits")

    def infer(self, feed: dict, keep_from: int) -> Any:
        """Logits [B, T', vocab] of positions `keep_from`: (negative: from the end) of one inference."""
        import numpy as np

        if self.sliced:
            return self.request.infer({**feed, self._from_name: np.array([keep_from], np.int64)})[self.logits]
        return self.request.infer(feed)[self.logits][:, keep_from:]

    def prefill(self, seq: list[int], keep_from: int) -> Any:
        """Logits [T', vocab] of positions `keep_from`: of one fresh prefill of `seq` (KV state reset first)."""
        import numpy as np

        self.request.reset_state()
        t = len(seq)
        return self.infer({"input_ids": np.asarray([seq], dtype=np.int64), "attention_mask": np.ones((1, t), np.int64),
                           "position_ids": np.arange(t, dtype=np.int64)[None], "beam_idx": np.zeros(1, np.int32)},
                          keep_from)[0]


def _log_softmax(lg: Any) -> Any:
    import numpy as np

    lg = np.asarray(lg, dtype=np.float64)
    lg = lg - lg.max(axis=-1, keepdims=True)
    return lg - np.log(np.exp(lg).sum(axis=-1, keepdims=True))


