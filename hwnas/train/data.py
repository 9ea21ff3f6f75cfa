"""Training data for one-shot supernet fine-tuning: read, tokenize, pack, split.

Accepted files (the format is decided by the file, never guessed from a partial read):

- ``.json``  an Alpaca list ``[{"instruction", "input", "output"}, ...]``, or a list of
  ``{"text": ...}`` objects or of strings (plain text);
- ``.jsonl`` one object per line, ``{"text": ...}`` (plain text) or Alpaca
  ``{"instruction", "input", "output"}``;
- ``.txt``   plain text, one document per non-empty line (like ``wiki_demo.txt``).

Instruction examples are rendered with the tokenizer's chat template when it has one (user turn =
instruction + input, assistant turn = output) and with the Alpaca prompt otherwise; by default
only the response tokens carry loss. Documents are tokenized, each followed by EOS, and packed
into fixed-length sequences (attention may cross document boundaries, as in most packed
fine-tuning). The held-out validation slice is split by *example* before packing, so no text
of a validation example is trained on.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from hwnas.errors import DataError

log = logging.getLogger(__name__)

SUFFIXES = (".json", ".jsonl", ".txt")
FORMATS_HELP = (
    ".json (Alpaca list of {instruction, input, output}, or a list of {text}/strings), "
    ".jsonl ({text} or Alpaca objects, one per line), .txt (one document per non-empty line)"
)
IGNORE_INDEX = -100
ALPACA_PROMPT = (
    "Below is an instruction that describes a task{ctx}. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n{input_block}### Response:\n"
)


@dataclass(frozen=True)
class Example:
    """One training example: `prompt` (no loss unless train_on_prompt) then `response` (loss)."""

    prompt: str
    response: str
    kind: str  # "text" | "instruction"
    where: str  # "file:line", for error messages


@dataclass
class TrainData:
    """Packed token sequences: ids and labels (IGNORE_INDEX where no loss), train and validation."""

    train_ids: np.ndarray
    train_labels: np.ndarray
    val_ids: np.ndarray
    val_labels: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def seq_len(self) -> int:
        return int(self.train_ids.shape[1])


# --------------------------------------------------------------------------- reading
def read_examples(path: str | Path) -> tuple[str, list[Example]]:
    """(format, examples) of a data file; DataError for unknown formats, bad records or no data."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"training data {path} not found; give a file in one of: {FORMATS_HELP}")
    if path.is_dir():
        raise DataError(f"training data {path} is a folder; give one file in one of: {FORMATS_HELP}")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"training data {path} has unknown format {path.suffix or '(no extension)'!r}; accepted: {FORMATS_HELP}")
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"training data {path} is not UTF-8 text (byte {e.start})") from None
    if suffix == ".txt":
        fmt, examples = "text", [
            Example("", line.strip(), "text", f"{path}:{i}")
            for i, line in enumerate(raw.splitlines(), 1) if line.strip()
        ]
    elif suffix == ".jsonl":
        fmt, examples = _read_records(path, _jsonl_records(path, raw))
    else:
        fmt, examples = _read_records(path, _json_array_records(path, raw))
    examples = [e for e in examples if (e.prompt + e.response).strip()]
    if not examples:
        raise DataError(f"training data {path} holds no examples (empty file or only blank records); accepted: {FORMATS_HELP}")
    return fmt, examples


def _jsonl_records(path: Path, raw: str) -> Iterator[tuple[int, Any]]:
    for i, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield i, json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{i}: malformed JSON line ({e.msg}, column {e.colno})") from None


def _json_array_records(path: Path, raw: str) -> Iterator[tuple[int, Any]]:
    """Elements of a top-level JSON array with the line each starts on (for error messages)."""
    dec = json.JSONDecoder()
    n = len(raw)

    def skip_ws(i: int) -> int:
        while i < n and raw[i] in " \t\r\n":
            i += 1
        return i

    def line_of(i: int) -> int:
        return raw.count("\n", 0, i) + 1

    i = skip_ws(0)
    if i == n:
        return
    if raw[i] != "[":
        raise DataError(f"{path}:{line_of(i)}: expected a JSON list of examples, found {raw[i]!r}; accepted: {FORMATS_HELP}")
    i = skip_ws(i + 1)
    if i < n and raw[i] == "]":
        return
    while True:
        try:
            obj, end = dec.raw_decode(raw, i)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg}, column {e.colno})") from None
        yield line_of(i), obj
        i = skip_ws(end)
        if i < n and raw[i] == ",":
            i = skip_ws(i + 1)
            continue
        if i < n and raw[i] == "]":
            return
        raise DataError(f"{path}:{line_of(min(i, n - 1))}: malformed JSON list (expected ',' or ']')")


def _read_records(path: Path, records: Iterator[tuple[int, Any]]) -> tuple[str, list[Example]]:
    """Turn JSON records into examples; every record must have the format of the first."""
    fmt: str | None = None
    out: list[Example] = []
    for line, rec in records:
        where = f"{path}:{line}"
        kind = _record_kind(rec)
        if kind is None:
            shown = json.dumps(rec)[:60]
            raise DataError(
                f"{where}: record {shown} is neither plain text ({{\"text\": ...}} or a string) "
                "nor Alpaca ({\"instruction\", \"input\", \"output\"})"
            )
        if fmt is None:
            fmt = kind
        elif kind != fmt:
            raise DataError(f"{where}: {kind} record in a file whose first record is {fmt}; use one format per file")
        if kind == "text":
            text = rec if isinstance(rec, str) else rec["text"]
            out.append(Example("", text, "text", where))
        else:
            for key in ("instruction", "input", "output"):
                if key in rec and not isinstance(rec[key], str):
                    raise DataError(f"{where}: Alpaca field {key!r} must be a string, got {type(rec[key]).__name__}")
            out.append(Example(_alpaca_user_text(rec), rec["output"], "instruction", where))
    return ("alpaca" if fmt == "instruction" else "text"), out


def _record_kind(rec: Any) -> str | None:
    if isinstance(rec, str):
        return "text"
    if not isinstance(rec, dict):
        return None
    if "instruction" in rec and "output" in rec:
        return "instruction"
    if isinstance(rec.get("text"), str):
        return "text"
    return None


def _alpaca_user_text(rec: dict[str, Any]) -> str:
    inp = (rec.get("input") or "").strip()
    instr = rec["instruction"].strip()
    return f"{instr}\n\n{inp}" if inp else instr


# --------------------------------------------------------------------------- tokenizing
def render(example: Example, tokenizer: Any, chat_template: bool) -> tuple[str, str]:
    """(prompt text, response text) of an example, as the model will see it."""
    if example.kind == "text":
        return "", example.response
    if chat_template:
        user = [{"role": "user", "content": example.prompt}]
        prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(
            user + [{"role": "assistant", "content": example.response}], tokenize=False
        )
        if full.startswith(prompt):
            return prompt, full[len(prompt):]
        return "", full  # a template that rewrites earlier turns: train on the whole conversation
    instr, _, inp = example.prompt.partition("\n\n")
    prompt = ALPACA_PROMPT.format(
        ctx=", paired with an input that provides further context" if inp else "",
        instruction=instr, input_block=f"### Input:\n{inp}\n\n" if inp else "",
    )
    return prompt, example.response


def tokenize_examples(
    examples: Sequence[Example], tokenizer: Any, *, chat_template: bool | None = None, train_on_prompt: bool = False,
) -> list[tuple[list[int], list[int]]]:
    """(ids, labels) per example; EOS appended; labels IGNORE_INDEX on the prompt unless train_on_prompt."""
    if chat_template is None:
        chat_template = bool(getattr(tokenizer, "chat_template", None))
    eos = tokenizer.eos_token_id
    out = []
    for ex in examples:
        prompt, response = render(ex, tokenizer, chat_template)
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
        r_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
        if eos is not None and (not r_ids or r_ids[-1] != eos):
            r_ids = r_ids + [eos]
        ids = list(p_ids) + list(r_ids)
        labels = (list(p_ids) if train_on_prompt else [IGNORE_INDEX] * len(p_ids)) + list(r_ids)
        out.append((ids, labels))
    return out


def pack(seqs: Sequence[tuple[list[int], list[int]]], seq_len: int, pad_id: int, *, pad_last: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate (ids, labels) streams and cut into rows of seq_len; the remainder is dropped
    (or padded with pad_id / IGNORE_INDEX labels when `pad_last`, so tiny data still yields a row)."""
    ids = np.fromiter((t for s, _ in seqs for t in s), dtype=np.int64)
    labels = np.fromiter((t for _, lab in seqs for t in lab), dtype=np.int64)
    n_full = len(ids) // seq_len
    rest = len(ids) - n_full * seq_len
    if pad_last and rest:
        pad = seq_len - rest
        ids = np.concatenate([ids, np.full(pad, pad_id, dtype=np.int64)])
        labels = np.concatenate([labels, np.full(pad, IGNORE_INDEX, dtype=np.int64)])
        n_full += 1
    ids = ids[: n_full * seq_len].reshape(n_full, seq_len)
    labels = labels[: n_full * seq_len].reshape(n_full, seq_len)
    return ids, labels


def load_training_data(
    path: str | Path, tokenizer: Any, *, seq_len: int = 256, val_fraction: float = 0.05, max_val_sequences: int = 16,
    seed: int = 0, chat_template: bool | None = None, train_on_prompt: bool = False,
) -> TrainData:
    """Read `path`, split examples into train / held-out (seeded), tokenize and pack each."""
    if seq_len < 8:
        raise DataError(f"sequence length {seq_len} is too short; use at least 8 tokens")
    if not 0 < val_fraction < 1:
        raise DataError(f"validation fraction {val_fraction} must lie strictly between 0 and 1")
    path = Path(path)
    fmt, examples = read_examples(path)
    if len(examples) < 2:
        raise DataError(f"training data {path} holds 1 example; need at least 2 (one is held out for validation)")
    use_template = bool(getattr(tokenizer, "chat_template", None)) if chat_template is None else chat_template
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(examples))
    n_val = min(len(examples) - 1, max(1, int(round(len(examples) * val_fraction))))
    val_idx, train_idx = sorted(order[:n_val]), order[n_val:]
    tok = dict(chat_template=use_template, train_on_prompt=train_on_prompt)
    train_seqs = tokenize_examples([examples[i] for i in train_idx], tokenizer, **tok)
    val_seqs = tokenize_examples([examples[i] for i in val_idx], tokenizer, **tok)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    tr_ids, tr_lab = pack(train_seqs, seq_len, pad_id)
    if len(tr_ids) == 0:
        n_tok = sum(len(s) for s, _ in train_seqs)
        raise DataError(
            f"training data {path} has {n_tok} training tokens, fewer than one sequence of {seq_len}; "
            "give more data or a smaller --seq-len"
        )
    va_ids, va_lab = pack(val_seqs, seq_len, pad_id, pad_last=True)
    va_ids, va_lab = va_ids[:max_val_sequences], va_lab[:max_val_sequences]
    info = {
        "path": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "format": fmt,
        "chat_template": use_template if fmt == "alpaca" else False,
        "train_on_prompt": train_on_prompt,
        "examples": len(examples),
        "train_examples": len(train_idx),
        "val_examples": n_val,
        "seq_len": seq_len,
        "train_sequences": int(len(tr_ids)),
        "val_sequences": int(len(va_ids)),
        "train_tokens": int(tr_ids.size),
        "train_loss_tokens": int((tr_lab != IGNORE_INDEX).sum()),
        "split_seed": seed,
    }
    log.info("training data %s: %s", path, info)
    return TrainData(tr_ids, tr_lab, va_ids, va_lab, info)
