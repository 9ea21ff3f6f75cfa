"""`hwnas search`: LINAS search for subnets that trade accuracy against speed on a target CPU."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from hwnas.cli.common import (
    METRIC_CHOICES,
    OBJECTIVE_CHOICES,
    STRATEGY_CHOICES,
    Choice,
    check_multiple_choice_tasks,
    check_resources,
    comma_choices,
    data_dir_option,
    model_option,
    seed_option,
)
from hwnas.cli.search_parts import (  # noqa: F401  (some re-exported for tests)
    FIDELITY_WINDOW,
    FIDELITY_WINDOWS,
    LiveDisplay,
    build_validation,
    check_space_file,
    ir_scorer,
    print_result,
    search_space,
    sensitivity_seeds,
    token_fidelity,
)

DEFAULT_TASKS = "arc_easy,arc_challenge,mmlu,piqa"
DEFAULT_EVALUATIONS = 24
DEFAULT_POPULATION = 8
DEFAULT_LIMIT = 50
DEFAULT_REPORT_LIMIT = 600  # select-split items per task: >= 2,000 paired items over the 4 default tasks
QUANT_MODES = ("int8", "auto")


def register(main: click.Group) -> None:
    main.add_command(search)


@click.command()
@click.pass_context
@click.option("--objective", type=Choice(("pareto", "speculative")), default="pareto", show_default=True,
              help="pareto: the accuracy-vs-speed front of subnets (LINAS). speculative: the best draft subnet and "
                   "number of draft tokens k for a lossless speculative bundle (predicted decode tokens/s from "
                   "measured acceptance, draft TPOT and the full model's cost of verifying k tokens).")
@click.option("--target", "-t", "target_spec", default="xeon", show_default=True,
              help="Target name (xeon, core, edge: profiles/NAME.toml) or a path to your own .toml file.")
@model_option
@click.option("--tasks", default=DEFAULT_TASKS, show_default=True,
              help="Comma-separated tasks whose search split is the accuracy objective.")
@click.option("--metric", type=Choice(METRIC_CHOICES), default="choice_kl", show_default=True,
              help="What ranks the accuracy objective (default: choice_kl, which predicted the paired accuracy drop "
                   "on 2,000 report items best in bench/signal_bench.py): acc_norm (length-normalised accuracy) or acc on the search "
                   "split; or a fidelity signal to the full model, shown next to acc_norm: choice_kl (KL of the "
                   "answer-choice distributions on the same items, no extra cost) or token_kl (next-token KL on "
                   "WikiText-2 search-split text, one more forward pass per subnet). The pick rule is the same for all.")
@click.option("--evaluations", type=int, default=DEFAULT_EVALUATIONS, show_default=True,
              help="Budget: subnets validated for real (accuracy + latency), initial population included.")
@click.option("--population", type=int, default=DEFAULT_POPULATION, show_default=True,
              help="Initial population and number of subnets validated per iteration.")
@click.option("--strategy", type=Choice(STRATEGY_CHOICES), default="linas", show_default=True,
              help="linas (NSGA-II on predictors), nsga2 (NSGA-II on real evaluations only) or random.")
@click.option("--objectives", default="accuracy,tpot_ms", show_default=True,
              callback=comma_choices(OBJECTIVE_CHOICES, ("acc", "tpot", "ttft", "throughput", "params", "size")),
              help="2-3 of: accuracy, tpot_ms, ttft_ms, throughput_tok_s, n_params, weight_bytes.")
@click.option("--max-tpot-ms", type=float, default=None, help="Constraint: TPOT at most this (ms/token).")
@click.option("--min-accuracy", type=click.FloatRange(0, 100), default=None,
              help="Constraint: mean accuracy at least this, in percent points (e.g. 40).")
@click.option("--limit", type=click.IntRange(min=1), default=DEFAULT_LIMIT, show_default=True,
              help="Items per task of the search split used for accuracy.")
@click.option("--report-limit", type=click.IntRange(min=0), default=DEFAULT_REPORT_LIMIT, show_default=True,
              help="Items per task of the report split's select part, scored (paired with the full model) for the "
                   "Pareto front, fastest first, to decide the pick; 0 = skip.")
@click.option("--include-chance-tasks", is_flag=True,
              help="Keep tasks on which the full model is not above chance (one-sided 95%) in the pick rule's paired "
                   "mean; by default they are left out, as agreeing with a guessing model shows nothing.")
@click.option("--generation-check/--no-generation-check", default=True, show_default=True,
              help="Before a front record's report split is scored, check its greedy generations in PyTorch against "
                   "the full model's (the check export applies to a bundle): a record that fails can be no pick, so "
                   "neither its report split nor its export is spent on it.")
@click.option("--recovery/--no-recovery", default=True, show_default=True,
              help="Score each subnet after training-free recovery (down_proj refit to the full model), as it ships.")
@click.option("--profile", "profile_path", type=click.Path(), default=None,
              help="profile.json (or its folder) from `hwnas profile`: latency predicted by its model, not measured here "
                   "(--objective speculative: its measured subnets are also tried as drafts).")
@click.option("--space", "space_file", type=click.Path(), default=None,
              help="TOML/JSON overrides of the model's default search space (with --quant auto its deploy table "
                   "can pin any gene, e.g. formats = ['int8'] or runtime.KV_CACHE_PRECISION = ['u8']).")
@click.option("--quant", type=Choice(QUANT_MODES), default="int8", show_default=True,
              help="int8: search depth and MLP widths only; the bundle is int8 (as before). auto: also search the "
                   "deployment genes: each kept layer's attention and MLP weight format (int8, int4 sym/asym), the "
                   "embeddings/lm_head format (int8, f16) and OpenVINO runtime settings this CPU supports (KV-cache "
                   "precision, dynamic quantization, bf16); each candidate is scored with its quantized weights and "
                   "timed as its integer IR with its runtime settings.")
@click.option("--out", "out", type=click.Path(), default=None, help="Output folder [default: search-TARGET].")
@click.option("--resume", is_flag=True, help="Continue the search in --out without redoing validated subnets.")
@click.option("--from", "search_dir", type=click.Path(file_okay=False), default=None,
              help="--objective speculative: also try the drafts on this `hwnas search` folder's Pareto front.")
@click.option("--draft", "drafts", multiple=True,
              help="--objective speculative: also try this draft subnet (JSON or file, as --subnet; repeatable).")
@click.option("--max-draft-tokens", type=int, default=8, show_default=True,
              help="--objective speculative: try k = 1 to this many draft tokens per step (at most 16).")
@click.option("--prompts", type=int, default=8, show_default=True,
              help="--objective speculative: calibration prompts the full model continues for the acceptance rate.")
@click.option("--new-tokens", type=int, default=64, show_default=True,
              help="--objective speculative: greedy tokens per prompt on which drafts are scored.")
@click.option("--calibration", type=click.Path(), default=None,
              help="--objective speculative: calibration text for the prompts (default: calibration/).")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              help="Run on the Ray cluster at ADDRESS (HOST:PORT of the head, or 'auto' for the one on this machine): "
                   "accuracy in actors that keep the model loaded, latency only on nodes started with the resource "
                   "hwnas-target-TARGET (docs/cluster.md). Without it nothing changes and Ray is not imported.")
@click.option("--ray-actors", type=click.IntRange(min=1), default=None,
              help="--ray: accuracy actors to start [default: one per node without the target resource].")
@seed_option
@data_dir_option
@click.option("--quiet", "-q", "--no-progress", "no_progress", is_flag=True,
              help="No live display (--no-progress is the old spelling).")
def search(ctx: click.Context, objective: str, target_spec: str, model: str, tasks: str, metric: str, evaluations: int, population: int, strategy: str,
           objectives: str, max_tpot_ms: float | None, min_accuracy: float | None, limit: int, report_limit: int | None,
           profile_path: str | None, space_file: str | None, out: str | None, resume: bool, seed: int,
           data_dir: str | None, no_progress: bool, recovery: bool = True, search_dir: str | None = None,
           drafts: tuple[str, ...] = (), max_draft_tokens: int = 8, prompts: int = 8, new_tokens: int = 64,
           calibration: str | None = None, include_chance_tasks: bool = False, quant: str = "int8",
           ray_address: str | None = None, ray_actors: int | None = None, generation_check: bool = True) -> None:
    """Find the Pareto front of subnets (accuracy vs speed on --target) with few real evaluations.

    LINAS: validate an initial population (always the full model and the smallest subnet), fit
    one scikit-learn predictor per objective on every validated subnet, run NSGA-II on the
    predictors to propose the next subnets, validate those for real, and repeat until
    --evaluations are spent. Only validated subnets are reported as Pareto-optimal.

    Writes OUT/candidates.jsonl, pareto.json, history.jsonl, pareto.png, summary.md, config.json.

    With --objective speculative it ranks draft subnets for a speculative bundle instead (the
    default-draft rule, cuts of the ranked layers, --draft, --from's front, --profile's subnets) and
    writes OUT/speculative.json [default OUT: search-speculative-TARGET]; `hwnas export --speculative
    --from OUT` ships the chosen draft and k.
    """
    from hwnas.cli.draft_search import PARETO_ONLY, SPECULATIVE_ONLY, given, run_speculative
    from hwnas.errors import SearchError

    wrong = given(ctx, PARETO_ONLY if objective == "speculative" else SPECULATIVE_ONLY)
    if wrong:
        raise SearchError(f"{wrong[0]} does not apply to --objective {objective}; "
                          + ("it is an option of the accuracy-vs-speed search (--objective pareto)"
                             if objective == "speculative" else "it is an option of --objective speculative"))
    if ray_actors is not None and ray_address is None:
        raise SearchError("--ray-actors applies with --ray ADDRESS only")
    if objective == "speculative":
        if ray_address is not None:
            raise SearchError("--ray runs the accuracy-vs-speed search (--objective pareto); --objective speculative "
                              "runs on this machine only")
        run_speculative(target_spec=target_spec, model=model, profile_path=profile_path, search_dir=search_dir,
                        drafts=drafts, max_draft_tokens=max_draft_tokens, prompts=prompts, new_tokens=new_tokens,
                        calibration=calibration, out=out, resume=resume, seed=seed, recovery=recovery, quiet=no_progress)
        return
    from hwnas.errors import SearchError
    from hwnas.search.config import SearchConfig
    from hwnas.search.objectives import constraints_from_options, parse_objectives
    from hwnas.search.store import SearchStore

    # ---------------------------------------------------------------- cheap checks first
    config = SearchConfig(
        objectives=parse_objectives(objectives),
        constraints=constraints_from_options(max_tpot_ms, None if min_accuracy is None else min_accuracy / 100),
        strategy=strategy, evaluations=evaluations, population=population, seed=seed, metric=metric,
    )
    if limit < 1:
        raise SearchError(f"--limit must be >= 1 item per task, got {limit}")
    if report_limit < 0:
        raise SearchError(f"--report-limit must be >= 0 (0 skips the report split), got {report_limit}")
    check_space_file(space_file, quant)
    setup = prepare_search(target_spec, model, tasks, metric, limit, profile_path, data_dir, quant=quant)
    check_resources("search", model, samples=evaluations)
    out = out or f"search-{setup['target'].name}"
    identity = {**setup["identity"], "objectives": list(config.objectives),
                "constraints": [c.to_dict() for c in config.constraints], "strategy": config.strategy,
                "seed": config.seed, "population": config.population, "recovery": recovery,
                "include_chance_tasks": include_chance_tasks}
    SearchStore.prepare(out, identity, resume)  # errors here leave --out untouched
    if resume and not (Path(out) / "config.json").is_file():
        raise SearchError(f"--resume: {out} holds no search to continue (no config.json); drop --resume to start a new one")

    if ray_address is not None:   # the same search on a Ray cluster (hwnas.search.cluster)
        from hwnas.cli.ray_search import run_search_on_cluster

        run_search_on_cluster(ray_address, ray_actors, setup, config, identity, out, resume, space_file, report_limit,
                              seed, recovery, quant, no_progress, generation_check=generation_check)
        return

    # ---------------------------------------------------------------- expensive part
    from hwnas.search.loop import run_search

    display = LiveDisplay(config, enabled=not no_progress)
    t_start = time.monotonic()
    with display:
        display.status("loading model and tasks")
        chance_kw = {"include_chance_tasks": True} if include_chance_tasks else {}
        space, validator, report_fn, run_info = build_validation(setup, space_file, report_limit, seed, display.status,
                                                                 recovery=recovery, quant=quant,
                                                                 generation_check=generation_check, **chance_kw)
        t_setup = time.monotonic() - t_start
        from hwnas.model.space import SubnetConfig

        seeds = [SubnetConfig.from_dict(d) for d in (run_info.get("seeds") or [])]
        result = run_search(space, validator, config, out=out, resume=resume, identity=identity, run_info=run_info,
                            report=report_fn, progress=display.progress, on_update=display.update,
                            remeasure=getattr(validator, "remeasure", None), seeds=seeds,
                            screen=validator.generation_screen if getattr(validator, "generation_reference", None) else None)
    write_stage_seconds(out, validator, run_info, t_setup, time.monotonic() - t_start)
    print_result(result)
    click.echo(f"wrote {out}/ (candidates.jsonl, pareto.json, history.jsonl, pareto.png, summary.md, config.json)")


def write_stage_seconds(out: str, validator: Any, run_info: dict[str, Any], setup_s: float, total_s: float) -> None:
    """OUT/stage_seconds.json: where this run's wall time went (setup incl. model loading, sensitivity and
    recovery set-up; per-candidate accuracy and latency; runtime effects; report split; final re-measurement)."""
    import os

    from hwnas.io import write_json_atomic

    stages = dict(getattr(validator, "seconds", {}) or {})
    sens = run_info.get("sensitivity") or {}
    doc = {"total_s": round(total_s, 1), "setup_s": round(setup_s, 1), "stages_s": stages,
           "sensitivity_table_s": sens.get("seconds"), "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
           # the choice-KL effect of each numeric runtime value (measured through the IR, cached per model)
           "runtime_effects": getattr(validator, "_runtime_effects", None),
           "note": "wall seconds on this host; cached steps (sensitivity, runtime effects, IRs) cost ~0 on a rerun"}
    write_json_atomic(Path(out) / "stage_seconds.json", doc)


# ---------------------------------------------------------------------------- setup
def prepare_search(target_spec: str, model: str, tasks: str, metric: str, limit: int, profile_path: str | None,
                   data_dir: str | None, quant: str = "int8") -> dict[str, Any]:
    """Resolve everything that can fail cheaply (target, tasks, profile, model file) before loading a model."""
    from hwnas.accuracy.tasks import parse_tasks
    from hwnas.datadir import resolve_data_dir
    from hwnas.errors import SearchError
    from hwnas.hardware.targets import load_target
    from hwnas.model.loading import resolve_model
    from hwnas.search.objectives import check_metric

    target = load_target(target_spec)
    check_metric(metric)
    check_multiple_choice_tasks(tasks, "search", "--metric token_kl ranks subnets by next-token fidelity on "
                                "WikiText-2 instead")
    task_objs = parse_tasks(tasks)  # unknown names fail here; local .jsonl paths stay paths
    task_list = [t.name for t in task_objs]
    data = resolve_data_dir(data_dir)
    profile = None
    latency_source = "measured"
    if profile_path:
        from hwnas.hardware.profile import load_profile

        profile = load_profile(profile_path)
        if profile.target.name != target.name:
            raise SearchError(f"--profile {profile_path} was made for target {profile.target.name!r}, not {target.name!r}")
        latency_source = f"predicted (profile from host {profile.host.fingerprint})"
        if quant == "auto" and profile.gene_model is None:
            raise SearchError(f"--profile {profile_path} was measured without weight-format/runtime variants, so it "
                              "cannot predict --quant auto candidates; run `hwnas profile --quant auto` or drop --profile")
    source = resolve_model(model)
    sha = source.sha256()
    return {
        "target": target, "source": source, "tasks": task_list, "task_objects": task_objs, "metric": metric, "limit": limit, "data_dir": data,
        "profile": profile, "profile_path": profile_path,
        "identity": {"model_sha256": sha, "tasks": task_list, "limit": limit, "target": target.name,
                     "latency_source": latency_source, "metric": metric},
    }
