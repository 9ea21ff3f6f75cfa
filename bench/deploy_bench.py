"""Deployment benchmark: what hwnas ships vs what a user would deploy instead, measured in one run.

Builds and measures on this host, under one target's OpenVINO properties and workload:
  (a) full model, PyTorch fp32 eager (KV cache)                                  [--no-torch skips it]
  (b) full model, OpenVINO IR exported by optimum-intel with NNCF int8 weights   <- the baseline
  (c) the whole model quantized by hwnas with Neural Compressor                  [--whole, or --subnet full]
  (d) a subnet quantized by hwnas, exported WITH training-free recovery (refit down_proj;
      --no-recovery for comparison): --subnet SPEC, or --from SEARCH_DIR --pick RULE (a pick that
      resolves to the full model becomes row (c)); default: 24 layers at MLP width 1152, the layers
      kept by the supernet's block-influence ranking; --no-subnet skips it
  (e) a healed subnet: --heal DIR (a `hwnas heal` folder; its subnet, its trained tensors)
(c)-(e): one bundle per --quant (default int8; e.g. --quant int8,int4).

Speed: decode tokens/s (1000 / TPOT at batch 1), TTFT, throughput at the target's largest batch,
weight bytes (openvino_model.bin; fp32 parameters for PyTorch), bundle bytes, each with its
ratio to (b). OpenVINO models are compiled together and timed with their repeats interleaved
(b, c, d, b, c, d, ...; hwnas.hardware.measure.measure_many), so a busy machine slows all of them
alike, and speed-ups carry a bootstrap interval over the rounds.

Accuracy: the report split of ARC-e, ARC-c, MMLU and PIQA, --limit items per task (default 600:
all of ARC-Challenge's 574 report items, 2,374 in all), the SAME items for every row. Per-item
results are kept: each row's acc_norm (the search's ranking metric) and acc, mean over tasks,
± standard error, and its difference from (b) PAIRED on the same items (hwnas.accuracy.paired:
points ± stderr, 95% interval, items; per task and overall), plus the choice-distribution KL to
(b). IRs are scored with OpenVINO on the IR itself (hwnas.deploy.ir_accuracy, the target's
properties); (a) in PyTorch fp32. Per-item results are cached in OUT/accuracy_cache.json, keyed
by the weights' sha256 and the scoring properties, so a rerun does not rescore (--rescore does).

Usage:
  .venv/bin/python bench/deploy_bench.py [--limit 600] [--repeats N] [--quant int8[,int4]] [--whole]
      [--subnet SPEC|full | --from SEARCH_DIR --pick 'fastest-within 1.0'] [--no-subnet] [--no-recovery]
      [--heal HEAL_DIR] [--no-torch] [--out runs/deploy_bench] [--reuse] [--rescore]
Writes RESULTS/deploy_bench.json and .md (default bench/results/); bundles go under OUT/bundles.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

log = logging.getLogger("deploy_bench")
TASKS = ["arc_easy", "arc_challenge", "mmlu", "piqa"]
METRICS = ("acc_norm", "acc")          # acc_norm first: the search ranks by it
MIN_ITEMS = 2000                       # issue 10: accuracy claims rest on at least this many report items
CACHE_VERSION = "items-v1"
LETTER = {"pytorch": "(a)", "nncf": "(b)", "whole": "(c)", "subnet": "(d)", "healed": "(e)"}


@dataclass(frozen=True)
class Variant:
    """One hwnas bundle to build: which model (whole, subnet, healed subnet) at which quantization."""

    variant: str                 # "whole" | "subnet" | "healed"
    quant: str
    subnet: Any = None           # SubnetConfig (None for the whole model)
    recovery: bool = False
    heal: str | None = None

    @property
    def name(self) -> str:
        return {"whole": "whole model", "subnet": "subnet", "healed": "healed subnet"}[self.variant] + f" {self.quant}"

    @property
    def folder(self) -> str:
        return f"{self.variant}-{self.quant}"


# ----------------------------------------------------------------------------- accuracy summaries (pure)

def own_accuracy(items: Mapping[str, Any], metric: str) -> dict:
    """A row's accuracy in percent, ± stderr, per task and overall (mean over tasks, as the search's objective).

    Same math as a paired difference against an all-wrong model: per task 100 * mean(correct) with
    stderr sd/sqrt(n); overall the mean over tasks with stderr sqrt(sum se_t^2) / T."""
    import numpy as np

    from hwnas.accuracy.paired import combine, paired_diff

    per = {name: paired_diff(it.correct(metric), np.zeros(len(it.ids))) for name, it in items.items()}
    return {"metric": metric, "tasks": {k: v.to_dict() for k, v in per.items()}, "overall": combine(list(per.values())).to_dict()}


def accuracy_summary(items: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> dict:
    """What the results file stores for one row, from its per-item results (`TaskItems` per task).

    ``tasks``/``mean``/``mean_acc_norm``: the plain accuracies (fractions, as before);
    ``pct``: acc_norm and acc in percent ± stderr; ``vs_b``: the paired difference from `base`
    (the baseline's per-item results on the same items; None for the baseline itself)."""
    import numpy as np

    tasks = {name: {"acc": float(it.correct("acc").mean()) if it.ids else None,
                    "acc_norm": float(it.correct("acc_norm").mean()) if it.ids else None, "n": len(it.ids)}
             for name, it in items.items()}

    def mean(metric: str) -> float | None:
        vals = [v[metric] for v in tasks.values()]
        return float(np.mean(vals)) if vals and all(v is not None for v in vals) else None

    from hwnas.accuracy.paired import compare_items

    return {"split": "report", "tasks": tasks, "mean": mean("acc"), "mean_acc_norm": mean("acc_norm"),
            "items": sum(v["n"] for v in tasks.values()),
            "pct": {m: own_accuracy(items, m) for m in METRICS},
            "vs_b": {m: compare_items(items, base, m) for m in METRICS} if base is not None else None}


def add_accuracy(rows: list[dict], items_by_row: Mapping[str, Mapping[str, Any]], baseline: str) -> None:
    """Put each row's accuracy summary, paired against the row keyed `baseline`, into `rows` (by each row's ``key``).

    Also fills the plain means and their (paired, hence equal to unpaired) differences in points,
    under the field names older results files used."""
    base = items_by_row[baseline]
    for d in rows:
        it = items_by_row.get(d["key"])
        if it is None:
            d["accuracy"] = None
            continue
        acc = accuracy_summary(it, None if d["key"] == baseline else base)
        d["accuracy"] = acc
        d["mean_acc"], d["mean_acc_norm"] = acc["mean"], acc["mean_acc_norm"]
        for metric, field in (("acc", "accuracy_points_vs_b"), ("acc_norm", "accuracy_norm_points_vs_b")):
            d[field] = acc["vs_b"][metric]["overall"]["points"] if acc["vs_b"] else 0.0


# ----------------------------------------------------------------------------- per-item cache

def items_to_json(items: Mapping[str, Any]) -> dict:
    """{task: {item id: [choice log-likelihoods]}}: what the cache stores of one row."""
    return {name: {i: [float(x) for x in ll] for i, ll in zip(it.ids, it.lls)} for name, it in items.items()}


def items_from_json(stored: Mapping[str, Mapping[str, list]] | None, suite: Any) -> dict | None:
    """The row's `TaskItems` on `suite` from a cache entry; None when any item of the suite is missing."""
    import numpy as np

    if not stored:
        return None
    lls = {}
    for name, d in suite.data.items():
        if d.requests is None:
            continue
        got = stored.get(name) or {}
        if any(r.id not in got for r in d.requests):
            return None
        lls[name] = [np.asarray(got[r.id], dtype=float) for r in d.requests]
    return suite._task_items(lls)


class ItemCache:
    """OUT/accuracy_cache.json: per row (weights sha256, scoring settings) its per-item results, merged across runs."""

    def __init__(self, path: Path, *, ignore: bool = False):
        self.path, self.ignore = path, ignore
        try:
            self.data = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, json.JSONDecodeError):
            log.warning("%s is unreadable; starting a fresh cache", path)
            self.data = {}

    def get(self, key: str, suite: Any) -> dict | None:
        return None if self.ignore else items_from_json(self.data.get(f"{CACHE_VERSION}|{key}"), suite)

    def put(self, key: str, items: Mapping[str, Any]) -> None:
        from hwnas.io import write_text_atomic

        entry = self.data.setdefault(f"{CACHE_VERSION}|{key}", {})
        for name, per in items_to_json(items).items():
            entry.setdefault(name, {}).update(per)
        write_text_atomic(self.path, json.dumps(self.data, separators=(",", ":")) + "\n")


# ----------------------------------------------------------------------------- the run

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--subnet", default=None,
                    help="subnet JSON/file, or 'full' for the whole model (default: 24 ranked layers, MLP 1152)")
    ap.add_argument("--from", dest="search_dir", default=None)
    ap.add_argument("--pick", default="fastest-within 1.0")
    ap.add_argument("--no-subnet", action="store_true", help="no subnet row (d)")
    ap.add_argument("--whole", action="store_true", help="also hwnas bundles of the whole model (row c)")
    ap.add_argument("--no-recovery", dest="recovery", action="store_false",
                    help="export the subnet as sliced, without the training-free down_proj refit")
    ap.add_argument("--heal", default=None, help="a `hwnas heal` folder: also its healed subnet (row e)")
    ap.add_argument("--quant", default="int8", help="comma list of hwnas recipes for rows (c)-(e), e.g. int8,int4")
    ap.add_argument("--target", default="xeon")
    ap.add_argument("--limit", type=int, default=600, help="report-split items per task (600: every ARC-c report item)")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per model (default: the target's)")
    ap.add_argument("--no-torch", action="store_true", help="skip (a)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reuse", action="store_true", help="reuse bundles already in --out (same subnet/settings)")
    ap.add_argument("--rescore", action="store_true", help="ignore cached per-item accuracy results")
    ap.add_argument("--out", default=str(REPO / "runs" / "deploy_bench"), help="bundles and caches")
    ap.add_argument("--results", default=str(REPO / "bench" / "results"), help="where deploy_bench.json/.md go")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("neural_compressor", "nncf", "transformers", "optimum", "torchao"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from hwnas.accuracy.evaluate import TaskSuite
    from hwnas.deploy.archive import sha256_file
    from hwnas.deploy.benchmark import NNCF_INT8, TORCH_FP32, ir_rows, measure_torch, nncf_int8_ir, ratios
    from hwnas.deploy.export import export_bundle
    from hwnas.deploy.ir_accuracy import ir_accuracy
    from hwnas.deploy.manifest import read_manifest
    from hwnas.deploy.quantize import make_recipe
    from hwnas.hardware.host import detect_host
    from hwnas.hardware.targets import load_target
    from hwnas.model.loading import load_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = [t for t in args.tasks.split(",") if t]
    quants = [q for q in args.quant.split(",") if q]
    target = load_target(args.target)
    if args.repeats:
        import dataclasses

        target = dataclasses.replace(target, measure=dataclasses.replace(target.measure, repeats=args.repeats))
    host = detect_host()
    props = target.resolved_properties(host)
    t_start = time.time()
    log.info("host %s; target %s -> %s", host.describe(), target.name, props)

    loaded = load_model(args.model)
    tok = loaded.tokenizer
    subnet, how = (None, "none (--no-subnet)") if args.no_subnet else _resolve_subnet(args, loaded)
    variants = _variants(args, quants, subnet)
    log.info("rows to build: %s", ", ".join(f"{v.name} ({v.variant})" for v in variants) or "none")

    # ---- build
    t0 = time.time()
    base_dir = nncf_int8_ir(loaded)
    log.info("(b) NNCF int8 IR at %s (%.0fs)", base_dir, time.time() - t0)
    bundles: dict[str, Path] = {}
    for v in variants:
        t0 = time.time()
        prev = out / "bundles" / v.folder
        if args.reuse and (prev / "hwnas_manifest.json").is_file() and _reusable(read_manifest(prev), v):
            bundles[v.name] = prev
            log.info("%s bundle reused from %s", v.name, prev)
            continue
        res = export_bundle(args.model, prev, recipe=make_recipe(v.quant), subnet=v.subnet, target=target,
                            seed=args.seed, force=True, measure=False, recovery=v.recovery, heal=v.heal,
                            allow_degenerate=True)  # a bench records a failing generation check, it does not stop
        bundles[v.name] = res.path
        log.info("%s bundle: %s, %.1f MB (%.0fs)", v.name, res.manifest.recipe.describe(), res.nbytes / 1e6, time.time() - t0)

    # ---- accuracy: one suite, the same report items for every row; per-item results cached by weights hash
    suite = TaskSuite(tok, tasks, split="report", limit=args.limit, seed=args.seed)
    counts = suite.describe()
    log.info("accuracy on %d report items %s", suite.n_items, counts)
    if suite.n_items < MIN_ITEMS:
        log.warning("only %d report items (< %d): raise --limit for claims the issue accepts", suite.n_items, MIN_ITEMS)
    cache = ItemCache(out / "accuracy_cache.json", ignore=args.rescore)
    pkey = json.dumps(props, sort_keys=True, default=str)
    seconds: dict[str, float | None] = {}

    def scored(name: str, key: str, fn) -> dict:
        items = cache.get(key, suite)
        if items is None:
            t0 = time.time()
            items = fn()
            cache.put(key, items)
            seconds[name] = round(time.time() - t0, 1)
            log.info("accuracy of %s scored in %.0fs", name, seconds[name])
        else:
            seconds[name] = None  # from the cache: nothing was scored
            log.info("accuracy of %s: cached", name)
        return items

    def progress(done: int, total: int, label: str = "") -> None:
        if done % 250 == 0 or done == total:
            log.info("  %d / %d items (%s)", done, total, label)

    def ir_items(folder: Path) -> dict:
        return ir_accuracy(folder, tok, suite=suite, properties=props, keep_items=True, progress=progress)["_items"]

    items_by_row = {"nncf": scored("(b)", f"{NNCF_INT8}|{sha256_file(base_dir / 'openvino_model.bin')}|{pkey}",
                                   lambda: ir_items(base_dir))}
    for v in variants:
        path = bundles[v.name]
        items_by_row[v.name] = scored(v.name, f"bundle|{sha256_file(path / 'openvino_model.bin')}|{pkey}",
                                      lambda: ir_items(path))
    if not args.no_torch:
        items_by_row["pytorch"] = scored("(a)", f"{TORCH_FP32}|{loaded.source.sha256()}|fp32",
                                         lambda: suite.items(loaded.model, precision="fp32", progress=progress))

    # ---- speed: all OpenVINO models compiled together, repeats interleaved (hwnas.hardware.measure.measure_many)
    t0 = time.time()
    items = [("full model", NNCF_INT8, base_dir)] + [(v.name, "bundle", bundles[v.name]) for v in variants]
    rows = ir_rows(items, target, host=host, seed=args.seed)
    for row, v in zip(rows, [None] + variants):
        log.info("%s: TTFT %.1f ms, TPOT %.2f ms (samples %s), thr %.1f tok/s", row.name, row.ttft_ms, row.tpot_ms,
                 row.extra.get("tpot_samples_ms"), row.throughput_tok_s)
        if v is None:
            row.extra.update(key="nncf", variant="nncf", label=f"{LETTER['nncf']} full model, optimum-intel NNCF int8",
                             accuracy_seconds=seconds.get("(b)"))
            continue
        man = read_manifest(bundles[v.name])
        sn = man.supernet or {}
        heal_steps = (sn.get("heal") or {}).get("steps")
        label = _label(v) + (f", {heal_steps} heal steps" if heal_steps is not None else "")
        row.extra.update(key=v.name, variant=v.variant, quant=v.quant, label=label, quantization=man.recipe.describe(),
                         subnet_key=(man.subnet or {}).get("key"), recovery=sn.get("recovery") if v.subnet else None,
                         recovery_on=v.recovery if v.variant == "subnet" else None, heal=sn.get("heal"),
                         generation_passed=(man.generation or {}).get("passed"), accuracy_seconds=seconds.get(v.name))
    log.info("OpenVINO timing %.0fs", time.time() - t0)
    if not args.no_torch:
        t0 = time.time()
        trow = measure_torch(loaded.model, target, seed=args.seed)
        trow.extra.update(key="pytorch", variant="pytorch", label=f"{LETTER['pytorch']} full model, PyTorch fp32",
                          accuracy_seconds=seconds.get("(a)"))
        rows.insert(0, trow)
        log.info("(a) torch: TTFT %.1f ms, TPOT %.2f ms (%.0fs)", trow.ttft_ms, trow.tpot_ms, time.time() - t0)

    table = ratios(rows, seed=args.seed)
    add_accuracy(table, items_by_row, baseline="nncf")
    result = {"schema_version": 2, "subnet": {**subnet.to_dict(), "key": subnet.key, "how": how} if subnet else {"how": how},
              "recovery": args.recovery, "heal": args.heal, "quant": quants, "target": target.name, "properties": props,
              "host": host.to_dict(), "limit": args.limit, "tasks": tasks, "items": counts, "items_total": suite.n_items,
              "paired_with": NNCF_INT8, "metrics": list(METRICS), "repeats": target.measure.repeats,
              "seconds": round(time.time() - t_start, 1), "rows": table}
    from hwnas.io import write_text_atomic

    res_dir = Path(args.results)
    res_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(res_dir / "deploy_bench.json", json.dumps(result, indent=2, default=str) + "\n")
    md = markdown(result)
    write_text_atomic(res_dir / "deploy_bench.md", md)
    print(md)
    return 0


def _resolve_subnet(args: Any, loaded: Any) -> tuple[Any, str]:
    """(SubnetConfig, how it was chosen), or (None, why) when the choice is the whole model."""
    from hwnas.model.space import SubnetConfig, parse_subnet_spec
    from hwnas.search.picking import pick_from_search

    if args.subnet and args.subnet.strip().lower() == "full":
        return None, "the whole model (--subnet full)"
    if args.subnet:
        subnet, how = parse_subnet_spec(args.subnet), "--subnet"
    elif args.search_dir:
        p = pick_from_search(args.search_dir, args.pick)
        subnet, how = p.subnet, f"{args.search_dir}: {p.rule}"
    else:
        from hwnas.model.supernet import load_supernet

        _, sn = load_supernet(args.model)
        if sn.space.layer_order:
            layers = tuple(sorted(sn.space.layer_order[:24]))
            subnet, how = SubnetConfig(layers, (1152,) * 24), "fixed 24 x 1152, layers ranked by block influence (no search yet)"
        else:
            subnet, how = SubnetConfig.uniform(24, 1152), "fixed 24 x 1152, first 24 layers (no search yet)"
        del sn, _
    cfg = loaded.model.config
    if subnet == SubnetConfig.uniform(int(cfg.num_hidden_layers), int(cfg.intermediate_size)):
        return None, f"{how}: the whole model"
    log.info("subnet %s (%s): %s", subnet.key, subnet.describe(), how)
    return subnet, how


def _variants(args: Any, quants: list[str], subnet: Any) -> list[Variant]:
    """The hwnas bundles to build: (c) whole model, (d) subnet with/without recovery, (e) healed subnet; each per quant."""
    out: list[Variant] = []
    if args.whole or (subnet is None and not args.no_subnet):
        out += [Variant("whole", q) for q in quants]
    if subnet is not None:
        out += [Variant("subnet", q, subnet=subnet, recovery=bool(args.recovery)) for q in quants]
    if args.heal:
        from hwnas.model.healed import heal_subnet

        healed = heal_subnet(args.heal)
        out += [Variant("healed", q, subnet=healed, heal=str(args.heal)) for q in quants]
    return out


def _reusable(man: Any, v: Variant) -> bool:
    """Whether a bundle left in --out by an earlier run is the one `v` asks for."""
    sn = man.supernet or {}
    if man.quantization.get("name") != v.quant or (man.subnet or {}).get("key") != (v.subnet.key if v.subnet else None):
        return False
    if v.variant == "subnet":
        return bool(sn.get("recovery")) == v.recovery and not sn.get("heal")
    if v.variant == "healed":
        from hwnas.model.healed import read_record

        heal = sn.get("heal") or {}
        return heal.get("folder") == v.heal and heal.get("steps") == read_record(v.heal).get("steps_done")
    return True


def _label(v: Variant) -> str:
    q = "float (no quantization)" if v.quant == "none" else f"hwnas INC {v.quant}"
    if v.variant == "whole":
        return f"{LETTER['whole']} full model, {q}"
    what = f"subnet {v.subnet.key} ({v.subnet.describe()})"
    if v.variant == "healed":
        return f"{LETTER['healed']} healed {what}, {q}"
    return f"{LETTER['subnet']} {what}, {q}, recovery {'on' if v.recovery else 'off'}"


# ----------------------------------------------------------------------------- the table (pure)

def own_cell(acc: Mapping[str, Any] | None, metric: str, task: str | None = None) -> str:
    """'40.2 ± 1.0': a row's accuracy in percent ± stderr (overall, or one task)."""
    p = ((acc or {}).get("pct") or {}).get(metric)
    o = (p or {}).get("overall") if task is None else ((p or {}).get("tasks") or {}).get(task)
    return "-" if not o else f"{o['points']:.1f} ± {o['stderr']:.1f}"


def diff_cell(d: Mapping[str, Any]) -> str:
    """'-0.42 ± 0.51 [-1.42, +0.58] (2374)': a paired difference, stderr, 95% interval, paired items."""
    lo, hi = d["ci95"]
    return f"{d['points']:+.2f} ± {d['stderr']:.2f} [{lo:+.2f}, {hi:+.2f}] ({d['items']})"


def vs_b_cell(acc: Mapping[str, Any] | None, metric: str, task: str | None = None) -> str:
    if acc is None:
        return "-"
    if acc.get("vs_b") is None:
        return "0 (baseline)"
    c = acc["vs_b"][metric]
    return diff_cell(c["overall"] if task is None else c["tasks"][task])


def _speedup_cell(d: Mapping[str, Any]) -> str:
    x = d.get("decode_speedup")
    if x is None:
        return "-"
    ci = d.get("decode_speedup_ci95")
    return f"{x:.2f}x" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "") + ("" if d.get("stable", True) else " !")


def markdown(res: Mapping[str, Any]) -> str:
    """deploy_bench.md: the speed/size/accuracy table, the note on how accuracy was compared, per-task detail."""
    def f(v, d=2, s=""):
        return "-" if v is None else f"{v:.{d}f}{s}"

    sub = res.get("subnet") or {}
    what = (f"Subnet {sub['key']} ({len(sub['layers'])} layers, MLP {sorted(set(sub['mlp_widths']))}): {sub['how']}; "
            f"exported with training-free recovery {'on' if res.get('recovery') else 'off'}."
            if sub.get("key") else f"Subnet: {sub.get('how', '-')}.")
    if res.get("heal"):
        what += f" Healed subnet from {res['heal']}."
    counts = ", ".join(f"{t} {n}" for t, n in (res.get("items") or {}).items())
    lines = [f"# Deployment benchmark ({res['target']}, {res['host']['cpu_model']}, {res['host']['physical_cores']} cores)", "",
             f"{what} Properties {res['properties']}. Speed: median of {res['repeats']} interleaved repeats (plus "
             "re-measure rounds when noisy); speed-up vs (b) with its 95% bootstrap interval over the rounds "
             "('!': spread above the re-measure threshold).", "",
             "| model | decode tok/s | TTFT ms | throughput tok/s | weights MB | bundle MB | speed-up vs (b) | smaller vs (b) "
             "| acc_norm ± stderr | Δ acc_norm vs (b) ± stderr [95% CI] (items) | acc ± stderr "
             "| Δ acc vs (b) ± stderr [95% CI] (items) | generation check |",
             "|" + "---|" * 13]
    for d in res["rows"]:
        acc = d.get("accuracy")
        gen = d.get("generation_passed")
        lines.append("| " + " | ".join([
            d.get("label") or d["name"], f(d["decode_tok_s"], 1), f(d["ttft_ms"], 1), f(d["throughput_tok_s"], 1),
            f(d["weight_bytes"] / 1e6 if d.get("weight_bytes") else None, 1),
            f(d["total_bytes"] / 1e6 if d.get("total_bytes") else None, 1),
            _speedup_cell(d), f(d.get("size_ratio"), 2, "x"),
            own_cell(acc, "acc_norm"), vs_b_cell(acc, "acc_norm"), own_cell(acc, "acc"), vs_b_cell(acc, "acc"),
            "-" if gen is None else ("pass" if gen else "FAIL"),
        ]) + " |")
    lines += ["", f"Accuracy: report split, the same {res['items_total']} items in every row ({counts}; --limit "
              f"{res['limit']} per task), scored with OpenVINO on each IR ((a) in PyTorch fp32). acc_norm (the search ranks "
              f"by it) and acc are means over the {len(res['tasks'])} tasks in percent ± standard error (per task sd/√n, "
              "over tasks √(Σ se²)/T). The differences from (b) are paired: per item, the row's score minus (b)'s on the "
              "same item, mean over tasks ± stderr, 95% interval (normal), and the number of paired items.", "",
              "Per task, acc_norm ± stderr (Δ vs (b), paired ± stderr, items; intervals in deploy_bench.json):", "",
              "| model | " + " | ".join(res["tasks"]) + " |", "|" + "---|" * (1 + len(res["tasks"]))]
    for d in res["rows"]:
        acc = d.get("accuracy")
        cells = [own_cell(acc, "acc_norm", t) + ("" if acc is None or acc.get("vs_b") is None
                                                 else " (Δ {points:+.2f} ± {stderr:.2f}, {items})".format(
                                                     **acc["vs_b"]["acc_norm"]["tasks"][t])) for t in res["tasks"]]
        lines.append("| " + " | ".join([d.get("label") or d["name"], *cells]) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
