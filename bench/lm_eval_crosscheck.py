"""Cross-check hwnas's scoring against lm-evaluation-harness on the first N items of ARC-Easy (or BoolQ, PIQA).

Both run offline on the same model (the default SmolLM2-135M-Instruct with hwnas's correct
tokenizer, saved as a plain Hugging Face folder): lm-eval through its `hf` model type and a
local YAML task (the stock lm-eval prompt of the task over a local jsonl), hwnas through `TaskSuite`.
Reports both accuracies, the per-item agreement and the largest log-likelihood difference.
The two must agree within 1 point at N >= 200.

    .venv/bin/python bench/lm_eval_crosscheck.py --n 250 [--task arc_easy|boolq|piqa] [--model default] [--threads 1] [--out FILE]
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


# the stock lm-eval 0.4 templates of each task (arc/arc_easy.yaml, super_glue/boolq/default.yaml, piqa/piqa.yaml)
TASKS = {
    "arc_easy": (_arc_records, {"text": "Question: {{{{question}}}}\\nAnswer:", "target": "{{{{choices.label.index(answerKey)}}}}",
                                "choice": '"{{{{choices.text}}}}"'}),
    "boolq": (_boolq_records, {"text": "{{{{passage}}}}\\nQuestion: {{{{question}}}}?\\nAnswer:", "target": "{{{{label}}}}",
                               "choice": '["no", "yes"]'}),
    "piqa": (_piqa_records, {"text": "Question: {{{{goal}}}}\\nAnswer:", "target": "{{{{label}}}}",
                             "choice": '"{{{{[sol1, sol2]}}}}"'}),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=250, help="first N items of the task's file")
    ap.add_argument("--task", choices=sorted(TASKS), default="arc_easy")
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
    from hwnas.accuracy.evaluate import TaskSuite, mc_metrics, resolve_precision
    from hwnas.accuracy.tasks import MultipleChoiceTask, get_task
    from hwnas.datadir import resolve_data_dir
    from hwnas.model.loading import load_model

    data_dir = resolve_data_dir(args.data_dir)
    docs = get_task(args.task).docs(data_dir)[: args.n]
    loaded = load_model(args.model)
    summary: dict = {"task": args.task, "n": len(docs), "model": loaded.source.to_dict(), "threads": torch.get_num_threads()}

    with tempfile.TemporaryDirectory(prefix="hwnas-lmeval-") as tmp:
        tmp = Path(tmp)
        # 1. the model + correct tokenizer as a plain HF folder; the items as a local jsonl (ai2_arc schema)
        model_dir = tmp / "model"
        loaded.model.save_pretrained(model_dir)
        loaded.tokenizer.save_pretrained(model_dir)
        records, fields = TASKS[args.task]
        with open(tmp / "items.jsonl", "w") as f:
            for rec in records(data_dir, args.n):
                f.write(json.dumps(rec) + "\n")
        (tmp / "tasks").mkdir()
        (tmp / "tasks" / "hwnas_local.yaml").write_text(
            TASK_YAML.format(name="hwnas_local", data=tmp / "items.jsonl", **fields).replace("{{{{", "{{").replace("}}}}", "}}"))

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
        lm_lls = {}
        for s in res["samples"]["hwnas_local"]:
            lm_lls[s["doc"]["id"]] = np.array([float(x[0]) for x in s["filtered_resps"]])
        summary["lm_eval"] = {"version": lm_eval.__version__ if hasattr(lm_eval, "__version__") else None,
                              "acc": r["acc,none"], "acc_norm": r["acc_norm,none"], "seconds": round(lm_sec, 1)}

    # 3. hwnas on the same items, fp32 and the default precision
    task = MultipleChoiceTask("first_n", lambda _d: docs)
    suite = TaskSuite(loaded.tokenizer, [task], split="all", data_dir=data_dir)
    reqs = suite.data["first_n"].requests
    for prec in ("fp32", "auto"):
        t0 = time.perf_counter()
        lls = suite.loglikelihoods(loaded.model, precision=prec)["first_n"]
        sec = time.perf_counter() - t0
        m = mc_metrics(lls, [q.gold for q in reqs], [np.array(q.choice_bytes, dtype=float) for q in reqs])
        diffs = [float(np.abs(ll - lm_lls[q.id]).max()) for ll, q in zip(lls, reqs)]
        same_pred = np.mean([int(np.argmax(ll)) == int(np.argmax(lm_lls[q.id])) for ll, q in zip(lls, reqs)])
        summary[f"hwnas_{resolve_precision(prec)}"] = {
            "acc": m["acc"], "acc_norm": m["acc_norm"], "acc_stderr": m["acc_stderr"], "seconds": round(sec, 1),
            "acc_diff_points": round(100 * (m["acc"] - summary["lm_eval"]["acc"]), 3),
            "acc_norm_diff_points": round(100 * (m["acc_norm"] - summary["lm_eval"]["acc_norm"]), 3),
            "same_prediction_fraction": float(same_pred),
            "max_abs_loglik_diff": max(diffs), "median_abs_loglik_diff": float(np.median(diffs)),
        }
    ok = all(abs(v["acc_diff_points"]) <= 1.0 for k, v in summary.items() if k.startswith("hwnas_"))
    summary["agree_within_1_point"] = bool(ok)
    print(json.dumps(summary, indent=2))
    if args.out:
        from hwnas.io import write_json_atomic

        write_json_atomic(args.out, summary)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
