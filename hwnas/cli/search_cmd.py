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
    comma_choices,
    data_dir_option,
    model_option,
    seed_option,
)

DEFAULT_TASKS = "arc_easy,arc_challenge,mmlu,piqa"
DEFAULT_EVALUATIONS = 24
DEFAULT_POPULATION = 8
DEFAULT_LIMIT = 50
FIDELITY_WINDOWS, FIDELITY_WINDOW = 8, 256  # --metric token_kl: 8 x 255 next-token positions of WikiText-2
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
           ray_address: str | None = None, ray_actors: int | None = None) -> None:
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
    from hwnas.cli.common import check_resources

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
                              seed, recovery, quant, no_progress)
        return

    # ---------------------------------------------------------------- expensive part
    from hwnas.search.loop import run_search

    display = LiveDisplay(config, enabled=not no_progress)
    t_start = time.monotonic()
    with display:
        display.status("loading model and tasks")
        chance_kw = {"include_chance_tasks": True} if include_chance_tasks else {}
        space, validator, report_fn, run_info = build_validation(setup, space_file, report_limit, seed, display.status,
                                                                 recovery=recovery, quant=quant, **chance_kw)
        t_setup = time.monotonic() - t_start
        from hwnas.model.space import SubnetConfig

        seeds = [SubnetConfig.from_dict(d) for d in (run_info.get("seeds") or [])]
        result = run_search(space, validator, config, out=out, resume=resume, identity=identity, run_info=run_info,
                            report=report_fn, progress=display.progress, on_update=display.update,
                            remeasure=getattr(validator, "remeasure", None), seeds=seeds)
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


def check_space_file(space_file: str | None, quant: str) -> None:
    """Cheap checks of a --space file before any model is loaded: it parses, and its deploy table (genes)
    comes with --quant auto and names known formats and runtime settings."""
    if not space_file:
        return
    from hwnas.errors import SearchError
    from hwnas.model.deploy_space import DeploySpace
    from hwnas.model.space import SearchSpace

    data = SearchSpace.read_file(space_file)
    deploy = data.get("deploy")
    if deploy is None:
        return
    if quant != "auto":
        raise SearchError(f"--space {space_file} has a deploy table (deployment genes); it applies with --quant auto only")
    DeploySpace.from_dict(deploy, defaults=DeploySpace(("int8",), ("int8",)))


def search_space(supernet: Any, space_file: str | None, quant: str, has_bf16: bool) -> Any:
    """The space searched: the supernet's, with deployment genes for --quant auto, then the --space file's overrides."""
    from hwnas.errors import SearchError
    from hwnas.model.deploy_space import DeploySpace
    from hwnas.model.space import SearchSpace

    space = supernet.space
    cfg = supernet.config
    hidden = int(cfg.hidden_size)
    heads = int(cfg.num_attention_heads)
    attn_in = (hidden, heads * int(getattr(cfg, "head_dim", None) or hidden // heads))
    if quant == "auto":
        space = space.with_(deploy=DeploySpace.default(attn_in + space.widths, has_bf16=has_bf16))
    if space_file:
        space = SearchSpace.from_file(space_file, defaults=space)
        if quant != "auto" and space.deploy is not None:
            raise SearchError(f"--space {space_file} has a deploy table (deployment genes); it applies with --quant auto only")
    if space.deploy is not None:
        space.deploy.check_widths(attn_in, (hidden,) + space.widths)
    return space


def build_validation(setup: dict[str, Any], space_file: str | None, report_limit: int, seed: int, status, *,
                     recovery: bool = True, include_chance_tasks: bool = False, quant: str = "int8") -> tuple:
    """Load the supernet and task suites; return (space, validator, report_fn or None, run_info)."""
    from hwnas.accuracy.evaluate import TaskSuite
    from hwnas.hardware.host import detect_host
    from hwnas.model.space import SearchSpace
    from hwnas.model.supernet import load_supernet
    from hwnas.search.validation import SubnetValidator

    loaded, supernet = load_supernet(setup["source"].spec)  # importance-ordered (cached after the first time)
    host = detect_host()
    supernet.space = search_space(supernet, space_file, quant, host.has_bf16)
    if recovery:
        from hwnas.model.recovery import make_recoverer

        supernet.recoverer = make_recoverer(supernet, loaded.tokenizer)
    suite = TaskSuite(loaded.tokenizer, setup["task_objects"], split="search", limit=setup["limit"], data_dir=setup["data_dir"])
    report_suite = (TaskSuite(loaded.tokenizer, setup["task_objects"], split="select", limit=report_limit,
                              data_dir=setup["data_dir"]) if report_limit else None)
    profile = setup["profile"]
    if profile is not None:
        space = supernet.space
        pm = profile.model
        got = (pm.get("num_layers"), pm.get("full_width"), pm.get("hidden_size"))
        want = (space.num_layers, space.full_width, int(supernet.config.hidden_size))
        if got != want:
            from hwnas.errors import SearchError

            raise SearchError(f"--profile {setup['profile_path']} describes a model with (layers, MLP width, hidden) = "
                              f"{got}, this model has {want}; profile this model first")
    fidelity = token_fidelity(loaded.tokenizer, setup["data_dir"], seed) if setup["metric"] == "token_kl" else None
    sens_info, seeds = sensitivity_seeds(supernet, loaded.tokenizer, setup, seed, status)
    model_id = setup["identity"]["model_sha256"][:12]
    validator = SubnetValidator(
        supernet, suite, target=setup["target"], model_id=model_id, metric=setup["metric"],
        latency_model=(None if profile is None else profile.gene_model if quant == "auto" else profile.latency_model),
        host=host, seed=seed, status=status,
        reference_key=loaded.source.content_sha256()[:16], fidelity=fidelity, include_chance_tasks=include_chance_tasks,
        ir_scorer=ir_scorer(loaded.tokenizer) if supernet.space.deploy is not None else None,
    )
    run_info = {
        "model": {**setup["source"].to_dict(), "sha256": setup["identity"]["model_sha256"]},
        "channel_order": bool(supernet.meta.get("channels_ordered", True)),
        "target": setup["target"].to_dict(),
        "host": host.to_dict(),
        "tasks": setup["tasks"], "limit": setup["limit"], "report_limit": report_limit, "metric": setup["metric"],
        "include_chance_tasks": include_chance_tasks,
        "token_fidelity": None if fidelity is None else {"task": "wikitext2", "split": "search",
                                                         "windows": FIDELITY_WINDOWS, "window": FIDELITY_WINDOW,
                                                         "tokens": fidelity.tokens},
        "items": {"search": suite.describe(), "select": report_suite.describe() if report_suite else None},
        "recovery": supernet.recoverer.describe() if supernet.recoverer is not None else None,
        "latency_source": setup["identity"]["latency_source"],
        "quant": quant,
        "sensitivity": sens_info,
        "seeds": [c.to_dict() for c in seeds],
        "profile": str(setup["profile_path"]) if setup["profile_path"] else None,
        "data_dir": str(setup["data_dir"]),
    }
    return supernet.space, validator, (validator.report(report_suite) if report_suite else None), run_info


def sensitivity_seeds(supernet: Any, tokenizer: Any, setup: dict[str, Any], seed: int, status) -> tuple[Any, list]:
    """--quant auto: per-layer int4 sensitivity (cached per model) as a predictor feature, and seed subnets
    (int4 except the most sensitive parts) for the initial population. ({}, []) without genes or WikiText-2."""
    import dataclasses
    import logging

    from hwnas.accuracy.fidelity import TokenFidelity
    from hwnas.errors import HwnasError
    from hwnas.search.sensitivity import SENSITIVITY_WINDOW, SENSITIVITY_WINDOWS, measure_sensitivity, seed_subnets

    space = supernet.space
    fmt = space.deploy.int4_probe_format() if space.deploy is not None else None
    if fmt is None:
        return None, []
    try:
        fid = TokenFidelity.from_task(tokenizer, "wikitext2", split="search", windows=SENSITIVITY_WINDOWS,
                                      window=SENSITIVITY_WINDOW, data_dir=setup["data_dir"], seed=seed)
    except (HwnasError, ValueError, OSError) as e:
        logging.getLogger(__name__).warning("no per-layer sensitivity (WikiText-2 unavailable: %s); random initial population", e)
        return None, []
    status(f"per-layer {fmt} sensitivity (cached per model)")
    sens = measure_sensitivity(supernet, fid, fmt, model_id=setup["identity"]["model_sha256"][:12],
                               progress=lambda d, t, label: status(f"{label} ({d}/{t})"))
    supernet.space = space.with_(deploy=dataclasses.replace(space.deploy, sensitivity=(sens.attention, sens.mlp)))
    return sens.to_dict(), seed_subnets(supernet.space, sens)


def ir_scorer(tokenizer: Any):
    """(IR folder, TaskSuite, properties) -> multiple-choice scoring with OpenVINO (hwnas.deploy.ir_accuracy)."""

    def score(folder: Any, suite: Any, properties: dict[str, Any]) -> dict[str, Any]:
        from hwnas.deploy.ir_accuracy import ir_accuracy

        props = {k: ("YES" if v else "NO") if isinstance(v, bool) else str(v) for k, v in properties.items()}
        return ir_accuracy(folder, tokenizer, suite=suite, properties=props, keep_items=True)

    return score


def token_fidelity(tokenizer: Any, data_dir: Any, seed: int) -> Any:
    """--metric token_kl: the WikiText-2 search-split windows subnets are compared on (as bench/signal_bench.py)."""
    from hwnas.accuracy.fidelity import TokenFidelity
    from hwnas.errors import SearchError

    try:
        return TokenFidelity.from_task(tokenizer, "wikitext2", split="search", windows=FIDELITY_WINDOWS,
                                       window=FIDELITY_WINDOW, data_dir=data_dir, seed=seed)
    except ValueError as e:
        raise SearchError(f"--metric token_kl: {e}") from None


# ---------------------------------------------------------------------------- live display
class LiveDisplay:
    """Iteration, validated count, front size, best accuracy at each latency, ETA (rich Live)."""

    def __init__(self, config: Any, enabled: bool = True):
        self.config = config
        self.enabled = enabled
        self.t0 = time.monotonic()
        self.state = None
        self.activity = ""
        self.new_done = 0
        self.t_search: float | None = None
        self.live = None
        self.cluster: Any = None   # --ray: () -> one line on nodes, busy actors, queued tasks

    def __enter__(self) -> "LiveDisplay":
        if self.enabled:
            from rich.live import Live

            self.live = Live(self.render(), refresh_per_second=2, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.update(self.render())
            self.live.__exit__(*exc)

    def status(self, msg: str) -> None:
        self.activity = msg
        self._refresh()

    def progress(self, done: int, total: int, label: str = "") -> None:
        self.activity = label
        self._refresh()

    def update(self, state: Any) -> None:
        if self.t_search is None:
            self.t_search = time.monotonic()  # model loading is over; ETA counts from here
        if state.last is not None:
            self.new_done += 1
        self.state = state
        self._refresh()

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.update(self.render())

    def eta(self) -> str:
        s = self.state
        if s is None or self.new_done == 0 or self.t_search is None or s.validated >= s.budget:
            return "-"
        per = (time.monotonic() - self.t_search) / self.new_done
        return _hms(per * (s.budget - s.validated))

    def render(self):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        s = self.state
        elapsed = _hms(time.monotonic() - self.t0)
        if s is None:
            head = Text(f"search ({self.config.strategy})  {self.activity}  elapsed {elapsed}")
            return head if self.cluster is None else Group(head, Text(self.cluster(), style="cyan"))
        hv = f"{s.hypervolume:.4f}" if s.hypervolume is not None else "-"
        head = Text.from_markup(
            f"[bold]search ({self.config.strategy})[/]  iteration {s.iteration}  validated {s.validated}/{s.budget}  "
            f"front {len(s.front)}  hypervolume {hv}  elapsed {elapsed}  ETA {self.eta()}"
        )
        x = next((o for o in self.config.objectives if o != "accuracy"), "tpot_ms")
        table = Table(title="best accuracy at each latency (validated Pareto front)", title_justify="left")
        table.add_column(x, justify="right")
        table.add_column("accuracy %", justify="right")
        table.add_column("subnet")
        for r in sorted(s.front, key=lambda r: r.get(x, 0))[:12]:
            table.add_row(f"{r.get(x, 0):.4g}", f"{100 * r.get('accuracy', 0):.1f}", f"{r['key']} ({r['description']})")
        extra = [Text(self.cluster(), style="cyan")] if self.cluster is not None else []
        return Group(head, *extra, Text(self.activity, style="dim"), table)


def _hms(sec: float) -> str:
    sec = int(max(0, sec))
    return f"{sec // 3600}:{sec % 3600 // 60:02d}:{sec % 60:02d}" if sec >= 3600 else f"{sec // 60}:{sec % 60:02d}"


def print_result(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    from hwnas.search.picking import speed_of
    from hwnas.search.report import fidelity_kl

    console = Console()
    full = result.full_model
    metric = result.config.metric
    kl_col = metric if any(fidelity_kl(r, metric) is not None for r in result.records) else None
    cols = ["subnet", "layers", "MLP", "acc % (search)", "acc % (report)", *([kl_col] if kl_col else []),
            "TPOT ms (search)", "TPOT ms (final)", "TTFT ms", "Δacc pts", "TPOT speed-up"]
    table = Table(title=f"Pareto front: {len(result.pareto)} of {len(result.records)} validated subnets "
                        f"({result.config.strategy}, accuracy ranked by {metric})")
    for c in cols:
        table.add_column(c, justify="left" if c == "subnet" else "right")
    rows = list(result.pareto)
    if full and full["key"] not in {r["key"] for r in rows}:
        rows.append(full)
    for r in rows:
        vs = r.get("vs_full") or {}
        w = r["subnet"]["mlp_widths"]
        table.add_row(
            r["key"] + (" (full)" if r.get("full_model") else ""), str(len(w)),
            f"{min(w)}-{max(w)}" if min(w) != max(w) else str(w[0]),
            f"{100 * r['accuracy']:.1f}",
            f"{100 * r['report']['accuracy']:.1f}" if r.get("report") else "-",
            *([f"{fidelity_kl(r, metric):.4f}" if fidelity_kl(r, metric) is not None else "-"] if kl_col else []),
            f"{r['tpot_ms']:.2f}" if r.get("tpot_ms") is not None else "-",
            f"{r['remeasured']['tpot_ms']:.2f}" if r.get("remeasured") else "-",
            f"{r['ttft_ms']:.1f}" if r.get("ttft_ms") is not None else "-",
            f"{vs['accuracy_points']:+.1f}" if vs.get("accuracy_points") is not None else "-",
            f"{vs['tpot_speedup']:.2f}x" if vs.get("tpot_speedup") else "-",
        )
    console.print(table)
    pick = result.pick_fastest_within(1.0)
    if pick is not None and pick.get("full_model"):
        console.print("fastest within 1 point of the full model: no subnet qualifies on both the search and the "
                      "report split; `--pick 'fastest-within 1.0'` would export the full model")
    elif pick is not None:
        vs = pick.get("vs_full") or {}
        console.print(f"fastest within 1 point of the full model: [bold]{pick['key']}[/] ({pick['description']}), "
                      f"{vs.get('accuracy_points', 0):+.1f} pts, TPOT {speed_of(pick):.2f} ms "
                      f"({vs.get('tpot_speedup', 1):.2f}x)")
    if any(r.get("remeasured") for r in result.pareto):
        console.print("TPOT (final): the front and the full model timed again in one interleaved session; "
                      "speed-ups use these")
    if any(r.get("latency_source", "").startswith("predicted") for r in result.records):
        console.print("[yellow]latency figures are predicted by the profile's latency model, not measured on this host[/]")
