"""`hwnas eval`: accuracy (multiple-choice tasks) and perplexity of a model or one of its subnets."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from hwnas.cli.common import (
    Choice,
    check_subnet_early,
    data_dir_option,
    describe_kept_layers,
    model_option,
    no_order_option,
    progress_bar,
    seed_option,
    subnet_options,
)

DEFAULT_EVAL_TASKS = "arc_easy,arc_challenge,mmlu,piqa,boolq"


def register(main: click.Group) -> None:
    main.add_command(eval_cmd)


def _check_out_file(out: str) -> None:
    from hwnas.errors import OutputError

    p = Path(out)
    if p.is_dir():
        raise OutputError(f"--out {out} is a folder; give a file path for the JSON results")
    probe = p.resolve().parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise OutputError(f"--out {out} is not writable (no write permission on {probe})")
    from hwnas.io import check_can_create_in

    check_can_create_in(probe, f"--out {out}")  # root passes os.access on /proc and /sys


def _versions() -> dict[str, str]:
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for pkg in ("hwnas", "torch", "transformers", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _fmt(v, pct: bool = True, err=None) -> str:
    if v is None:
        return "-"
    s = f"{100 * v:.1f}" if pct else f"{v:.3f}"
    if err is not None:
        s += f" ± {100 * err:.1f}" if pct else f" ± {err:.3f}"
    return s


def _table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    title = f"hwnas eval · {result['model']['name']}"
    if result.get("subnet_key"):
        title += f" · subnet {result['subnet_key']}"
    vs = result.get("vs_full")
    if vs and "acc_norm" not in vs:  # perplexity tasks only: paired as perplexity ratios, no multiple-choice columns
        vs = None
    t = Table(title=title)
    cols = ["task", "split", "n", "acc %", "acc_norm %"]
    if vs:
        cols += ["Δacc vs full (pts)", "Δacc_norm vs full (pts)", "choice KL"]
    cols += ["perplexity", "tokens"]
    for col in cols:
        t.add_column(col, justify="left" if col in ("task", "split") else "right")

    def delta(metric: str, name: str | None) -> str:
        d = vs[metric]["tasks"][name] if name else vs[metric]["overall"]
        return f"{d['points']:+.2f} ± {d['stderr']:.2f}"

    for name, r in result["tasks"].items():
        if "perplexity" in r:
            extra = ["-", "-", "-"] if vs else []
            ppl = _fmt(r["perplexity"], pct=False)
            ratios = (result.get("vs_full") or {}).get("perplexity_ratio", {})
            if name in ratios:
                ppl += f" (x{ratios[name]:.3f} full)"
            t.add_row(name, result["split"], str(r["windows"]), "-", "-", *extra, ppl, str(r["tokens"]))
        else:
            shots = f" ({r['shots']}-shot)" if r.get("shots") else ""
            extra = [delta("acc", name), delta("acc_norm", name),
                     f"{vs['acc_norm']['tasks'][name]['choice_kl']:.4f}"] if vs else []
            t.add_row(name + shots, result["split"], str(r["n"]), _fmt(r["acc"], err=r["acc_stderr"]),
                      _fmt(r["acc_norm"], err=r["acc_norm_stderr"]), *extra, "-", "-")
    if vs and vs["acc_norm"]["tasks"]:
        t.add_row("overall (mean of tasks)", result["split"], str(vs["acc_norm"]["overall"]["items"]), "-", "-",
                  delta("acc", None), delta("acc_norm", None), f"{vs['acc_norm']['choice_kl']:.4f}", "-", "-")
    c = Console()
    c.print(t)
    if vs:
        c.print("Δ = subnet minus full model on the same items (paired), ± standard error; "
                f"full model's per-item results cached. {vs['verdict']}")
    elif result.get("vs_full"):
        c.print("x = the subnet's perplexity / the full model's, on the same windows")
    speed = f"{result['seconds']:.1f} s, {result['precision']}"
    if result.get("items_per_second"):
        speed += f", {result['items_per_second']:.2f} items/s"
    c.print(speed)


@click.command("eval")
@model_option
@subnet_options
@no_order_option
@click.option("--tasks", default=DEFAULT_EVAL_TASKS, show_default=True,
              help="Comma-separated: arc_easy, arc_challenge, mmlu, piqa, boolq, wikitext2, or paths to .jsonl task files.")
@click.option("--split", type=click.Choice(["search", "report", "select", "holdout", "all"]), default="search",
              show_default=True,
              help="Which fixed part of each task's items to score: the search optimises on 'search'; 'report' "
                   "(never seen by the search) = 'select' (decides the pick) + 'holdout' (quotes it).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="First N items of the split per task, in a seeded shuffled order (perplexity: N windows).")
@click.option("--shots", type=click.IntRange(min=0), default=0, show_default=True,
              help="Few-shot examples per prompt (MMLU: from dev/; ARC: from dev.jsonl; others stay zero-shot).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Packed rows per forward pass (default 4; perplexity: windows per pass).")
@click.option("--row-tokens", type=click.IntRange(min=16), default=None,
              help="Tokens per packed row (default 128); longer items get a row of their own.")
@click.option("--window", type=click.IntRange(min=2), default=None, help="Perplexity window in tokens (default 512).")
@click.option("--precision", type=Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="auto: bf16 autocast on CPUs with native bf16 (AVX512-BF16/AMX), else fp32.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads (default: torch's choice).")
@data_dir_option
@click.option("--out", default=None, type=click.Path(), help="Write the results as JSON to this file.")
@seed_option
@click.option("--recovery/--no-recovery", default=True, show_default=True,
              help="Refit the subnet's down_proj weights to the full model on calibration text before scoring "
                   "(training-free recovery, as export ships it).")
@click.option("--heal", "heal_dir", type=click.Path(file_okay=False), default=None,
              help="A `hwnas heal` folder: score its distilled subnet (the subnet defaults to the one it healed).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def eval_cmd(model, subnet_spec, layers, mlp_width, no_order, tasks, split, limit, shots, batch_size, row_tokens,
             window, precision, threads, data_dir, out, seed, recovery, quiet, heal_dir=None):
    """Score --model (or a subnet of it) on multiple-choice tasks and WikiText-2 perplexity.

    Multiple-choice tasks are scored as lm-evaluation-harness scores them (log-likelihood of
    each choice; acc and length-normalised acc_norm with standard errors). Prints a table and,
    with --out, writes JSON: {"tasks": {...}, "model", "subnet", "subnet_key", "seed", ...}.
    """
    from hwnas.accuracy.evaluate import (
        DEFAULT_BATCH_SIZE,
        DEFAULT_ROW_TOKENS,
        DEFAULT_WINDOW,
        TaskSuite,
    )
    from hwnas.accuracy.tasks import parse_tasks
    from hwnas.errors import InvalidSubnetError
    from hwnas.io import write_json_atomic

    # Fail on bad input before loading anything.
    task_list = parse_tasks(tasks)
    check_subnet_early(model, subnet_spec, layers, mlp_width)
    healed_for = None
    if heal_dir is not None:
        from hwnas.model.healed import heal_subnet

        healed_for = heal_subnet(heal_dir)  # a bad or unfinished heal folder fails before loading
        if subnet_spec is None and layers is None and mlp_width is None:
            subnet_spec = json.dumps(healed_for.to_dict())
    if out:
        _check_out_file(out)
    from hwnas.datadir import resolve_data_dir

    resolve_data_dir(data_dir)
    from hwnas.cli.common import check_resources

    check_resources("eval", model, subnet_spec=subnet_spec, layers=layers, mlp_width=mlp_width,
                    batch_tokens=(batch_size or 4) * (row_tokens or 128))

    # OpenMP threads that spin while waiting are up to 7x slower on a shared, oversubscribed CPU
    # (measured on the 2-core dev box); sleeping waiters cost a few percent when the CPU is idle.
    # It must be set before torch loads libgomp, so only when torch is not imported yet.
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from hwnas.model.loading import load_model
    from hwnas.model.supernet import Supernet, resolve_subnet_option

    if threads:
        torch.set_num_threads(threads)
    loaded = load_model(model)
    cfg = resolve_subnet_option(subnet_spec, layers, mlp_width, loaded.model.config.intermediate_size)
    target = loaded.model
    subnet_record = loaded.subnet
    ordered = None
    if cfg is not None:
        if loaded.subnet is not None:
            raise InvalidSubnetError(
                f"--model {model} is already an extracted subnet ({loaded.subnet.describe()}); evaluate it without --subnet"
            )
        target = Supernet.from_loaded(loaded, order=not no_order)
        cfg = resolve_subnet_option(subnet_spec, layers, mlp_width, target.full_width, space=target.space)
        target.space.validate(cfg, structure=False)
        if describe_kept_layers(cfg, target.space, layers):
            click.echo(describe_kept_layers(cfg, target.space, layers), err=True)
        subnet_record = cfg
        ordered = bool(target.meta.get("channels_ordered"))
        if recovery and heal_dir is None:
            from hwnas.model.recovery import make_recoverer

            target.recoverer = make_recoverer(target, loaded.tokenizer)
    heal_record, supernet = None, target
    if heal_dir is not None:
        from hwnas.model.healed import apply_heal, read_record

        if cfg != healed_for:
            raise InvalidSubnetError(f"--heal {heal_dir} was made for subnet {healed_for.key}, not {cfg.key}")
        dense = target.extract(cfg)
        heal_record = apply_heal(dense, heal_dir, subnet=cfg, model_sha256=loaded.source.sha256())
        heal_record["recovery"] = read_record(heal_dir).get("recovery")
        target = dense

    suite = TaskSuite(loaded.tokenizer, task_list, split=split, limit=limit, shots=shots, data_dir=data_dir,
                      seed=seed, window=window or DEFAULT_WINDOW)
    with progress_bar("eval", enabled=not quiet) as progress:
        result = suite.evaluate(target, subnet=None if heal_record else cfg, batch_size=batch_size or DEFAULT_BATCH_SIZE,
                                row_tokens=row_tokens or DEFAULT_ROW_TOKENS, precision=precision, progress=progress,
                                keep_items=cfg is not None)
        vs_full = None
        if cfg is not None:
            vs_full = _vs_full(suite, supernet, loaded, result, precision, batch_size or DEFAULT_BATCH_SIZE, progress)
    result.pop("_items", None)
    record = {
        "schema_version": result.pop("schema_version"),
        "command": "eval",
        "tasks": result.pop("tasks"),
        "model": {**loaded.source.to_dict(), "sha256": loaded.source.sha256()},
        "subnet": subnet_record.to_dict() if subnet_record is not None else None,
        "subnet_key": subnet_record.key if subnet_record is not None else None,
        "channel_order": ordered,
        "recovery": (heal_record or {}).get("recovery") if heal_record else
        (target.recovery_record(cfg) if cfg is not None else None),
        **({"heal": heal_record} if heal_record else {}),
        **({"vs_full": vs_full} if vs_full else {}),
        **result,
        "threads": torch.get_num_threads(),
        "data_dir": str(suite.data_dir),
        "versions": _versions(),
    }
    _table(record)
    if out:
        write_json_atomic(out, record)
        click.echo(f"wrote {out}")


def _vs_full(suite, supernet, loaded, result, precision, batch_size, progress) -> dict:
    """Paired comparison with the full model on the same items (its per-item results cached)."""
    from hwnas.accuracy.paired import compare_items, comparison_verdict, full_model_items

    sub_items = result["_items"]
    full_items = full_model_items(suite, supernet, loaded.source.content_sha256()[:16], precision=precision,
                                  progress=progress)
    out = {m: compare_items(sub_items, full_items, m) for m in ("acc", "acc_norm")} if sub_items else {}
    ppl_tasks = [n for n, r in result["tasks"].items() if "perplexity" in r]
    if ppl_tasks:
        from hwnas.accuracy.evaluate import TaskSuite

        ppl_suite = TaskSuite(loaded.tokenizer, ppl_tasks, split=suite.split, limit=suite.limit, seed=suite.seed,
                              data_dir=suite.data_dir, window=suite.window)
        full = ppl_suite.evaluate(supernet, subnet=None, batch_size=batch_size, precision=precision)["tasks"]
        out["perplexity_ratio"] = {n: round(result["tasks"][n]["perplexity"] / full[n]["perplexity"], 4)
                                   for n in ppl_tasks if full[n].get("perplexity")}
        out["full_perplexity"] = {n: full[n]["perplexity"] for n in ppl_tasks}
    out["verdict"] = comparison_verdict(out["acc_norm"], 1.0) if sub_items else ""  # names chance-level tasks
    return out
