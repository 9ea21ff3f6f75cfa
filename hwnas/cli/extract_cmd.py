"""`hwnas extract`: write a subnet out as a standalone, smaller model folder."""
from __future__ import annotations

import click

from hwnas.cli.common import (
    Choice,
    check_resources,
    check_subnet_early,
    describe_kept_layers,
    model_option,
    no_order_option,
    subnet_options,
)


def register(main: click.Group) -> None:
    main.add_command(extract)


@click.command()
@model_option
@subnet_options
@click.option("--out", "out", required=True, type=click.Path(), help="New folder for the extracted model.")
@click.option("--dtype", type=Choice(["auto", "float32", "bfloat16", "float16"]), default="auto", show_default=True,
              help="auto: the dtype the model is loaded in (its checkpoint's: bf16 for a bf16 or f16 checkpoint).")
@no_order_option
@click.option("--force", is_flag=True, help="Replace a non-empty --out folder.")
@click.option("--recovery/--no-recovery", default=True, show_default=True,
              help="Refit the subnet's down_proj weights to the full model on calibration text (training-free).")
def extract(model: str, subnet_spec: str | None, layers: int | None, mlp_width: int | None, out: str,
            dtype: str, no_order: bool, force: bool, recovery: bool = True) -> None:
    """Extract a subnet of --model into a dense model folder (safetensors + tokenizer).

    The folder loads back with `--model OUT` in every hwnas command; a uniform-width subnet is
    also a plain LLaMA checkpoint for any tool.
    """
    from hwnas.errors import InvalidSubnetError
    from hwnas.io import check_writable_dir_target
    from hwnas.model.supernet import load_supernet, resolve_subnet_option

    check_writable_dir_target(out, force=force)
    if not subnet_spec and layers is None and mlp_width is None:
        raise InvalidSubnetError("give the subnet: --subnet SPEC or --layers N [--mlp-width W]")
    check_subnet_early(model, subnet_spec, layers, mlp_width)  # input errors before the model loads
    check_resources("extract", model, subnet_spec=subnet_spec, layers=layers, mlp_width=mlp_width, out=out)
    loaded, sn = load_supernet(model, order=not no_order)
    cfg = resolve_subnet_option(subnet_spec, layers, mlp_width, sn.full_width, space=sn.space)
    sn.space.validate(cfg, structure=False)
    if recovery:
        from hwnas.model.recovery import make_recoverer

        sn.recoverer = make_recoverer(sn, loaded.tokenizer)
    path = sn.save_subnet(cfg, out, loaded.tokenizer, dtype=None if dtype == "auto" else dtype, force=force,
                          provenance={"model": loaded.source.to_dict(), "model_sha256": loaded.source.sha256(),
                                      "channel_order": not no_order, "recovery": sn.recovery_record(cfg)})
    click.echo(f"extracted {cfg.key} ({cfg.describe()}, {cfg.n_params(sn.config):,} parameters) to {path}")
    kept = describe_kept_layers(cfg, sn.space, layers)
    if kept:
        click.echo(kept)
