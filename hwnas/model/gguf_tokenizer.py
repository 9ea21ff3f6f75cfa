"""Build a correct Hugging Face fast tokenizer from a GGUF file's own tokenizer metadata.

transformers' GGUF loader gets some byte-level BPE files wrong (for SmolLM2 it builds a
CodeLlama-style tokenizer that prepends a BOS the file does not ask for, picks the wrong
EOS and mangles text after a save/reload). This module reads the vocabulary, merges, token
types, special ids, flags, pre-tokenizer name and chat template straight from the GGUF and
assembles the same pipeline llama.cpp runs for that file:

    pre-tokenizer (regex split chosen by ``tokenizer.ggml.pre``) -> byte-level BPE -> byte-level decoder

Only ``tokenizer.ggml.model == "gpt2"`` (byte-level BPE) is supported. Pre-tokenizer names
are grouped as in llama.cpp's ``llama-vocab.cpp``; an unknown name is an error rather than a
silent guess, because a wrong split gives plausible-looking but different token ids.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwnas.errors import ModelError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

log = logging.getLogger(__name__)

# Llama-3's regex, as in its tokenizer.json (llama.cpp uses an equivalent without "(?i:").
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# tokenizer.ggml.pre -> pre-tokenization style. Groups follow llama.cpp's llama-vocab.cpp,
# where every name in a group gets the same regex list.
#   "gpt2":        GPT-2 regex only (tokenizers' ByteLevel(use_regex=True) applies exactly that).
#   "gpt2-digits": every digit isolated (\p{N}), then the GPT-2 regex (SmolLM, StarCoder).
#   "llama3":      Llama-3 regex; merges ignored for words already in the vocab.
PRE_TOKENIZER_STYLES: dict[str, str] = {
    "gpt-2": "gpt2",
    "mpt": "gpt2",
    "olmo": "gpt2",
    "jais": "gpt2",
    "smollm": "gpt2-digits",
    "starcoder": "gpt2-digits",
    "refact": "gpt2-digits",
    "codeshell": "gpt2-digits",
    "command-r": "gpt2-digits",
    "exaone": "gpt2-digits",
    "minerva-7b": "gpt2-digits",
    "llama3": "llama3",
    "llama-v3": "llama3",
    "llama-bpe": "llama3",
    "falcon3": "llama3",
}
# Names for "no specific pre-tokenizer recorded". llama.cpp falls back to an odd regex list
# for these and warns that quality will suffer; plain GPT-2 splitting is the sane reading.
DEFAULT_PRE_NAMES = ("", "default")

# GGUF token types (gguf.TokenType; llama.cpp's llama_token_type).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6


def tokenizer_from_gguf(gguf_path: str | os.PathLike) -> PreTrainedTokenizerFast:
    """Return a ``transformers.PreTrainedTokenizerFast`` built from a GGUF file's tokenizer metadata.

    Raises ``ModelError`` if the file is missing or not a GGUF, has no tokenizer metadata, is
    not a byte-level BPE ("gpt2") tokenizer, or names a pre-tokenizer this module does not know.
    """
    meta = read_gguf_tokenizer_metadata(gguf_path)
    return _build(meta, Path(gguf_path))


def read_gguf_tokenizer_metadata(gguf_path: str | os.PathLike) -> dict[str, Any]:
    """Read the ``tokenizer.*`` fields (and the context length) of a GGUF file into plain Python values.

    Keys are the GGUF keys without the ``tokenizer.ggml.`` prefix (``tokens``, ``merges``,
    ``token_type``, ``bos_token_id``, ...), plus ``chat_template`` and ``context_length``.
    """
    path = Path(gguf_path)
    if not path.is_file():
        raise ModelError(f"GGUF file not found: {path}")
    try:
        from gguf import GGUFReader
    except ImportError as e:  # pragma: no cover - gguf is a declared dependency
        raise ModelError(f"reading {path} needs the 'gguf' package (pip install gguf): {e}") from e
    try:
        reader = GGUFReader(str(path))
    except Exception as e:  # GGUFReader raises ValueError/struct.error/etc. on a bad file
        raise ModelError(f"{path} is not a readable GGUF file ({type(e).__name__}: {e})") from e

    meta: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml."):
            meta[key[len("tokenizer.ggml."):]] = _field_value(field, key, path)
        elif key == "tokenizer.chat_template":
            meta["chat_template"] = _field_value(field, key, path)
    arch_field = reader.fields.get("general.architecture")
    if arch_field is not None:
        arch = _field_value(arch_field, "general.architecture", path)
        ctx = reader.fields.get(f"{arch}.context_length")
        if ctx is not None:
            meta["context_length"] = int(_field_value(ctx, f"{arch}.context_length", path))
    return meta


def _field_value(field: Any, key: str, path: Path) -> Any:
    """Decode one GGUF field (scalar, string, or array of either) using only parts/data/types."""
    from gguf import GGUFValueType

    def decode(raw: Any, vtype: Any) -> Any:
        if vtype == GGUFValueType.STRING:
            try:
                return bytes(raw).decode("utf-8")
            except UnicodeDecodeError as e:
                raise ModelError(f"{path}: field {key} holds a string that is not valid UTF-8 ({e})") from e
        value = raw[0]
        return bool(value) if vtype == GGUFValueType.BOOL else value.item()

    if not field.types:
        raise ModelError(f"{path}: field {key} has no type")
    if field.types[0] == GGUFValueType.ARRAY:
        if len(field.types) < 2 or field.types[1] == GGUFValueType.ARRAY:
            raise ModelError(f"{path}: field {key} is a nested array, expected a flat list")
        return [decode(field.parts[i], field.types[1]) for i in field.data]
    return decode(field.parts[field.data[0]], field.types[0])


def _build(meta: dict[str, Any], path: Path):
    """A PreTrainedTokenizerFast from a GGUF's tokenizer.ggml.* fields (byte-level BPE only)."""
    from transformers import PreTrainedTokenizerFast

    tokens, merges_raw = _check_metadata(meta, path)
    pre_name = meta.get("pre") or ""
    style = _pre_tokenizer_style(pre_name, path)
    n = len(tokens)
    types = meta.get("token_type")
    if types is not None and len(types) != n:
        raise ModelError(f"{path}: {len(types)} token types for {n} tokens")
    vocab, merges = _vocab_and_merges(tokens, merges_raw, path)
    ids = _special_ids(meta, n, path)
    # llama.cpp: explicit flags win; otherwise the Llama-3 group adds BOS and nothing else does.
    add_bos = bool(meta.get("add_bos_token", style == "llama3"))
    add_eos = bool(meta.get("add_eos_token", False))
    backend = _bpe_backend(vocab, merges, style, path)
    special_ids = _add_special_tokens(backend, tokens, types, set(i for i in ids.values() if i is not None), len(vocab), path)
    kwargs: dict[str, Any] = {
        "tokenizer_object": backend,
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": False,
    }
    for name, tid in ids.items():
        if tid is not None:
            kwargs[name] = tokens[tid]
    if meta.get("context_length"):
        kwargs["model_max_length"] = int(meta["context_length"])
    if meta.get("chat_template"):
        kwargs["chat_template"] = meta["chat_template"]

    tok = PreTrainedTokenizerFast(**kwargs)
    if len(tok) != len(vocab):
        raise ModelError(f"{path}: built tokenizer has {len(tok)} tokens, the file has {len(vocab)}")
    log.info(
        "tokenizer from %s: %d tokens, %d merges, pre=%r (%s), %d special, bos=%s eos=%s pad=%s add_bos=%s",
        path.name, n, len(merges), pre_name, style, len(special_ids),
        kwargs.get("bos_token"), kwargs.get("eos_token"), kwargs.get("pad_token"), add_bos,
    )
    return tok


def _check_metadata(meta: dict[str, Any], path: Path) -> tuple[list[str], list[str]]:
    """(tokens, merges) of a byte-level BPE tokenizer; a one-line ModelError for anything else."""
    model = meta.get("model")
    tokens = meta.get("tokens")
    if model is None or not tokens:
        found = ", ".join(sorted(meta)) or "none"
        raise ModelError(
            f"{path} has no usable tokenizer metadata (need tokenizer.ggml.model and tokenizer.ggml.tokens; "
            f"found tokenizer fields: {found})"
        )
    if model != "gpt2":
        raise ModelError(
            f"{path}: tokenizer.ggml.model is {model!r}; only 'gpt2' (byte-level BPE) is supported"
        )
    merges_raw = meta.get("merges")
    if not merges_raw:
        raise ModelError(f"{path}: byte-level BPE tokenizer without tokenizer.ggml.merges")
    return tokens, merges_raw


def _pre_tokenizer_style(pre_name: str, path: Path) -> str:
    """'gpt2', 'gpt2-digits' or 'llama3' for a tokenizer.ggml.pre name."""
    if pre_name in DEFAULT_PRE_NAMES:
        log.warning(
            "%s records no specific pre-tokenizer (tokenizer.ggml.pre=%r); using GPT-2 splitting",
            path, pre_name,
        )
        return "gpt2"
    if pre_name in PRE_TOKENIZER_STYLES:
        return PRE_TOKENIZER_STYLES[pre_name]
    known = ", ".join(sorted(PRE_TOKENIZER_STYLES) + ["default"])
    raise ModelError(
        f"{path}: unsupported pre-tokenizer tokenizer.ggml.pre={pre_name!r}; supported: {known}"
    )


def _vocab_and_merges(tokens: list[str], merges_raw: list[str], path: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Token -> id (the first id of a repeated token wins) and the merges as pairs."""
    vocab: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        if tok in vocab:
            log.warning("%s: token %r appears at ids %d and %d; keeping %d", path, tok, vocab[tok], i, vocab[tok])
            continue
        vocab[tok] = i
    merges: list[tuple[str, str]] = []
    for k, m in enumerate(merges_raw):
        parts = m.split(" ")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise ModelError(f"{path}: merge #{k} {m!r} is not two tokens separated by one space")
        merges.append((parts[0], parts[1]))
    return vocab, merges


def _special_ids(meta: dict[str, Any], n: int, path: Path) -> dict[str, int | None]:
    """{bos_token, eos_token, unk_token, pad_token: id or None}; ids outside the vocabulary are ignored,
    and pad falls back to eos (the usual choice for decoder-only models; masks make the value irrelevant)."""

    def special_id(name: str) -> int | None:
        value = meta.get(name)
        if value is None:
            return None
        if not 0 <= int(value) < n:
            log.warning("%s: tokenizer.ggml.%s=%s is outside the vocabulary (size %d); ignoring it", path, name, value, n)
            return None
        return int(value)

    eos_id = special_id("eos_token_id")
    pad_id = special_id("padding_token_id")
    return {"bos_token": special_id("bos_token_id"), "eos_token": eos_id, "unk_token": special_id("unknown_token_id"),
            "pad_token": eos_id if pad_id is None else pad_id}


def _bpe_backend(vocab: dict[str, int], merges: list[tuple[str, str]], style: str, path: Path):
    """The `tokenizers` BPE model with the pre-tokenizer of `style` and the byte-level decoder."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    try:
        bpe = models.BPE(
            vocab=vocab,
            merges=merges,
            fuse_unk=False,
            byte_fallback=False,
            ignore_merges=(style == "llama3"),
        )
    except Exception as e:  # tokenizers raises on merges naming tokens outside the vocab
        raise ModelError(f"{path}: vocabulary and merges do not form a valid BPE model ({e})") from e
    backend = Tokenizer(bpe)
    if style == "gpt2":
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    elif style == "gpt2-digits":
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    else:  # llama3
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    backend.decoder = decoders.ByteLevel()
    return backend


def _add_special_tokens(backend: Any, tokens: list[str], types: list[int] | None, named: set[int], vocab_size: int,
                        path: Path) -> list[int]:
    """Register control/unknown tokens (matched whole, skipped when decoding special tokens away) and
    user-defined ones (matched whole, kept); tokens named by an id field count as special even if the
    file has no token types. Returns the special ids."""
    from tokenizers import AddedToken

    n = len(tokens)
    special_ids = sorted(
        i for i in range(n)
        if i in named or (types is not None and types[i] in (_UNKNOWN, _CONTROL))
    )
    user_ids = [] if types is None else [i for i in range(n) if types[i] == _USER_DEFINED and i not in named]
    added = [AddedToken(tokens[i], special=True, normalized=False) for i in special_ids]
    added += [AddedToken(tokens[i], special=False, normalized=False) for i in user_ids]
    if added:
        backend.add_tokens(added)
    if backend.get_vocab_size(with_added_tokens=True) != vocab_size:
        raise ModelError(f"{path}: tokenizer grew beyond the {n} tokens in the file while adding special tokens")
    return special_ids
