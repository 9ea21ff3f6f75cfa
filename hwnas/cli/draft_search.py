"""`hwnas search --objective speculative`: find the best draft subnet and number of draft tokens (k).

A helper of the search command (hwnas/cli/search_cmd.py), not a command of its own: parse and check,
call `hwnas.search.speculative.run_draft_search`, print the ranking.
"""
from __future__ import annotations

from typing import Any

import click

# Options of `hwnas search` that only the accuracy/speed (pareto) objective uses, and those only
# the speculative objective uses; giving one to the other objective is an error, not silently ignored.
PARETO_ONLY = ("tasks", "metric", "evaluations", "population", "strategy", "objectives", "max_tpot_ms", "min_accuracy",
               "limit", "report_limit", "space_file", "data_dir", "include_chance_tasks", "quant")
SPECULATIVE_ONLY = ("search_dir", "drafts", "max_draft_tokens", "prompts", "new_tokens", "calibration")
OPTION_NAME = {"space_file": "--space", "search_dir": "--from", "drafts": "--draft", "max_tpot_ms": "--max-tpot-ms",
               "min_accuracy": "--min-accuracy", "report_limit": "--report-limit", "data_dir": "--data-dir",
               "max_draft_tokens": "--max-draft-tokens", "new_tokens": "--new-tokens",
               "include_chance_tasks": "--include-chance-tasks"}


def given(ctx: click.Context, names: tuple[str, ...]) -> list[str]:
    """The options among `names` that the user spelled out on the command line."""
    from click.core import ParameterSource

    return [OPTION_NAME.get(n, "--" + n.replace("_", "-")) for n in names
            if ctx.get_parameter_source(n) not in (None, ParameterSource.DEFAULT)]


def run_speculative(*, target_spec: str, model: str, profile_path: str | None, search_dir: str | None,
                    drafts: tuple[str, ...], max_draft_tokens: int, prompts: int, new_tokens: int, calibration: str | None,
                    out: str | None, resume: bool, seed: int, recovery: bool, quiet: bool) -> None:
    from hwnas.cli.common import progress_bar
    from hwnas.errors import SearchError
    from hwnas.hardware.targets import load_target
    from hwnas.model.calibration import load_texts, texts_sha256
    from hwnas.model.loading import resolve_model
    from hwnas.search.speculative import MAX_K, candidate_drafts, front_subnets, prepare_out, run_draft_search

    # ---------------------------------------------------------------- cheap checks first
    target = load_target(target_spec)
    if not 1 <= max_draft_tokens <= MAX_K:
        raise SearchError(f"--max-draft-tokens {max_draft_tokens} is invalid; accepted: 1 to {MAX_K}")
    if prompts < 1:
        raise SearchError(f"--prompts {prompts} is invalid; accepted: 1 or more calibration prompts")
    if new_tokens < 2:
        raise SearchError(f"--new-tokens {new_tokens} is invalid; accepted: 2 or more tokens per prompt")
    extra = [_parse_draft(d) for d in drafts]
    front = front_subnets(search_dir) if search_dir else []
    measured = []
    if profile_path:
        from hwnas.hardware.profile import load_profile

        prof = load_profile(profile_path)
        if prof.target.name != target.name:
            raise SearchError(f"--profile {profile_path} was made for target {prof.target.name!r}, not {target.name!r}")
        from hwnas.model.space import SubnetConfig

        measured = [SubnetConfig.from_dict(m.subnet) for m in prof.measurements if m.subnet]
    texts = load_texts(calibration)
    source = resolve_model(model)
    sha = source.sha256()
    out = out or f"search-speculative-{target.name}"
    agreement_cfg = {"prompts": prompts, "prompt_tokens": 32, "new_tokens": new_tokens}
    identity = {"model_sha256": sha, "target": target.name, "agreement": agreement_cfg,
                "calibration_sha256": texts_sha256(texts), "recovery": recovery, "seed": seed}
    prepare_out(out, identity, resume)  # errors here leave --out untouched

    # ---------------------------------------------------------------- expensive part
    from hwnas.accuracy.agreement import GreedyAgreement
    from hwnas.model.supernet import load_supernet

    loaded, supernet = load_supernet(source.spec)
    for cfg in extra:
        supernet.space.validate(cfg, structure=False)
    if recovery:
        from hwnas.model.recovery import make_recoverer

        supernet.recoverer = make_recoverer(supernet, loaded.tokenizer)
    rng_texts = _shuffled(texts, seed)
    agree = GreedyAgreement.from_texts(loaded.tokenizer, rng_texts, prompts=prompts, prompt_tokens=32, new_tokens=new_tokens)
    cands = candidate_drafts(supernet.space, front=front, measured=measured, extra=extra)
    run_info = {"model": {**source.to_dict(), "sha256": sha}, "target": target.to_dict(),
                "from": str(search_dir) if search_dir else None, "profile": str(profile_path) if profile_path else None,
                "calibration": str(calibration) if calibration else "calibration/ (default)",
                "recovery": supernet.recoverer.describe() if supernet.recoverer is not None else None}
    with progress_bar("draft search", enabled=not quiet) as prog:
        doc = run_draft_search(supernet, agree, cands, target=target, out=out, model_id=sha[:12], identity=identity,
                               max_k=max_draft_tokens, resume=resume, run_info=run_info, progress=prog)
    print_ranking(doc)
    click.echo(f"wrote {out}/ (speculative.json, acceptance.jsonl, config.json); ship it with "
               f"`hwnas export --speculative --from {out} --out BUNDLE`")


def _parse_draft(spec: str):
    from hwnas.errors import InvalidSubnetError
    from hwnas.model.space import parse_subnet_spec

    try:
        return parse_subnet_spec(spec)
    except InvalidSubnetError as e:
        raise InvalidSubnetError(f"--draft {spec!r}: " + str(e).replace("--subnet ", "", 1)) from None


def _shuffled(texts: list[str], seed: int) -> list[str]:
    import numpy as np

    idx = np.random.default_rng(seed).permutation(len(texts))
    return [texts[i] for i in idx]


def print_ranking(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    full = doc["full_model"]
    table = Table(title=f"draft candidates, best predicted speed first (full model: TPOT {full['tpot_ms']:.2f} ms, "
                        f"{full['tokens_per_s']:.1f} tokens/s)")
    for c in ("draft", "layers", "acceptance %", "draft TPOT ms", "best k", "tokens/step", "predicted tok/s", "vs full"):
        table.add_column(c, justify="left" if c == "draft" else "right")
    for r in doc["candidates"]:
        best = next(p for p in r["predicted"] if p["k"] == r["best_k"])
        table.add_row(r["key"], str(len(r["subnet"]["layers"])), f"{100 * r['acceptance_rate']:.1f}",
                      f"{r['draft_tpot_ms']:.2f}", str(r["best_k"]), f"{best['tokens_per_step']:.2f}",
                      f"{r['best_tokens_per_s']:.1f}", f"{r['best_speedup_vs_full']:.2f}x")
    console = Console()
    console.print(table)
    console.print(("[bold]" if doc["pays"] else "[yellow]") + doc["verdict"])

