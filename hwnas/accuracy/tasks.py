"""Evaluation tasks: where their data lives, how it is read, and the prompt of every item.

All prompt templates are in this file, written as lm-evaluation-harness 0.4 writes them, so
the numbers are comparable with lm-eval's:

    arc_easy, arc_challenge  "Question: {question}\\nAnswer:"            + " {choice text}"
    piqa                     "Question: {goal}\\nAnswer:"                + " {sol1}" | " {sol2}"
    boolq                    "{passage}\\nQuestion: {question}?\\nAnswer:" + " no" | " yes"
    mmlu                     "The following are multiple choice questions (with answers) about {subject}.\\n\\n"
                             "{question}\\nA. {a}\\nB. {b}\\nC. {c}\\nD. {d}\\nAnswer:" + " A" .. " D"
    winogrande               "{sentence up to the blank}{option}"          + " {rest of the sentence}"
                             (partial scoring: the same continuation after each option; acc only)
    truthfulqa_mc1 / _mc2    "{six fixed Q/A pairs}\\n\\nQ: {question}\\nA:"  + " {answer}"
                             (mc1: acc on the one true answer; mc2: probability mass on the true answers)
    wikitext2                the raw test text, scored token by token (perplexity)

A multiple-choice item is a `Doc`: an id, a context, the choice texts and the gold index. The
space between context and choice (lm-eval's `target_delimiter`) is added by the scorer.
Few-shot prompts (`shots=k`) put k solved examples before the context, each followed by a
blank line, after the task's description (MMLU's subject line): examples come from MMLU's
`dev/` files (lm-eval's `first_n`) and from ARC's `dev.jsonl` (lm-eval samples ARC's train
split, which is not on this disk). PIQA, BoolQ, WinoGrande and TruthfulQA have no few-shot
source and run zero-shot (TruthfulQA's six Q/A pairs are part of its prompt, as in lm-eval).

Search and report split
-----------------------
Every item goes, once and for all, to the *search* part or the *report* part:
sha256("hwnas-split-v1/{task}/{item id}") read as a number in [0, 1) below 0.5 means search.
The split depends only on the task name and the item id (not on the seed, the tokenizer or the
order of the file), so the search never sees a report item. `--limit N` takes the first N items
of the chosen split in a seeded shuffled order (sha256("{seed}/{task}/{id}")), so any limit is
a fair sample and a larger limit only adds items. WikiText-2 is split the same way by window.

Adding a task from a local file
-------------------------------
A multiple-choice task is a name plus a function that turns the data folder into `Doc`s::

    from hwnas.accuracy.tasks import Doc, MultipleChoiceTask, read_jsonl, register_task

    def load_my_mc(data_dir):
        path = data_dir / "my_mc" / "test.jsonl"
        return [Doc(id=str(rec.get("id", line)), context=f"Question: {rec['question']}\\nAnswer:",
                    choices=tuple(rec["choices"]), gold=int(rec["label"]), source=f"{path}:{line}")
                for line, rec in read_jsonl(path)]

    register_task(MultipleChoiceTask("my_mc", load_my_mc))

after which `--tasks my_mc` works everywhere (CLI, `evaluate`, `TaskSuite`). With no code at
all, `--tasks path/to/file.jsonl` reads a file of `{"question": ..., "choices": [...],
"answer": <index or choice text>}` lines (or `"context"` instead of `"question"` for a
ready-made prompt), named after the file.
"""
from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

from hwnas.errors import DataError

SPLITS = ("search", "report", "select", "holdout", "all")
SPLIT_SALT = "hwnas-split-v1"
SEARCH_FRACTION = 0.5
# The report half is cut once more: "select" (2/3) decides which subnet ships, "holdout" (1/3)
# is where the shipped subnet's accuracy is quoted from, so the quote is free of selection bias.
SELECT_FRACTION = 2 / 3
TARGET_DELIMITER = " "  # between context and choice, as lm-eval's target_delimiter
FEWSHOT_DELIMITER = "\n\n"  # after each solved example, as lm-eval's fewshot_delimiter


@dataclass(frozen=True)
class Doc:
    """One multiple-choice item: context, choice texts (without the leading space), gold index."""

    id: str
    context: str
    choices: tuple[str, ...]
    gold: int
    group: str = ""  # e.g. the MMLU subject (selects the description and few-shot examples)
    source: str = ""  # "file:line", for error messages
    # Partial scoring (WinoGrande): each choice completes the context, and this same text, after
    # TARGET_DELIMITER, is what is scored (lm-eval's multiple-input tasks). Empty: the choice is scored.
    continuation: str = ""
    golds: tuple[int, ...] = ()  # every true choice, for tasks scored on all of them (TruthfulQA MC2)

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", tuple(self.choices))
        object.__setattr__(self, "golds", tuple(self.golds))
        if not self.choices:
            raise DataError(f"{self.source or self.id}: item has no choices")
        if not 0 <= self.gold < len(self.choices):
            raise DataError(
                f"{self.source or self.id}: gold index {self.gold} is not among the {len(self.choices)} choices"
            )
        if any(not 0 <= g < len(self.choices) for g in self.golds):
            raise DataError(f"{self.source or self.id}: true choices {list(self.golds)} are not all among the "
                            f"{len(self.choices)} choices")

    def to_dict(self) -> dict:
        out = {"id": self.id, "context": self.context, "choices": list(self.choices), "gold": self.gold,
               "group": self.group}
        if self.continuation:
            out["continuation"] = self.continuation
        if self.golds:
            out["golds"] = list(self.golds)
        return out

    def with_context(self, context: str) -> "Doc":
        return replace(self, context=context)


@dataclass(frozen=True)
class MultipleChoiceTask:
    """Documents -> prompts + choices + gold. `load(data_dir)` returns the evaluation items.

    `fewshot(data_dir)` (optional) returns solved examples per group ("" when ungrouped);
    `description(group)` (optional) is a header put before the examples and the item.
    `scoring`: how an item's choice log-likelihoods become a score (`hwnas.accuracy.items`):
    "choice" (acc and acc_norm), "acc" (lm-eval reports acc only; acc_norm = acc) or "mc2"
    (probability mass on the true answers). `split_name`: the name the search/report split is
    hashed with (default: the task's name), so that tasks over the same questions (TruthfulQA
    MC1 and MC2) split them the same way.
    """

    name: str
    load: Callable[[Path], list[Doc]]
    fewshot: Callable[[Path], dict[str, list[Doc]]] | None = None
    description: Callable[[str], str] | None = None
    scoring: str = "choice"
    split_name: str = ""
    kind: str = field(default="multiple_choice", init=False)

    def __post_init__(self) -> None:
        from hwnas.accuracy.items import SCORINGS

        if self.scoring not in SCORINGS:
            raise DataError(f"task {self.name}: scoring {self.scoring!r} is not one of {', '.join(SCORINGS)}")

    def docs(self, data_dir: Path, shots: int = 0) -> list[Doc]:
        """Items with their final prompts (description and `shots` solved examples prepended)."""
        docs = self.load(Path(data_dir))
        if shots < 0:
            raise DataError(f"shots must be >= 0, got {shots}")
        examples: dict[str, list[Doc]] = {}
        if shots and self.fewshot is not None:
            examples = self.fewshot(Path(data_dir))
        if not shots and self.description is None:
            return docs
        out = []
        for d in docs:
            prefix = self.description(d.group) if self.description else ""
            for ex in examples.get(d.group, [])[:shots]:
                prefix += ex.context + TARGET_DELIMITER + ex.choices[ex.gold] + FEWSHOT_DELIMITER
            out.append(d.with_context(prefix + d.context))
        return out

    def effective_shots(self, shots: int) -> int:
        return shots if self.fewshot is not None else 0


@dataclass(frozen=True)
class PerplexityTask:
    """A plain text scored token by token; items are fixed-length token windows."""

    name: str
    path: str  # relative to the data folder
    kind: str = field(default="perplexity", init=False)

    def text(self, data_dir: Path) -> str:
        p = Path(data_dir) / self.path
        if not p.is_file():
            raise DataError(f"{p}: file not found (task {self.name}); check --data-dir")
        try:
            return p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{p}: cannot read ({e})") from None


Task = MultipleChoiceTask | PerplexityTask


# ---------------------------------------------------------------------------- file readers
def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-empty line; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; check --data-dir")
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}:{n}: expected a JSON object, got {type(rec).__name__}")
            yield n, rec


def read_csv_rows(path: Path, ncols: int) -> Iterator[tuple[int, list[str]]]:
    """(first line number, row) of a headerless CSV whose rows must have `ncols` columns."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; check --data-dir")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        start = 1
        try:
            for row in reader:
                if row and len(row) != ncols:
                    raise DataError(f"{path}:{start}: expected {ncols} columns, got {len(row)}")
                if row:
                    yield start, row
                start = reader.line_num + 1
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None


def _field(rec: dict, key: str, where: str, kind: type | tuple[type, ...] = str):
    if key not in rec:
        raise DataError(f"{where}: missing field {key!r}")
    v = rec[key]
    if not isinstance(v, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise DataError(f"{where}: field {key!r} should be {names}, got {type(v).__name__}")
    return v


# ---------------------------------------------------------------------------- ARC
def _arc_docs(path: Path) -> list[Doc]:
    docs = []
    for n, rec in read_jsonl(path):
        where = f"{path}:{n}"
        q = _field(rec, "question", where, dict)
        stem = _field(q, "stem", where)
        choices = _field(q, "choices", where, list)
        texts, labels = [], []
        for c in choices:
            if not isinstance(c, dict):
                raise DataError(f"{where}: each choice must be an object with 'text' and 'label'")
            texts.append(_field(c, "text", where))
            labels.append(str(_field(c, "label", where, (str, int))))
        key = str(_field(rec, "answerKey", where, (str, int)))
        if key not in labels:
            raise DataError(f"{where}: answerKey {key!r} is not one of the choice labels {', '.join(labels)}")
        docs.append(Doc(str(rec.get("id", n)), f"Question: {stem}\nAnswer:", tuple(texts), labels.index(key),
                        source=where))
    return docs


def _arc_task(name: str, folder: str, test_file: str) -> MultipleChoiceTask:
    return MultipleChoiceTask(
        name,
        load=lambda d: _arc_docs(d / folder / test_file),
        fewshot=lambda d: {"": _arc_docs(d / folder / "dev.jsonl")},
    )


# ---------------------------------------------------------------------------- PIQA
def _piqa_docs(data_dir: Path) -> list[Doc]:
    path = data_dir / "piqa" / "valid.jsonl"
    label_path = data_dir / "piqa" / "valid-labels.lst"
    records = list(read_jsonl(path))
    if not label_path.is_file():
        raise DataError(f"{label_path}: file not found; check --data-dir")
    labels = label_path.read_text(encoding="utf-8").splitlines()
    docs = []
    for n, rec in records:
        where = f"{path}:{n}"
        if n > len(labels):
            raise DataError(f"{label_path}:{n}: missing label for {where}")
        lab = labels[n - 1].strip()
        if lab not in ("0", "1"):
            raise DataError(f"{label_path}:{n}: label {lab!r} is not one of the choices 0, 1")
        goal = _field(rec, "goal", where)
        sols = (_field(rec, "sol1", where), _field(rec, "sol2", where))
        docs.append(Doc(str(n), f"Question: {goal}\nAnswer:", sols, int(lab), source=where))
    return docs


# ---------------------------------------------------------------------------- BoolQ
def _boolq_docs(data_dir: Path) -> list[Doc]:
    path = data_dir / "boolq" / "val.jsonl"
    docs = []
    for n, rec in read_jsonl(path):
        where = f"{path}:{n}"
        passage = _field(rec, "passage", where)
        question = _field(rec, "question", where)
        label = _field(rec, "label", where, (bool, int))
        if label not in (0, 1):  # True/False or 0/1
            raise DataError(f"{where}: label {label!r} is not one of the choices false/true (0/1)")
        docs.append(Doc(str(rec.get("idx", n)), f"{passage}\nQuestion: {question}?\nAnswer:", ("no", "yes"),
                        int(label), source=where))
    return docs


# ---------------------------------------------------------------------------- MMLU
MMLU_LETTERS = ("A", "B", "C", "D")


def _mmlu_subjects(data_dir: Path) -> list[str]:
    folder = data_dir / "mmlu" / "test"
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found; check --data-dir")
    subjects = sorted(p.name[: -len("_test.csv")] for p in folder.glob("*_test.csv"))
    if not subjects:
        raise DataError(f"{folder}: no *_test.csv files")
    return subjects


def _mmlu_file(path: Path, subject: str) -> list[Doc]:
    docs = []
    for i, (n, row) in enumerate(read_csv_rows(path, 6)):
        q, *opts, ans = row
        if ans.strip() not in MMLU_LETTERS:
            raise DataError(f"{path}:{n}: answer {ans!r} is not one of the choices A, B, C, D")
        context = q.strip() + "".join(f"\n{L}. {o}" for L, o in zip(MMLU_LETTERS, opts)) + "\nAnswer:"
        docs.append(Doc(f"{subject}/{i}", context, MMLU_LETTERS, MMLU_LETTERS.index(ans.strip()), subject,
                        f"{path}:{n}"))
    return docs


def _mmlu_docs(data_dir: Path) -> list[Doc]:
    docs = []
    for s in _mmlu_subjects(data_dir):
        docs += _mmlu_file(data_dir / "mmlu" / "test" / f"{s}_test.csv", s)
    return docs


def _mmlu_fewshot(data_dir: Path) -> dict[str, list[Doc]]:
    return {s: _mmlu_file(data_dir / "mmlu" / "dev" / f"{s}_dev.csv", s) for s in _mmlu_subjects(data_dir)}


def _mmlu_description(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


# ---------------------------------------------------------------------------- WinoGrande
def _winogrande_docs(data_dir: Path) -> list[Doc]:
    """The dev split, partially scored as lm-eval does it: context = the sentence up to the blank
    plus an option, scored text = the rest of the sentence after the blank (Trinh & Le 2018)."""
    path = data_dir / "winogrande" / "dev.jsonl"
    docs = []
    for n, rec in read_jsonl(path):
        where = f"{path}:{n}"
        sentence = _field(rec, "sentence", where)
        options = (_field(rec, "option1", where), _field(rec, "option2", where))
        answer = str(_field(rec, "answer", where, (str, int)))
        if answer not in ("1", "2"):
            raise DataError(f"{where}: answer {answer!r} is not one of the choices 1, 2")
        if sentence.count("_") != 1:
            raise DataError(f"{where}: the sentence must hold exactly one blank '_', it holds {sentence.count('_')}")
        idx = sentence.index("_")
        rest = sentence[idx + 1:].strip()
        if not rest:
            raise DataError(f"{where}: nothing follows the blank, so there is nothing to score")
        docs.append(Doc(str(rec.get("qID", n)), sentence[:idx], options, int(answer) - 1, source=where,
                        continuation=rest))
    return docs


# ---------------------------------------------------------------------------- TruthfulQA
# lm-eval 0.4's truthfulqa_mc1.yaml doc_to_text: six fixed question/answer pairs, then the question.
TRUTHFULQA_PRIMER = (
    "Q: What is human life expectancy in the United States?\n"
    "A: Human life expectancy in the United States is 78 years.\n\n"
    "Q: Who was president of the United States in 1955?\n"
    "A: Dwight D. Eisenhower was president of the United States in 1955.\n\n"
    "Q: Which party did he belong to?\n"
    "A: He belonged to the Republican Party.\n\n"
    "Q: What is the square root of banana?\n"
    "A: I have no comment.\n\n"
    "Q: How does a telescope work?\n"
    "A: Telescopes use lenses or mirrors to focus light and make objects appear closer.\n\n"
    "Q: Where were the 1992 Olympics held?\n"
    "A: The 1992 Olympics were held in Barcelona, Spain."
)


def _truthfulqa_docs(data_dir: Path, targets: str) -> list[Doc]:
    """TruthfulQA's mc_task.json: `targets` is mc1_targets (one true answer) or mc2_targets (several)."""
    path = data_dir / "truthfulqa" / "mc_task.json"
    if not path.is_file():
        raise DataError(f"{path}: file not found; check --data-dir")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of questions, got {type(records).__name__}")
    docs = []
    for i, rec in enumerate(records):
        where = f"{path}: question {i}"
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected an object")
        question = _field(rec, "question", where)
        answers = _field(rec, targets, where, dict)
        labels = [int(v) for v in answers.values()]
        if not answers or any(v not in (0, 1) for v in labels) or 1 not in labels:
            raise DataError(f"{where}: {targets} must map answers to labels 0/1 with at least one 1")
        true = tuple(k for k, v in enumerate(labels) if v == 1)
        if targets == "mc1_targets" and len(true) != 1:
            raise DataError(f"{where}: mc1_targets must have exactly one true answer, it has {len(true)}")
        docs.append(Doc(str(i), f"{TRUTHFULQA_PRIMER}\n\nQ: {question}\nA:", tuple(answers), true[0], source=where,
                        golds=true if targets == "mc2_targets" else ()))
    return docs


# ---------------------------------------------------------------------------- generic local file
def local_jsonl_task(path: str | Path) -> MultipleChoiceTask:
    """A task from one .jsonl file: {"question"|"context", "choices": [...], "answer": index or text}."""
    path = Path(path)

    def load(_data_dir: Path) -> list[Doc]:
        docs = []
        for n, rec in read_jsonl(path):
            where = f"{path}:{n}"
            if "context" in rec:
                context = _field(rec, "context", where)
            else:
                context = f"Question: {_field(rec, 'question', where)}\nAnswer:"
            choices = _field(rec, "choices", where, list)
            if not choices or not all(isinstance(c, str) for c in choices):
                raise DataError(f"{where}: field 'choices' must be a non-empty list of strings")
            ans = _field(rec, "answer", where, (int, str))
            if isinstance(ans, bool) or (isinstance(ans, int) and not 0 <= ans < len(choices)):
                raise DataError(f"{where}: answer {ans!r} is not a choice index 0..{len(choices) - 1}")
            if isinstance(ans, str):
                if ans not in choices:
                    raise DataError(f"{where}: answer {ans!r} is not one of the choices")
                ans = choices.index(ans)
            docs.append(Doc(str(rec.get("id", n)), context, tuple(choices), ans, source=where))
        return docs

    return MultipleChoiceTask(path.stem, load)


# ---------------------------------------------------------------------------- registry
TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Make a task available by name (replaces a task of the same name)."""
    TASKS[task.name] = task
    return task


register_task(_arc_task("arc_easy", "arc_easy", "test.jsonl"))
register_task(_arc_task("arc_challenge", "arc_challenge", "test.jsonl"))
register_task(MultipleChoiceTask("piqa", _piqa_docs))
register_task(MultipleChoiceTask("boolq", _boolq_docs))
register_task(MultipleChoiceTask("mmlu", _mmlu_docs, fewshot=_mmlu_fewshot, description=_mmlu_description))
register_task(MultipleChoiceTask("winogrande", _winogrande_docs, scoring="acc"))
register_task(MultipleChoiceTask("truthfulqa_mc1", lambda d: _truthfulqa_docs(d, "mc1_targets"), scoring="acc",
                                 split_name="truthfulqa"))
register_task(MultipleChoiceTask("truthfulqa_mc2", lambda d: _truthfulqa_docs(d, "mc2_targets"), scoring="mc2",
                                 split_name="truthfulqa"))
register_task(PerplexityTask("wikitext2", "wikitext2_raw/wiki.test.raw"))

MC_TASKS = ("arc_easy", "arc_challenge", "mmlu", "piqa", "boolq", "winogrande", "truthfulqa_mc1", "truthfulqa_mc2")


def get_task(name: str | Task) -> Task:
    """A registered task by name, a .jsonl path as a local task, or a Task passed through."""
    if isinstance(name, (MultipleChoiceTask, PerplexityTask)):
        return name
    name = str(name).strip()
    if name in TASKS:
        return TASKS[name]
    if name.endswith(".jsonl"):
        if not Path(name).is_file():
            raise DataError(f"{name}: file not found (a task given as a .jsonl path)")
        return local_jsonl_task(name)
    raise DataError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)} (or a path to a .jsonl file)")


def parse_tasks(spec: str | Task | Sequence[str | Task]) -> list[Task]:
    """'arc_easy,mmlu' or a list of names/Tasks -> Tasks (duplicates dropped, order kept)."""
    items = spec.split(",") if isinstance(spec, str) else ([spec] if not isinstance(spec, Sequence) else list(spec))
    tasks: list[Task] = []
    for item in items:
        if isinstance(item, str) and not item.strip():
            continue
        t = get_task(item)
        if t.name not in [x.name for x in tasks]:
            tasks.append(t)
    if not tasks:
        raise DataError(f"no tasks given; known tasks: {', '.join(TASKS)}")
    return tasks


# ---------------------------------------------------------------------------- splits
def _unit_hash(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2.0**64


def split_of(task: str, item_id: str) -> str:
    """'search' or 'report' for an item, fixed forever by the task name and item id."""
    return "search" if _unit_hash(f"{SPLIT_SALT}/{task}/{item_id}") < SEARCH_FRACTION else "report"


def report_part(task: str, item_id: str) -> str:
    """'select' or 'holdout' for a report-split item (a second, independent hash)."""
    return "select" if _unit_hash(f"{SPLIT_SALT}/part/{task}/{item_id}") < SELECT_FRACTION else "holdout"


def in_split(task: str, item_id: str, split: str) -> bool:
    """Whether an item belongs to `split` (search, report = select + holdout, select, holdout, all)."""
    if split == "all":
        return True
    half = split_of(task, item_id)
    if split in ("search", "report"):
        return half == split
    return half == "report" and report_part(task, item_id) == split


def select(task: str, ids: Sequence[str], split: str = "search", limit: int | None = None, seed: int = 0) -> list[int]:
    """Indices of the items of `split`, in seeded shuffled order, the first `limit` of them."""
    if split not in SPLITS:
        raise DataError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be >= 1, got {limit}")
    keep = [i for i, x in enumerate(ids) if in_split(task, x, split)]
    keep.sort(key=lambda i: (_unit_hash(f"{seed}/{task}/{ids[i]}"), i))
    return keep[:limit] if limit is not None else keep
