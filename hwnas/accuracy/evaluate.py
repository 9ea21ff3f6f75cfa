"""Accuracy: multiple-choice log-likelihood scoring (as lm-evaluation-harness does it) and perplexity.

Scoring
-------
For each item the context and each choice (" " + choice text) are tokenized the way lm-eval
0.4 does it: context tokens = tokenize(context), choice tokens = tokenize(context + " " +
choice) minus the first len(context tokens) tokens. A choice's log-likelihood is the sum of
log p(token | everything before it) over its tokens. `acc` takes the choice with the highest
log-likelihood; `acc_norm` divides each by the UTF-8 byte length of the choice text first (lm-eval's
`acc_norm` divides by the character count, lm-eval's `acc_bytes` by the byte count; both are
the same on ASCII text). Standard errors are those of a mean (sample standard deviation / sqrt(n)).

Speed
-----
Every context is computed once for all its choices. An item is laid out as one token run:
context, then every choice without its last token (a last token is only ever predicted, never
fed), each choice placed right after the context with position ids continuing from it and an
attention mask that lets it see the context and itself but not the other choices. Items are
packed into rows of about `row_tokens` tokens (block-diagonal masks, position ids restarting per
item) and `batch_size` rows run in one forward pass, so there is almost no padding. Only the
hidden states at scored positions go through the LM head. With the default precision `auto`
the decoder runs under bf16 autocast on CPUs with native bf16 (AVX512-BF16 or AMX); the LM
head and softmax always run in float32. Subnets run through `Supernet.subnet(cfg)` on the same
weights, and `TaskSuite` tokenizes and packs once for any number of subnets.

Perplexity
----------
The text is tokenized once and cut into non-overlapping windows of `window` tokens (the last,
shorter one kept); each window is scored on its own, predicting tokens 2..W from their
prefix. perplexity = exp(total negative log-likelihood / predicted tokens). `limit` counts windows.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from hwnas.accuracy.scoring import (  # noqa: F401  (re-exported: the scoring names callers import from here)
    LM_HEAD_CHUNK,
    Request,
    _decoder,
    _layout,
    _no_grad,
    _token_logprobs,
    encode_requests,
    score_multiple_choice,
    score_windows,
    truncate_request,
)
from hwnas.accuracy.items import TaskItems, mc_metrics  # noqa: F401  (re-exported)
from hwnas.accuracy.tasks import MultipleChoiceTask, PerplexityTask, Task, parse_tasks, select
from hwnas.errors import DataError, InvalidSubnetError
from hwnas.precision import PRECISIONS, cpu_has_native_bf16, resolve_precision  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
DEFAULT_BATCH_SIZE = 4  # rows per forward pass
DEFAULT_ROW_TOKENS = 128  # packing target per row (longer items get a row of their own); 4 x 128 measured best
DEFAULT_WINDOW = 512  # perplexity window
SCHEMA_VERSION = 1


# ---------------------------------------------------------------------------- helpers
# resolve_precision and cpu_has_native_bf16 live in hwnas.precision (shared by every stage); TaskItems,
# mc_metrics in hwnas.accuracy.items (below this module and paired.py). Both re-exported here.


def _unwrap(model_or_supernet: Any, subnet: Any):
    """(causal LM, context manager that activates `subnet`) for a model, LoadedModel or Supernet."""
    import contextlib

    import torch

    obj = model_or_supernet
    if subnet is not None and isinstance(subnet, dict):
        from hwnas.model.space import SubnetConfig

        subnet = SubnetConfig.from_dict(subnet)
    if not isinstance(obj, torch.nn.Module) and callable(getattr(obj, "subnet", None)) and hasattr(obj, "model"):
        return obj.model, obj.subnet(subnet)  # a Supernet
    if not isinstance(obj, torch.nn.Module) and isinstance(getattr(obj, "model", None), torch.nn.Module):
        obj = obj.model  # a LoadedModel
    if not (isinstance(obj, torch.nn.Module) and hasattr(obj, "model") and obj.get_output_embeddings() is not None):
        raise InvalidSubnetError(
            f"cannot evaluate a {type(model_or_supernet).__name__}; give a LlamaForCausalLM, a LoadedModel or a Supernet"
        )
    if subnet is not None:
        raise InvalidSubnetError("subnet= needs a Supernet (hwnas.model.supernet.Supernet), not a plain model")
    return obj, contextlib.nullcontext(obj)


def _max_len(lm: Any) -> int | None:
    return getattr(lm.config, "max_position_embeddings", None)


# ---------------------------------------------------------------------------- suite
@dataclass
class _TaskData:
    task: Task
    requests: list[Request] | None = None  # multiple choice
    windows: list[list[int]] | None = None  # perplexity
    shots: int = 0


class TaskSuite:
    """Task items loaded, split, limited and tokenized once; `evaluate` scores any model or subnet.

    The search builds one suite and calls `suite.evaluate(supernet, subnet=cfg)` per candidate.
    """

    def __init__(
        self, tokenizer: Any, tasks: str | Task | Sequence[str | Task], *, split: str = "search",
        limit: int | None = None, shots: int = 0, data_dir: str | Path | None = None, seed: int = 0,
        window: int = DEFAULT_WINDOW,
    ):
        from hwnas.datadir import resolve_data_dir

        if window < 2:
            raise DataError(f"window must be >= 2 tokens, got {window}")
        self.tokenizer = tokenizer
        self.tasks = parse_tasks(tasks)
        self.split, self.limit, self.shots, self.seed, self.window = split, limit, shots, seed, window
        self.data_dir = resolve_data_dir(data_dir)
        self.data: dict[str, _TaskData] = {}
        for t in self.tasks:
            if isinstance(t, MultipleChoiceTask):
                docs = t.docs(self.data_dir, shots=shots)
                keep = select(t.split_name or t.name, [d.id for d in docs], split, limit, seed)
                shots_used = t.effective_shots(shots)
                if shots and not shots_used:
                    log.warning("task %s has no few-shot examples; it runs zero-shot", t.name)
                reqs = encode_requests(tokenizer, t.name, [docs[i] for i in keep])
                self.data[t.name] = _TaskData(t, requests=reqs, shots=shots_used)
            else:
                assert isinstance(t, PerplexityTask)
                ids = tokenizer(t.text(self.data_dir), add_special_tokens=False, verbose=False)["input_ids"]
                wins = [ids[s:s + window] for s in range(0, len(ids), window)]
                wins = [w for w in wins if len(w) >= 2]
                keep = select(t.name, [str(k) for k in range(len(wins))], split, limit, seed)
                self.data[t.name] = _TaskData(t, windows=[wins[k] for k in sorted(keep)])
        self._layouts: dict[tuple, Any] = {}

    def only(self, names: Sequence[str]) -> "TaskSuite":
        """The same suite restricted to the tasks `names` (same items, tokenized once; nothing reloaded)."""
        unknown = [n for n in names if n not in self.data]
        if unknown:
            raise DataError(f"task(s) {', '.join(unknown)} not in this suite; it has {', '.join(self.data)}")
        return self._with_data({n: d for n, d in self.data.items() if n in names})

    def every(self, n: int) -> tuple["TaskSuite", "TaskSuite"]:
        """(items 0, n, 2n, ... of each multiple-choice task, the other items): a suite scored in two
        stages (`hwnas.accuracy.items.merge_every` puts the per-item results back in this order).
        Every n-th item, not the first third, so that each part draws on the whole split."""
        mc = {name: d for name, d in self.data.items() if d.requests is not None}
        first, rest = (self._with_data({name: _TaskData(d.task, [r for i, r in enumerate(d.requests) if keep(i)],
                                                        None, d.shots) for name, d in mc.items()})
                       for keep in (lambda i: i % n == 0, lambda i: i % n != 0))
        return first, rest

    def _with_data(self, data: dict[str, _TaskData]) -> "TaskSuite":
        """This suite over other task data (already tokenized; nothing reloaded), with its own packing cache."""
        import copy

        sub = copy.copy(self)
        sub.data = data
        sub.tasks = [t for t in self.tasks if t.name in data]
        sub._layouts = {}
        return sub

    @property
    def n_items(self) -> int:
        """Multiple-choice items in the suite."""
        return sum(len(d.requests) for d in self.data.values() if d.requests is not None)

    def describe(self) -> dict:
        return {name: (len(d.requests) if d.requests is not None else len(d.windows or [])) for name, d in self.data.items()}

    # -- packing (model-independent apart from the position limit; cached)
    def _mc_layout(self, row_tokens: int, max_len: int | None):
        key = (row_tokens, max_len)
        if key not in self._layouts:
            reqs: list[Request] = []
            for d in self.data.values():
                if d.requests is not None:
                    reqs += [truncate_request(r, max_len) for r in d.requests]
            offsets, n = [], 0
            for r in reqs:
                offsets.append(n)
                n += len(r.continuations)
            rows = _layout(reqs, offsets, row_tokens)
            rows.sort(key=lambda r: -len(r.tokens))
            self._layouts[key] = (reqs, offsets, n, rows)
        return self._layouts[key]

    # -- scoring
    def loglikelihoods(
        self, model_or_supernet: Any, *, subnet: Any = None, batch_size: int = DEFAULT_BATCH_SIZE,
        row_tokens: int = DEFAULT_ROW_TOKENS, precision: str = "auto", progress: Progress | None = None,
    ) -> dict[str, list[np.ndarray]]:
        """Per task, per item: the log-likelihood of each choice (numpy arrays)."""
        lm, ctx = _unwrap(model_or_supernet, subnet)
        with ctx:
            lls, _ = score_multiple_choice(lm, self._mc_layout(row_tokens, _max_len(lm)), batch_size,
                                           resolve_precision(precision), progress, 0, self.n_items)
        return lls

    def items(
        self, model_or_supernet: Any, *, subnet: Any = None, batch_size: int = DEFAULT_BATCH_SIZE,
        row_tokens: int = DEFAULT_ROW_TOKENS, precision: str = "auto", progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Per multiple-choice task, the per-item results (`hwnas.accuracy.paired.TaskItems`) for paired comparisons."""
        lls = self.loglikelihoods(model_or_supernet, subnet=subnet, batch_size=batch_size, row_tokens=row_tokens,
                                  precision=precision, progress=progress)
        return self._task_items(lls)

    def fingerprint(self) -> str:
        """Identifies the scored items (task, split, limit, seed, shots and the item ids)."""
        import hashlib

        h = hashlib.sha256(f"{self.split}|{self.limit}|{self.seed}|{self.shots}".encode())
        for name, d in self.data.items():
            h.update(name.encode())
            for r in d.requests or []:
                h.update(r.id.encode())
        return h.hexdigest()[:16]

    def evaluate(
        self, model_or_supernet: Any, *, subnet: Any = None, batch_size: int = DEFAULT_BATCH_SIZE,
        row_tokens: int = DEFAULT_ROW_TOKENS, precision: str = "auto", progress: Progress | None = None,
        keep_items: bool = False,
    ) -> dict:
        """Metrics per task plus throughput; see `evaluate` for the shape. With `keep_items`, the
        result also holds ``"_items"``: per task the per-item results (`TaskItems`, not JSON) for
        paired comparisons."""
        prec = resolve_precision(precision)
        lm, ctx = _unwrap(model_or_supernet, subnet)
        was_training = lm.training
        lm.eval()
        n_windows = sum(len(d.windows) for d in self.data.values() if d.windows is not None)
        total = self.n_items + n_windows
        results: dict[str, dict] = {}
        t_all = time.perf_counter()
        mc_seconds, fed = 0.0, 0
        lls: dict[str, list[np.ndarray]] = {}
        try:
            with ctx:
                done = 0
                if self.n_items:
                    t0 = time.perf_counter()
                    lls, fed = score_multiple_choice(lm, self._mc_layout(row_tokens, _max_len(lm)), batch_size, prec, progress, 0, total)
                    mc_seconds = time.perf_counter() - t0
                    done = self.n_items
                for name, d in self.data.items():
                    if d.requests is not None:
                        results[name] = task_metrics(_items_of(d, lls.get(name, [])))
                        results[name]["shots"] = d.shots
                    else:
                        t0 = time.perf_counter()
                        nll, count = score_windows(lm, d.windows, batch_size, prec, progress, done, total, name)
                        done += len(d.windows)
                        sec = time.perf_counter() - t0
                        fed += count + len(d.windows)
                        results[name] = {
                            "perplexity": math.exp(nll / count) if count else None,
                            "nll_per_token": nll / count if count else None,
                            "tokens": count, "windows": len(d.windows), "window": self.window,
                            "seconds": round(sec, 3),
                        }
        finally:
            if was_training:
                lm.train()
        seconds = time.perf_counter() - t_all
        return {
            "schema_version": SCHEMA_VERSION,
            "tasks": {n: results[n] for n in self.data},
            "items": self.n_items,
            "items_per_second": (self.n_items / mc_seconds) if self.n_items and mc_seconds > 0 else None,
            "seconds": round(seconds, 3),
            "tokens_processed": fed,
            "tokens_per_second": fed / seconds if seconds > 0 else None,
            "split": self.split, "limit": self.limit, "shots": self.shots, "seed": self.seed,
            "precision": prec, "batch_size": batch_size, "row_tokens": row_tokens,
            **({"_items": self._task_items(lls)} if keep_items else {}),
        }

    def _task_items(self, lls: dict[str, list[np.ndarray]]) -> dict[str, TaskItems]:
        return {name: _items_of(d, lls.get(name, [])) for name, d in self.data.items() if d.requests is not None}


def _items_of(d: _TaskData, lls: list[np.ndarray]) -> TaskItems:
    """A task's per-item results from its requests and their choice log-likelihoods."""
    return requests_items(d.requests or [], lls, getattr(getattr(d, "task", None), "scoring", "choice"))


def requests_items(requests: Sequence[Request], lls: Sequence[np.ndarray], scoring: str = "choice") -> TaskItems:
    """`TaskItems` of tokenized requests (gold, true answers, choice bytes) and their log-likelihoods."""
    return TaskItems([r.id for r in requests], [r.gold for r in requests], list(lls),
                     [np.array(r.choice_bytes, dtype=float) for r in requests], scoring,
                     [getattr(r, "golds", ()) or (r.gold,) for r in requests] if scoring == "mc2" else None)


def task_metrics(items: TaskItems) -> dict:
    """acc, acc_norm, their standard errors and n of one task's `TaskItems`."""
    return mc_metrics(items.lls, items.golds, items.choice_bytes, scoring=items.scoring, true_sets=items.true_sets)


def evaluate(
    model_or_supernet: Any, tokenizer: Any, tasks: str | Task | Sequence[str | Task], *, subnet: Any = None,
    split: str = "search", limit: int | None = None, shots: int = 0, batch_size: int = DEFAULT_BATCH_SIZE,
    data_dir: str | Path | None = None, progress: Progress | None = None, seed: int = 0,
    precision: str = "auto", row_tokens: int = DEFAULT_ROW_TOKENS, window: int = DEFAULT_WINDOW,
) -> dict:
    """Evaluate a model (LlamaForCausalLM, LoadedModel) or a Supernet subnet on tasks.

    Returns {"tasks": {"arc_easy": {"acc", "acc_norm", "acc_stderr", "acc_norm_stderr", "n", "shots"},
    "wikitext2": {"perplexity", "tokens", ...}}, "items", "items_per_second", "seconds", ...}.
    For many subnets, build a `TaskSuite` once and call its `evaluate`.
    """
    suite = TaskSuite(tokenizer, tasks, split=split, limit=limit, shots=shots, data_dir=data_dir, seed=seed,
                      window=window)
    return suite.evaluate(model_or_supernet, subnet=subnet, batch_size=batch_size, row_tokens=row_tokens,
                          precision=precision, progress=progress)
