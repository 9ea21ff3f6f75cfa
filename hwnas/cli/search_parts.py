"""The pieces of `hwnas search` that a local run and a run on a Ray cluster (`hwnas.cli.ray_search`)
share: space and validation set-up, the live display and the printed result. They live below both
command modules so neither imports the other."""
from __future__ import annotations

import time
from typing import Any

FIDELITY_WINDOWS, FIDELITY_WINDOW = 8, 256  # --metric token_kl: 8 x 255 next-token positions of WikiText-2

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


def search_space(supernet: Any, space_file: str | None, quant: str, has_bf16: bool, source: Any = None) -> Any:
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
        from hwnas.model.source_grid import lossless_formats

        space = space.with_(deploy=DeploySpace.default(attn_in + space.widths, has_bf16=has_bf16,
                                                       source_formats=lossless_formats(source) if source else ()))
    if space_file:
        space = SearchSpace.from_file(space_file, defaults=space)
        if quant != "auto" and space.deploy is not None:
            raise SearchError(f"--space {space_file} has a deploy table (deployment genes); it applies with --quant auto only")
    if space.deploy is not None:
        space.deploy.check_widths(attn_in, (hidden,) + space.widths)
    return space


def build_validation(setup: dict[str, Any], space_file: str | None, report_limit: int, seed: int, status, *,
                     recovery: bool = True, include_chance_tasks: bool = False, quant: str = "int8",
                     generation_check: bool = True) -> tuple:
    """Load the supernet and task suites; return (space, validator, report_fn or None, run_info).
    generation_check: the validator can screen front records' generations before their report split
    (`SubnetValidator.generation_screen`, against the full model's reference that export shares)."""
    from hwnas.accuracy.evaluate import TaskSuite
    from hwnas.hardware.host import detect_host
    from hwnas.model.space import SearchSpace
    from hwnas.model.supernet import load_supernet
    from hwnas.search.validation import SubnetValidator

    loaded, supernet = load_supernet(setup["source"].spec)  # importance-ordered (cached after the first time)
    host = detect_host()
    supernet.space = search_space(supernet, space_file, quant, host.has_bf16, setup["source"])
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
        generation_reference=generation_reference(supernet, loaded) if generation_check and report_suite else None,
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
        "generation_check": bool(generation_check and report_suite),
    }
    return supernet.space, validator, (validator.report(report_suite) if report_suite else None), run_info


def generation_reference(supernet: Any, loaded: Any):
    """() -> the full model's greedy generations on the generation-check prompts, cached under the key
    export uses (`hwnas.accuracy.genquality.reference_cache_key`): the search's screen and the bundle's
    check compare with the same tokens, computed once per model."""
    from hwnas.accuracy.genquality import reference_cache_key, reference_generations

    def make():
        supernet.reset()   # the full model with float weights
        return reference_generations(supernet.model, loaded.tokenizer, cache_key=reference_cache_key(loaded))

    return make


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

    def score(folder: Any, suite: Any, properties: dict[str, Any], context_in_cache: bool = False) -> dict[str, Any]:
        from hwnas.deploy.ir_accuracy import ir_accuracy

        props = {k: ("YES" if v else "NO") if isinstance(v, bool) else str(v) for k, v in properties.items()}
        return ir_accuracy(folder, tokenizer, suite=suite, properties=props, keep_items=True,
                           context_in_cache=context_in_cache)

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
