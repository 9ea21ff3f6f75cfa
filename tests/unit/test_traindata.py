import json

import numpy as np
import pytest

from hwnas.errors import DataError
from hwnas.train.data import IGNORE_INDEX, load_training_data, pack, read_examples, render, tokenize_examples
from tests.conftest import make_tiny_tokenizer

ALPACA = [
    {"instruction": "Name a color.", "input": "", "output": "Blue."},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    {"instruction": "Say hi.", "input": "", "output": "Hi!"},
]


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_alpaca_json_is_read_with_prompt_and_response(tmp_path):
    f = write(tmp_path / "a.json", json.dumps(ALPACA, indent=2))
    fmt, ex = read_examples(f)
    assert fmt == "alpaca"
    assert [e.response for e in ex] == ["Blue.", "5", "Hi!"]
    assert ex[1].prompt == "Add the numbers.\n\n2 and 3"
    assert ex[0].where == f"{f}:2"  # line where the record starts


@pytest.mark.parametrize("name,content,expect", [
    ("t.jsonl", '{"text": "first doc"}\n\n{"text": "second doc"}\n', ["first doc", "second doc"]),
    ("t.txt", "line one\n\n  line two  \n", ["line one", "line two"]),
    ("t.json", json.dumps(["a doc", "b doc"]), ["a doc", "b doc"]),
    ("t2.json", json.dumps([{"text": "x doc"}]), ["x doc"]),
])
def test_plain_text_formats(tmp_path, name, content, expect):
    fmt, ex = read_examples(write(tmp_path / name, content))
    assert fmt == "text"
    assert [e.response for e in ex] == expect
    assert all(e.prompt == "" for e in ex)


def test_alpaca_jsonl(tmp_path):
    f = write(tmp_path / "a.jsonl", "\n".join(json.dumps(r) for r in ALPACA))
    fmt, ex = read_examples(f)
    assert fmt == "alpaca" and len(ex) == 3


@pytest.mark.parametrize("name,content,msg", [
    ("d.csv", "a,b\n", "unknown format '.csv'"),
    ("d", "text", "unknown format '(no extension)'"),
    ("e.jsonl", "", "holds no examples"),
    ("e.txt", "\n  \n", "holds no examples"),
    ("e.json", "[]", "holds no examples"),
    ("e2.json", "", "holds no examples"),
    ("b.jsonl", '{"text": "ok"}\n{"text": broken}\n', "b.jsonl:2: malformed JSON line"),
    ("c.jsonl", '{"text": "ok"}\n{"question": "q"}\n', "c.jsonl:2: record"),
    ("m.json", json.dumps(ALPACA[:1] + [{"text": "t"}], indent=1), "m.json:7: text record in a file whose first record is instruction"),
    ("o.json", '{"text": "x"}', "expected a JSON list"),
    ("f.json", json.dumps([{"instruction": "x", "output": 3}]), "field 'output' must be a string"),
])
def test_bad_data_names_file_and_line(tmp_path, name, content, msg):
    f = write(tmp_path / name, content)
    with pytest.raises(DataError) as e:
        read_examples(f)
    assert msg in str(e.value)
    assert name in str(e.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_examples(tmp_path / "nope.json")
    with pytest.raises(DataError, match="is a folder"):
        read_examples(tmp_path)


def test_render_without_and_with_chat_template():
    tok = make_tiny_tokenizer()
    from hwnas.train.data import Example

    e = Example("Add.\n\n2 and 3", "5", "instruction", "x:1")
    prompt, resp = render(e, tok, chat_template=False)
    assert prompt.endswith("### Input:\n2 and 3\n\n### Response:\n") and "### Instruction:\nAdd.\n\n" in prompt
    assert resp == "5"
    tok.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    prompt, resp = render(e, tok, chat_template=True)
    assert prompt == "<|user|>Add.\n\n2 and 3</s><|assistant|>"
    assert resp == "5</s>"


def test_tokenize_masks_prompt_and_appends_eos():
    from hwnas.train.data import Example

    tok = make_tiny_tokenizer()
    e = Example("Q?", "ab", "instruction", "x:1")
    [(ids, labels)] = tokenize_examples([e], tok, chat_template=False)
    n_prompt = len(tok(render(e, tok, False)[0], add_special_tokens=False)["input_ids"])
    assert ids[-1] == tok.eos_token_id
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]  # response + EOS carry loss
    [(ids2, labels2)] = tokenize_examples([e], tok, chat_template=False, train_on_prompt=True)
    assert labels2 == ids2


def test_pack_drops_or_pads_the_remainder():
    seqs = [([1, 2, 3], [1, 2, 3]), ([4, 5], [-100, 5]), ([6, 7, 8, 9], [6, 7, 8, 9])]
    ids, labels = pack(seqs, 4, pad_id=0)
    assert ids.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert labels.tolist() == [[1, 2, 3, -100], [5, 6, 7, 8]]
    ids, labels = pack(seqs, 4, pad_id=0, pad_last=True)
    assert ids.tolist()[-1] == [9, 0, 0, 0] and labels.tolist()[-1] == [9, -100, -100, -100]


def test_load_training_data_split_is_disjoint_and_seeded(tmp_path):
    docs = [f"document number {i} " * 3 for i in range(40)]
    f = write(tmp_path / "d.jsonl", "\n".join(json.dumps({"text": d}) for d in docs))
    tok = make_tiny_tokenizer()
    td = load_training_data(f, tok, seq_len=32, val_fraction=0.1, max_val_sequences=100, seed=3)
    assert td.info["val_examples"] == 4 and td.info["train_examples"] == 36
    assert td.train_ids.shape[1] == 32 and td.val_ids.shape[1] == 32
    assert td.info["train_sequences"] == len(td.train_ids) > 0
    # the held-out text never appears in the training stream
    train_text = tok.decode(td.train_ids.reshape(-1).tolist())
    val_text = tok.decode(td.val_ids.reshape(-1).tolist())
    val_docs = {d for d in docs if d in val_text}
    assert val_docs and not any(d in train_text for d in val_docs)
    again = load_training_data(f, tok, seq_len=32, val_fraction=0.1, max_val_sequences=100, seed=3)
    assert np.array_equal(again.train_ids, td.train_ids)
    other = load_training_data(f, tok, seq_len=32, val_fraction=0.1, max_val_sequences=100, seed=4)
    assert not np.array_equal(other.val_ids, td.val_ids)


def test_too_little_data(tmp_path):
    tok = make_tiny_tokenizer()
    f = write(tmp_path / "one.txt", "only one document here\n")
    with pytest.raises(DataError, match="holds 1 example"):
        load_training_data(f, tok, seq_len=16)
    f = write(tmp_path / "two.txt", "short\ntiny\n")
    with pytest.raises(DataError, match="fewer than one sequence of 64"):
        load_training_data(f, tok, seq_len=64)


def test_shared_demo_data_formats():
    """The demo files named in the README are read with the right format."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    files = {"alpaca_en_demo/alpaca_en_demo.json": ("alpaca", 999), "c4_demo/c4_demo.jsonl": ("text", 300),
             "wiki_demo/wiki_demo.txt": ("text", 30)}
    if not (root / "c4_demo").is_dir():
        pytest.skip("shared demo data not present")
    for rel, (fmt, n) in files.items():
        got_fmt, ex = read_examples(root / rel)
        assert (got_fmt, len(ex)) == (fmt, n), rel
