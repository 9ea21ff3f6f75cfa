"""Task loaders, prompt templates, bad-data errors and the fixed search/report split."""
import json
from pathlib import Path

import pytest

from hwnas.accuracy import tasks
from hwnas.accuracy.tasks import Doc, MultipleChoiceTask, get_task, parse_tasks, register_task, select, split_of
from hwnas.errors import DataError

ARC_ITEMS = [
    {"id": "Q1", "question": {"stem": "Which is a gas?", "choices": [
        {"text": "ice", "label": "A", "para": "evidence"}, {"text": "steam", "label": "B", "para": "more"},
        {"text": "rock", "label": "C", "para": ""}]}, "answerKey": "B"},
    {"id": "NYSEDREGENTS_1", "question": {"stem": "Pick two.", "choices": [
        {"text": "one", "label": "1"}, {"text": "two", "label": "2"}, {"text": "three", "label": "3"},
        {"text": "four", "label": "4"}]}, "answerKey": "2"},
]


def write_jsonl(path: Path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def write_tiny_data(root: Path) -> Path:
    """A data folder in the layout of ../shared/data, a few items per task."""
    write_jsonl(root / "arc_easy" / "test.jsonl", ARC_ITEMS)
    write_jsonl(root / "arc_easy" / "dev.jsonl", ARC_ITEMS[:1])
    write_jsonl(root / "arc_challenge" / "test.jsonl", ARC_ITEMS[::-1])
    write_jsonl(root / "arc_challenge" / "dev.jsonl", ARC_ITEMS[:1])
    write_jsonl(root / "piqa" / "valid.jsonl", [
        {"goal": "Open a jar", "sol1": "twist the lid", "sol2": "eat the lid"},
        {"goal": "Dry hands", "sol1": "use water", "sol2": "use a towel"}])
    (root / "piqa" / "valid-labels.lst").write_text("0\n1\n")
    write_jsonl(root / "boolq" / "val.jsonl", [
        {"question": "is the sky blue", "passage": "Sky -- The sky is blue.", "idx": 0, "label": True},
        {"question": "is fire cold", "passage": "Fire -- Fire is hot.", "idx": 1, "label": False}])
    for split, rows in (("test", [("What is 1+1?", "1", "2", "3", "4", "B"), ("Capital of France?", "Rome", "Paris", "Oslo", "Bern", "B")]),
                        ("dev", [("What is 2+2?", "4", "5", "6", "7", "A"), ("What is 0+1?", "0", "1", "2", "3", "B")])):
        d = root / "mmlu" / split
        d.mkdir(parents=True, exist_ok=True)
        import csv

        with open(d / f"elementary_mathematics_{split}.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)
    (root / "wikitext2_raw").mkdir(parents=True, exist_ok=True)
    (root / "wikitext2_raw" / "wiki.test.raw").write_text(" = Title = \n The quick brown fox jumps over the lazy dog . " * 20)
    return root


@pytest.fixture
def data_dir(tmp_path):
    return write_tiny_data(tmp_path / "data")


def test_arc_prompts_ignore_para_and_map_numeric_labels(data_dir):
    docs = get_task("arc_easy").docs(data_dir)
    assert docs[0] == Doc("Q1", "Question: Which is a gas?\nAnswer:", ("ice", "steam", "rock"), 1,
                          source=docs[0].source)
    assert docs[1].gold == 1 and docs[1].choices == ("one", "two", "three", "four")
    assert docs[0].source.endswith("test.jsonl:1")


def test_piqa_boolq_prompts(data_dir):
    p = get_task("piqa").docs(data_dir)
    assert [d.context for d in p] == ["Question: Open a jar\nAnswer:", "Question: Dry hands\nAnswer:"]
    assert [d.gold for d in p] == [0, 1] and p[1].choices == ("use water", "use a towel")
    b = get_task("boolq").docs(data_dir)
    assert b[0].context == "Sky -- The sky is blue.\nQuestion: is the sky blue?\nAnswer:"
    assert b[0].choices == ("no", "yes") and [d.gold for d in b] == [1, 0]


def test_mmlu_zero_and_few_shot_prompts_match_lm_eval(data_dir):
    head = "The following are multiple choice questions (with answers) about elementary mathematics.\n\n"
    item = "What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:"
    zero = get_task("mmlu").docs(data_dir, shots=0)
    assert zero[0].context == head + item and zero[0].choices == ("A", "B", "C", "D") and zero[0].gold == 1
    assert zero[0].id == "elementary_mathematics/0" and zero[0].group == "elementary_mathematics"
    two = get_task("mmlu").docs(data_dir, shots=2)
    assert two[0].context == (head + "What is 2+2?\nA. 4\nB. 5\nC. 6\nD. 7\nAnswer: A\n\n"
                              + "What is 0+1?\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: B\n\n" + item)


def test_arc_few_shot_uses_dev_examples(data_dir):
    docs = get_task("arc_easy").docs(data_dir, shots=1)
    assert docs[1].context == "Question: Which is a gas?\nAnswer: steam\n\nQuestion: Pick two.\nAnswer:"
    assert get_task("piqa").effective_shots(5) == 0 and get_task("mmlu").effective_shots(5) == 5


@pytest.mark.parametrize("task, relpath, content, message", [
    ("arc_easy", "arc_easy/test.jsonl", json.dumps(ARC_ITEMS[0]) + "\n{not json\n", "test.jsonl:2: malformed JSON"),
    ("arc_easy", "arc_easy/test.jsonl", json.dumps({**ARC_ITEMS[0], "answerKey": "E"}) + "\n",
     "test.jsonl:1: answerKey 'E' is not one of the choice labels A, B, C"),
    ("arc_easy", "arc_easy/test.jsonl", json.dumps({"id": "x", "answerKey": "A"}) + "\n", "test.jsonl:1: missing field 'question'"),
    ("piqa", "piqa/valid-labels.lst", "0\n2\n", "valid-labels.lst:2: label '2' is not one of the choices 0, 1"),
    ("piqa", "piqa/valid-labels.lst", "0\n", "valid-labels.lst:2: missing label"),
    ("boolq", "boolq/val.jsonl", json.dumps({"question": "q", "passage": "p", "label": "maybe"}) + "\n",
     "val.jsonl:1: field 'label' should be bool/int"),
    ("mmlu", "mmlu/test/elementary_mathematics_test.csv", "q,a,b,c,d,B\nq2,a,b,c,d,E\n",
     "elementary_mathematics_test.csv:2: answer 'E' is not one of the choices A, B, C, D"),
    ("mmlu", "mmlu/test/elementary_mathematics_test.csv", "q,a,b,c,d,B\n\"multi\nline\",a,b,c\n",
     "elementary_mathematics_test.csv:2: expected 6 columns, got 4"),
])
def test_bad_data_names_file_and_line(data_dir, task, relpath, content, message):
    (data_dir / relpath).write_text(content)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")) as e:
        get_task(task).docs(data_dir, shots=0)
    assert "\n" not in str(e.value)
    assert str(data_dir / relpath) in str(e.value)


def test_missing_file_and_unknown_task(data_dir):
    (data_dir / "boolq" / "val.jsonl").unlink()
    with pytest.raises(DataError, match=r"boolq/val.jsonl: file not found"):
        get_task("boolq").docs(data_dir)
    with pytest.raises(DataError, match="unknown task 'arc_medium'; known tasks: arc_easy"):
        parse_tasks("arc_easy,arc_medium")
    with pytest.raises(DataError, match="file not found"):
        get_task(str(data_dir / "missing.jsonl"))


def test_parse_tasks_dedups_and_keeps_order():
    assert [t.name for t in parse_tasks("mmlu, arc_easy,mmlu,")] == ["mmlu", "arc_easy"]


def test_local_jsonl_task_and_register(data_dir, tmp_path):
    f = tmp_path / "my_mc.jsonl"
    write_jsonl(f, [{"question": "2+2?", "choices": ["3", "4"], "answer": 1},
                    {"context": "Q: sky?\nA:", "choices": ["blue", "green"], "answer": "blue", "id": "s"}])
    t = get_task(str(f))
    docs = t.docs(data_dir)
    assert t.name == "my_mc"
    assert [(d.context, d.gold, d.id) for d in docs] == [("Question: 2+2?\nAnswer:", 1, "1"), ("Q: sky?\nA:", 0, "s")]
    write_jsonl(f, [{"question": "2+2?", "choices": ["3", "4"], "answer": 2}])
    with pytest.raises(DataError, match=r"my_mc.jsonl:1: answer 2 is not a choice index 0..1"):
        t.docs(data_dir)
    register_task(MultipleChoiceTask("toy_registered", lambda d: [Doc("a", "ctx", ("x", "y"), 0)]))
    try:
        assert get_task("toy_registered").docs(data_dir)[0].choices == ("x", "y")
    finally:
        tasks.TASKS.pop("toy_registered")


def test_split_is_fixed_disjoint_and_about_half():
    ids = [f"item{i}" for i in range(2000)]
    search = set(select("arc_easy", ids, "search"))
    report = set(select("arc_easy", ids, "report"))
    assert not search & report and len(search | report) == 2000
    assert 900 < len(search) < 1100
    # the split ignores the seed and the order of the file
    assert set(select("arc_easy", ids, "search", seed=7)) == search
    rev = ids[::-1]
    assert {rev[i] for i in select("arc_easy", rev, "search")} == {ids[i] for i in search}
    assert split_of("arc_easy", "item0") == ("search" if 0 in search else "report")
    # and depends on the task name
    assert set(select("piqa", ids, "search")) != search


def test_limit_takes_a_seeded_prefix():
    ids = [str(i) for i in range(500)]
    full = select("boolq", ids, "all", seed=3)
    assert sorted(full) == list(range(500))
    assert select("boolq", ids, "all", limit=10, seed=3) == full[:10]
    assert select("boolq", ids, "all", limit=10, seed=4) != full[:10]
    assert full[:50] != list(range(50))  # shuffled, so a limit is not the head of the file
    with pytest.raises(DataError, match="split 'dev' is not one of search, report, select, holdout, all"):
        select("boolq", ids, "dev")


def _shared_data():
    from hwnas.datadir import resolve_data_dir

    try:
        d = resolve_data_dir()
    except DataError:
        return None
    return d if (d / "arc_easy" / "test.jsonl").is_file() else None


@pytest.mark.skipif(_shared_data() is None, reason="shared data folder not present")
def test_real_data_counts():
    d = _shared_data()
    counts = {n: len(get_task(n).docs(d)) for n in tasks.MC_TASKS}
    assert counts == {"arc_easy": 2376, "arc_challenge": 1170, "mmlu": 14042, "piqa": 1838, "boolq": 3270,
                      "winogrande": 1267, "truthfulqa_mc1": 790, "truthfulqa_mc2": 790}
    assert len({d.id for d in get_task("arc_challenge").docs(d)}) == 1170


def test_report_split_is_cut_into_select_and_holdout():
    """select + holdout = report, disjoint, about 2:1; search stays what it was."""
    from hwnas.accuracy.tasks import in_split

    ids = [str(i) for i in range(3000)]
    search = set(select("arc_easy", ids, "search"))
    report = set(select("arc_easy", ids, "report"))
    sel = set(select("arc_easy", ids, "select"))
    hold = set(select("arc_easy", ids, "holdout"))
    assert sel | hold == report and not sel & hold and not report & search
    assert 0.6 < len(sel) / len(report) < 0.73
    assert all(in_split("arc_easy", ids[i], "select") for i in sel)
