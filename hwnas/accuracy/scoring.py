"""Scoring kernels: tokenized multiple-choice items, packing into rows, and the forward passes.

An item is laid out as one token run (context, then every choice without its last token, each
choice attending to the context and itself only); items are packed into rows of about
`row_tokens` tokens with block-diagonal masks, and only scored positions go through the LM head.
`TaskSuite` (hwnas.accuracy.evaluate) owns the items and calls these.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from hwnas.accuracy.tasks import TARGET_DELIMITER
from hwnas.errors import DataError

log = logging.getLogger(__name__)

LM_HEAD_CHUNK = 1024  # scored positions per LM-head matmul (bounds the logits' memory)


@dataclass(frozen=True)
class Request:
    """A tokenized multiple-choice item.

    Choice j is the token run ``context + prefixes[j] + continuations[j]``; only the
    continuation is scored. ``prefixes`` is empty for ordinary items (the choice text is the
    continuation); for partially scored items (WinoGrande) prefix j holds the tokens of option j
    after the shared context and every continuation is the text after the blank.
    """

    task: str
    id: str
    context: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...]
    gold: int
    choice_bytes: tuple[int, ...]
    prefixes: tuple[tuple[int, ...], ...] = ()
    golds: tuple[int, ...] = ()  # every true choice (TruthfulQA MC2); empty = just `gold`

    def prefix(self, j: int) -> tuple[int, ...]:
        return self.prefixes[j] if self.prefixes else ()

    @property
    def fed_tokens(self) -> int:
        return len(self.context) + sum(len(self.prefix(j)) + len(c) - 1 for j, c in enumerate(self.continuations))


def _split_trailing_space(ctx: str) -> tuple[str, str]:
    """Trailing spaces move from the context to the continuation (lm-eval's _encode_pair)."""
    n_spaces = len(ctx) - len(ctx.rstrip())
    return (ctx[:-n_spaces], ctx[-n_spaces:]) if n_spaces else (ctx, "")


def _common_prefix(runs: Sequence[Sequence[int]]) -> int:
    n = min(len(r) for r in runs)
    for k in range(n):
        if any(r[k] != runs[0][k] for r in runs[1:]):
            return k
    return n


def encode_requests(tokenizer: Any, task: str, docs: Sequence[Any]) -> list[Request]:
    """lm-eval's context/continuation split: cont = tok(ctx + " " + choice)[len(tok(ctx)):].

    A partially scored doc (``doc.continuation`` set) gives lm-eval's multiple-input requests:
    context j = doc.context + choice j, continuation " " + doc.continuation for every j."""
    if not docs:
        return []
    contexts, wholes, shape = [], [], []
    for d in docs:
        if getattr(d, "continuation", ""):
            for c in d.choices:
                ctx, lead = _split_trailing_space(d.context + c)
                contexts.append(ctx)
                wholes.append(ctx + lead + TARGET_DELIMITER + d.continuation)
            shape.append(len(d.choices))
        else:
            ctx, lead = _split_trailing_space(d.context)
            contexts.append(ctx)
            wholes += [ctx + lead + TARGET_DELIMITER + c for c in d.choices]
            shape.append(1)
    ctx_ids = tokenizer(contexts)["input_ids"]
    whole_ids = tokenizer(wholes)["input_ids"]
    out, k, c0 = [], 0, 0
    for d, n_ctx in zip(docs, shape):
        cids = ctx_ids[c0:c0 + n_ctx]
        c0 += n_ctx
        partial = bool(getattr(d, "continuation", ""))
        conts = []
        for j in range(len(d.choices)):
            cont = tuple(whole_ids[k][len(cids[j if partial else 0]):])
            k += 1
            if not cont:
                raise DataError(f"{d.source or d.id}: a choice of task {task} tokenizes to nothing after its context")
            conts.append(cont)
        if any(not c for c in cids):
            raise DataError(f"{d.source or d.id}: the context of task {task} tokenizes to nothing")
        if partial:
            shared = _common_prefix(cids)
            context, prefixes = tuple(cids[0][:shared]), tuple(tuple(c[shared:]) for c in cids)
            nbytes = max(1, len(d.continuation.encode("utf-8")))
            choice_bytes = tuple(nbytes for _ in d.choices)
        else:
            context, prefixes = tuple(cids[0]), ()
            choice_bytes = tuple(max(1, len(c.encode("utf-8"))) for c in d.choices)
        out.append(Request(task, d.id, context, tuple(conts), d.gold, choice_bytes, prefixes,
                           tuple(getattr(d, "golds", ()) or ())))
    return out


def truncate_request(req: Request, max_len: int | None) -> Request:
    """Cut the context from the left so that context + the longest choice fits the model's positions.

    Each choice is its own branch after the shared context (positions restart at the end of the
    context), so the limit applies to the longest branch, not to all tokens of the item; lm-eval
    likewise truncates each (context, continuation) request on its own.
    """
    # the last choice token is predicted, not fed
    longest = max(len(req.prefix(j)) + len(c) for j, c in enumerate(req.continuations)) - 1
    if max_len is None or len(req.context) + longest <= max_len:
        return req
    cut = len(req.context) + longest - max_len
    if cut >= len(req.context):
        raise DataError(f"{req.task} item {req.id}: its longest choice alone exceeds the model's {max_len} positions")
    log.debug("truncating the context of %s/%s by %d tokens", req.task, req.id, cut)
    return Request(req.task, req.id, req.context[cut:], req.continuations, req.gold, req.choice_bytes, req.prefixes,
                   req.golds)


@dataclass
class _Row:
    tokens: list[int]
    pos: list[int]
    seg: list[int]
    branch: list[int]
    score_pos: list[int]  # position in the row of the hidden state that predicts ...
    score_tok: list[int]  # ... this token
    score_pair: list[int]  # global (item, choice) pair index
    items: list[int]  # global item indices in this row


def _layout(reqs: Sequence[Request], pair_offset: Sequence[int], row_tokens: int) -> list[_Row]:
    """First-fit-decreasing packing of items into rows, with each item's tree layout."""
    order = sorted(range(len(reqs)), key=lambda i: -reqs[i].fed_tokens)
    rows: list[_Row] = []
    free: list[int] = []
    for i in order:
        r = reqs[i]
        n = r.fed_tokens
        slot = next((k for k in range(max(0, len(rows) - 64), len(rows)) if free[k] >= n), None)
        if slot is None:
            rows.append(_Row([], [], [], [], [], [], [], []))
            free.append(max(row_tokens, n))
            slot = len(rows) - 1
        row = rows[slot]
        free[slot] -= n
        base = len(row.tokens)
        seg = len(row.items)
        row.items.append(i)
        lc = len(r.context)
        row.tokens += r.context
        row.pos += range(lc)
        row.seg += [seg] * lc
        row.branch += [0] * lc
        for j, cont in enumerate(r.continuations):
            start = len(row.tokens)
            pre = r.prefix(j)
            fed = pre + cont[:-1]
            row.tokens += fed
            row.pos += range(lc, lc + len(fed))
            row.seg += [seg] * len(fed)
            row.branch += [j + 1] * len(fed)
            pair = pair_offset[i] + j
            first = start + len(pre) - 1 if pre else base + lc - 1  # the state that predicts the first scored token
            for t, tok in enumerate(cont):
                row.score_pos.append(first if t == 0 else start + len(pre) + t - 1)
                row.score_tok.append(tok)
                row.score_pair.append(pair)
    return rows


def _batch_tensors(rows: Sequence[_Row], sdpa: bool):
    """input_ids, position_ids, 4D attention mask, flat scored positions, targets, pairs."""
    import torch

    T = max(len(r.tokens) for r in rows)
    B = len(rows)
    ids = torch.zeros(B, T, dtype=torch.long)
    pos = torch.zeros(B, T, dtype=torch.long)
    seg = torch.full((B, T), -1, dtype=torch.long)
    br = torch.zeros(B, T, dtype=torch.long)
    flat, tok, pair = [], [], []
    for b, r in enumerate(rows):
        n = len(r.tokens)
        ids[b, :n] = torch.tensor(r.tokens)
        pos[b, :n] = torch.tensor(r.pos)
        seg[b, :n] = torch.tensor(r.seg)
        br[b, :n] = torch.tensor(r.branch)
        flat += [b * T + p for p in r.score_pos]
        tok += r.score_tok
        pair += r.score_pair
    ar = torch.arange(T)
    causal = ar[None, :] <= ar[:, None]
    mask = (seg[:, :, None] == seg[:, None, :]) & causal[None] & (
        (br[:, None, :] == 0) | (br[:, None, :] == br[:, :, None]))
    mask = mask[:, None]
    if not sdpa:
        mask = torch.zeros(mask.shape, dtype=torch.float32).masked_fill_(~mask, torch.finfo(torch.float32).min)
    return ids, pos, mask, torch.tensor(flat), torch.tensor(tok), torch.tensor(pair)


def _token_logprobs(lm: Any, hidden: Any, targets: Any) -> Any:
    """log p(target) for each hidden state row, LM head and softmax in float32, in chunks."""
    import torch

    head = lm.get_output_embeddings()
    w = head.weight.float()
    bias = None if head.bias is None else head.bias.float()
    out = []
    with torch.autocast("cpu", enabled=False):
        for s in range(0, hidden.shape[0], LM_HEAD_CHUNK):
            logits = torch.nn.functional.linear(hidden[s:s + LM_HEAD_CHUNK].float(), w, bias)
            lse = torch.logsumexp(logits, dim=-1)
            out.append(logits.gather(1, targets[s:s + LM_HEAD_CHUNK, None])[:, 0] - lse)
    return torch.cat(out) if out else hidden.new_zeros(0, dtype=torch.float32)


def _no_grad(precision: str):
    """inference_mode in fp32; no_grad under bf16 autocast, because inference_mode turns off
    autocast's weight cache and every linear layer would re-cast its weight in every batch."""
    import torch

    return torch.no_grad() if precision == "bf16" else torch.inference_mode()


def _decoder(lm: Any, **kw: Any) -> Any:
    out = lm.model(use_cache=False, **kw)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]



# ---------------------------------------------------------------------------- forward passes
def score_multiple_choice(lm, layout, batch_size, precision, progress, done0, total):
    """Sum of log p over each (item, choice) pair of a packed `layout`, per task: ({task: [lls]}, tokens fed)."""
    import torch

    reqs, offsets, n_pairs, rows = layout
    sums = torch.zeros(n_pairs, dtype=torch.float64)
    sdpa = getattr(lm.config, "_attn_implementation", "eager") == "sdpa"
    fed = 0
    done = done0
    with _no_grad(precision), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        for s in range(0, len(rows), max(1, batch_size)):
            batch = rows[s:s + batch_size]
            ids, pos, mask, flat, tok, pair = _batch_tensors(batch, sdpa)
            hidden = _decoder(lm, input_ids=ids, position_ids=pos, attention_mask=mask)
            hsel = hidden.reshape(-1, hidden.shape[-1])[flat]
            lp = _token_logprobs(lm, hsel, tok)
            sums.index_add_(0, pair, lp.double())
            fed += int(ids.numel())
            done += sum(len(r.items) for r in batch)
            if progress:
                progress(done, total, "multiple choice")
    sums = sums.numpy()
    out: dict[str, list[np.ndarray]] = {}
    for r, off in zip(reqs, offsets):
        out.setdefault(r.task, []).append(sums[off:off + len(r.continuations)].copy())
    return out, fed


def score_windows(lm, windows, batch_size, precision, progress, done0, total, label):
    """Total negative log-likelihood and predicted-token count of perplexity windows."""
    import torch

    nll = 0.0
    count = 0
    by_len: dict[int, list[list[int]]] = {}
    for w in windows:
        by_len.setdefault(len(w), []).append(w)
    done = done0
    with _no_grad(precision), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        for _, group in sorted(by_len.items(), reverse=True):
            for s in range(0, len(group), max(1, batch_size)):
                ids = torch.tensor(group[s:s + batch_size])
                hidden = _decoder(lm, input_ids=ids)
                h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
                lp = _token_logprobs(lm, h, ids[:, 1:].reshape(-1))
                nll -= float(lp.double().sum())
                count += int(lp.numel())
                done += ids.shape[0]
                if progress:
                    progress(done, total, label)
    return nll, count
