"""Cross-check hwnas's scoring against lm-evaluation-harness on the first N items of a task.

Both run offline on the same model (the default SmolLM2-135M-Instruct with hwnas's correct
tokenizer, saved as a plain Hugging Face folder): lm-eval through its `hf` model type and a
local YAML task over a local jsonl, hwnas through `TaskSuite`. For ARC-Easy, BoolQ and PIQA the
YAML writes out the stock lm-eval prompt; for WinoGrande and TruthfulQA MC1/MC2 it *includes*
lm-eval's own task file (its preprocess_winogrande.py partial scoring, its truthfulqa prompt and
`process_results_mc2`) and only points the dataset at the local copy. Reports both accuracies
(TruthfulQA MC2: the mean probability mass on the true answers), the per-item agreement, the
largest log-likelihood difference and whether every prompt string lm-eval built equals hwnas's.
The two must agree within 1 point at N >= 200.

    .venv/bin/python bench/lm_eval_crosscheck.py --n 250 [--task arc_easy|boolq|piqa|winogrande|truthfulqa_mc1|truthfulqa_mc2]
        [--model default] [--threads 1] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# offline, before anything imports huggingface_hub / datasets
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TASK_YAML = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: multiple_choice
test_split: test
doc_to_text: "{text}"
doc_to_target: "{target}"
doc_to_choice: {choice}
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def _arc_records(data_dir: Path, n: int) -> list[dict]:
    out = []
    for line in (data_dir / "arc_easy" / "test.jsonl").read_text().splitlines()[:n]:
        rec = json.loads(line)
        ch = rec["question"]["choices"]
        out.append({"id": rec["id"], "question": rec["question"]["stem"],
                    "choices": {"text": [c["text"] for c in ch], "label": [c["label"] for c in ch]},
                    "answerKey": rec["answerKey"]})
    return out


def _boolq_records(data_dir: Path, n: int) -> list[dict]:
    out = []
    for k, line in enumerate((data_dir / "boolq" / "val.jsonl").read_text().splitlines()[:n], 1):
        rec = json.loads(line)
        out.append({"id": str(rec.get("idx", k)), "passage": rec["passage"], "question": rec["question"],
                    "label": int(rec["label"])})
    return out


def _piqa_records(data_dir: Path, n: int) -> list[dict]:
    labels = (data_dir / "piqa" / "valid-labels.lst").read_text().splitlines()
    out = []
    for k, line in enumerate((data_dir / "piqa" / "valid.jsonl").read_text().splitlines()[:n], 1):
        rec = json.loads(line)
        out.append({"id": str(k), "goal": rec["goal"], "sol1": rec["sol1"], "sol2": rec["sol2"], "label": int(labels[k - 1])})
    return out


def _winogrande_records(data_dir: Path, n: int) -> list[dict]:
    out = []
    for line in (data_dir / "winogrande" / "dev.jsonl").read_text().splitlines()[:n]:
        rec = json.loads(line)
        out.append({"id": rec["qID"], "sentence": rec["sentence"], "option1": rec["option1"],
                    "option2": rec["option2"], "answer": str(rec["answer"])})
    return out


def _truthfulqa_records(data_dir: Path, n: int) -> list[dict]:
    """mc_task.json in the Hugging Face truthful_qa/multiple_choice schema lm-eval's yaml reads."""
    out = []
    for i, rec in enumerate(json.loads((data_dir / "truthfulqa" / "mc_task.json").read_text())[:n]):
        out.append({"id": str(i), "question": rec["question"],
                    **{k: {"choices": list(rec[k]), "labels": [int(v) for v in rec[k].values()]}
                       for k in ("mc1_targets", "mc2_targets")}})
    return out


# lm-eval's own task files, included; only the dataset is replaced by the local jsonl
STOCK_YAML = """\
include: {stock}
task: {name}
dataset_path: json
dataset_name: null
dataset_kwargs:
  data_files:
    validation: {data}
training_split: null
validation_split: validation
test_split: null
"""
STOCK = {
    "winogrande": (_winogrande_records, "winogrande/default.yaml"),
    "truthfulqa_mc1": (_truthfulqa_records, "truthfulqa/truthfulqa_mc1.yaml"),
    "truthfulqa_mc2": (_truthfulqa_records, "truthfulqa/truthfulqa_mc2.yaml"),
}

# the stock lm-eval 0.4 templates of each task (arc/arc_easy.yaml, super_glue/boolq/default.yaml, piqa/piqa.yaml)
TASKS = {
    "arc_easy": (_arc_records, {"text": "Question: {{{{question}}}}\\nAnswer:", "target": "{{{{choices.label.index(answerKey)}}}}",
                                "choice": '"{{{{choices.text}}}}"'}),
    "boolq": (_boolq_records, {"text": "{{{{passage}}}}\\nQuestion: {{{{question}}}}?\\nAnswer:", "target": "{{{{label}}}}",
                               "choice": '["no", "yes"]'}),
    "piqa": (_piqa_records, {"text": "Question: {{{{goal}}}}\\nAnswer:", "target": "{{{{label}}}}",
                             "choice": '"{{{{[sol1, sol2]}}}}"'}),
}


def _lm_eval_prompts(sample: dict) -> list[tuple[str, str]]:
    """(context, continuation) of every request lm-eval built for one logged sample."""
    args = sample.get("arguments")
    if isinstance(args, dict):
        args = [tuple(v.values()) if isinstance(v, dict) else tuple(v) for v in args.values()]
    return [(str(a[0]), str(a[1])) for a in (args or [])]


def _hwnas_prompts(doc) -> list[tuple[str, str]]:
    """The (context, continuation) strings hwnas scores for a Doc (before lm-eval's trailing-space move)."""
    from hwnas.accuracy.tasks import TARGET_DELIMITER

    if doc.continuation:
        return [(doc.context + c, TARGET_DELIMITER + doc.continuation) for c in doc.choices]
    return [(doc.context, TARGET_DELIMITER + c) for c in doc.choices]


def _write_task(tmp: Path, task: str, data_dir: Path, n: int) -> list[dict]:
    """The items as a local jsonl and the lm-eval YAML task `hwnas_local` over it; returns the records."""
    import lm_eval

    (tmp / "tasks").mkdir()
    if task in STOCK:
        records_fn, stock = STOCK[task]
        yaml = STOCK_YAML.format(stock=Path(lm_eval.__file__).parent / "tasks" / stock, name="hwnas_local",
                                 data=tmp / "items.jsonl")
    else:
        records_fn, fields = TASKS[task]
        yaml = TASK_YAML.format(name="hwnas_local", data=tmp / "items.jsonl", **fields).replace(
            "{{{{", "{{").replace("}}}}", "}}")
    records = records_fn(data_dir, n)
    with open(tmp / "items.jsonl", "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    (tmp / "tasks" / "hwnas_local.yaml").write_text(yaml)
    return records


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=250, help="first N items of the task's file")
    ap.add_argument("--task", choices=sorted([*TASKS, *STOCK]), default="arc_easy")
    ap.add_argument("--model", default="default")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=16, help="lm-eval batch size")
    ap.add_argument("--out", default=None, help="write the summary JSON here")
    args = ap.parse_args()

    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from hwnas.accuracy.evaluate import TaskSuite, resolve_precision, task_metrics
    from hwnas.accuracy.tasks import MultipleChoiceTask, get_task
    from hwnas.datadir import resolve_data_dir
    from hwnas.model.loading import load_model

    data_dir = resolve_data_dir(args.data_dir)
    task = get_task(args.task)
    docs = task.docs(data_dir)[: args.n]
    loaded = load_model(args.model)
    summary: dict = {"task": args.task, "n": len(docs), "model": loaded.source.to_dict(), "threads": torch.get_num_threads(),
                     "scoring": task.scoring}
    if args.task in STOCK:
        summary["lm_eval_task_file"] = f"lm_eval/tasks/{STOCK[args.task][1]} (included; dataset replaced by the local file)"

    with tempfile.TemporaryDirectory(prefix="hwnas-lmeval-") as tmp:
        tmp = Path(tmp)
        # 1. the model + correct tokenizer as a plain HF folder; the items as a local jsonl
        model_dir = tmp / "model"
        loaded.model.save_pretrained(model_dir)
        loaded.tokenizer.save_pretrained(model_dir)
        _write_task(tmp, args.task, data_dir, args.n)

        # 2. lm-eval
        import lm_eval
        from lm_eval.tasks import TaskManager

        t0 = time.perf_counter()
        res = lm_eval.simple_evaluate(
            model="hf", model_args={"pretrained": str(model_dir), "dtype": "float32"},
            tasks=["hwnas_local"], task_manager=TaskManager(include_path=str(tmp / "tasks")),
            batch_size=args.batch_size, device="cpu", log_samples=True,
        )
        lm_sec = time.perf_counter() - t0
        r = res["results"]["hwnas_local"]
        lm_lls, lm_prompts = {}, {}
        for smp in res["samples"]["hwnas_local"]:
            lm_lls[smp["doc"]["id"]] = np.array([float(x[0]) for x in smp["filtered_resps"]])
            lm_prompts[smp["doc"]["id"]] = _lm_eval_prompts(smp)
        summary["lm_eval"] = {"version": getattr(lm_eval, "__version__", None), "acc": r["acc,none"],
                              "acc_norm": r.get("acc_norm,none"), "seconds": round(lm_sec, 1)}

    # 3. the prompts: every (context, continuation) string lm-eval built equals hwnas's
    ids = [str(d.id) for d in docs]
    same_prompts = [lm_prompts.get(i) == _hwnas_prompts(d) for i, d in zip(ids, docs)]
    summary["prompts_identical_fraction"] = float(np.mean(same_prompts)) if same_prompts else None

    # 4. hwnas on the same items, fp32 and the default precision
    first_n = MultipleChoiceTask("first_n", lambda _d: docs, scoring=task.scoring)
    suite = TaskSuite(loaded.tokenizer, [first_n], split="all", data_dir=data_dir)
    reqs = suite.data["first_n"].requests
    for prec in ("fp32", "auto"):
        t0 = time.perf_counter()
        items = suite.items(loaded.model, precision=prec)["first_n"]
        sec = time.perf_counter() - t0
        m = task_metrics(items)
        diffs = [float(np.abs(ll - lm_lls[q.id]).max()) for ll, q in zip(items.lls, reqs)]
        same_pred = np.mean([int(np.argmax(ll)) == int(np.argmax(lm_lls[q.id])) for ll, q in zip(items.lls, reqs)])
        out = {"acc": m["acc"], "acc_norm": m["acc_norm"], "acc_stderr": m["acc_stderr"], "seconds": round(sec, 1),
               "acc_diff_points": round(100 * (m["acc"] - summary["lm_eval"]["acc"]), 3),
               "same_prediction_fraction": float(same_pred),
               "max_abs_loglik_diff": max(diffs), "median_abs_loglik_diff": float(np.median(diffs))}
        if summary["lm_eval"]["acc_norm"] is not None:
            out["acc_norm_diff_points"] = round(100 * (m["acc_norm"] - summary["lm_eval"]["acc_norm"]), 3)
        summary[f"hwnas_{resolve_precision(prec)}"] = out
    ok = all(abs(v["acc_diff_points"]) <= 1.0 for k, v in summary.items() if k.startswith("hwnas_"))
    summary["agree_within_1_point"] = bool(ok)
    import os as _os

    summary["load_average"] = list(_os.getloadavg())
    print(json.dumps(summary, indent=2))
    if args.out:
        from hwnas.io import write_json_atomic

        write_json_atomic(args.out, summary)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
