"""`hwnas heal`: distil one picked subnet from the full model for a step or time budget."""
from __future__ import annotations

import click

from hwnas.cli.common import (
    Choice,
    check_subnet_early,
    model_option,
    no_order_option,
    progress_bar,
    quiet_option,
    seed_option,
    subnet_options,
)

# hwnas.train.heal.TRAIN_MODES, spelled here so `hwnas --help` imports no torch-side module
HEAL_MODES = ("cheap", "all")


def register(main: click.Group) -> None:
    main.add_command(heal)


@click.command()
@model_option
@subnet_options
@click.option("--from", "search_dir", type=click.Path(file_okay=False), default=None,
              help="A `hwnas search` output folder to pick the subnet from (with --pick, as in export).")
@click.option("--pick", default=None, help="With --from: an index into pareto.json, a subnet key, or 'fastest-within POINTS'.")
@click.option("--out", required=True, type=click.Path(), help="Heal folder (then: hwnas export --heal OUT / hwnas eval --heal OUT).")
@click.option("--train", "mode", type=Choice(HEAL_MODES), default="cheap", show_default=True,
              help="cheap = RMSNorm weights and down_proj; all = every decoder-layer tensor (embeddings stay frozen).")
@click.option("--steps", type=click.IntRange(min=1), default=100, show_default=True,
              help="Optimizer steps at most (the schedule's length unless --minutes ends it first).")
@click.option("--minutes", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Wall-time budget; the schedule is fitted to it after 3 steps (0 = steps only).")
@click.option("--lr", type=click.FloatRange(min=0), default=0.0, help="Peak learning rate (AdamW) [default: 1e-4 cheap, 3e-5 all].")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True, help="Sequences per step.")
@click.option("--seq-len", type=click.IntRange(min=8), default=256, show_default=True, help="Tokens per sequence.")
@click.option("--data", type=click.Path(), default=None,
              help="Text to distil on (.jsonl {\"text\"}/.json/.txt or a folder); default: calibration/.")
@click.option("--recovery/--no-recovery", default=True, show_default=True,
              help="Start from the training-free recovered subnet (down_proj refit), as search and export score it.")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=20, show_default=True,
              help="Checkpoint every N steps, for --resume (0: none).")
@click.option("--resume", is_flag=True, help="Continue the unfinished heal in --out from its checkpoint.")
@click.option("--force", is_flag=True, help="Replace a non-empty --out folder.")
@no_order_option
@seed_option
@quiet_option
def heal(model, subnet_spec, layers, mlp_width, search_dir, pick, out, mode, steps, minutes, lr, batch_size, seq_len,
         data, recovery, checkpoint_every, resume, force, no_order, seed, quiet):
    """Distil a subnet from the full model (KL on logits) on calibration text, for --steps or --minutes.

    The subnet is --subnet/--layers/--mlp-width or --from DIR --pick RULE (with --resume: the one
    in --out). The student starts from the recovered subnet; its token KL and top-1 agreement with
    the full model on WikiText-2 (search split) are measured before and after. Ship it with
    `hwnas export --heal OUT`; score it with `hwnas eval --heal OUT`.
    """
    from hwnas.errors import InvalidSubnetError
    from hwnas.model.space import SubnetConfig, parse_subnet_spec
    from hwnas.model.healed import read_record
    from hwnas.train.heal import HealConfig, check_out
    from hwnas.train.heal import heal as run_heal

    cfg = HealConfig(train=mode, steps=steps, minutes=minutes, lr=lr, batch_size=batch_size, seq_len=seq_len,
                     checkpoint_every=checkpoint_every, seed=seed)
    given = sum(map(bool, (subnet_spec, search_dir, layers is not None or mlp_width is not None)))
    if given > 1:
        raise InvalidSubnetError("give one of --subnet, --layers/--mlp-width or --from/--pick")
    if bool(search_dir) != bool(pick):
        raise InvalidSubnetError("--from SEARCH_DIR and --pick go together")
    check_out(out, resume=resume, force=force)
    subnet = None
    if resume:
        subnet = SubnetConfig.from_dict(read_record(out)["subnet"])
    elif subnet_spec:
        check_subnet_early(model, subnet_spec, None, None)
        subnet = parse_subnet_spec(subnet_spec)
    elif search_dir:
        from hwnas.search.picking import pick_from_search

        subnet = pick_from_search(search_dir, pick).subnet
        if subnet is None:
            raise InvalidSubnetError(f"--pick {pick!r} chose the full model, which needs no heal")
    elif layers is None and mlp_width is None:
        raise InvalidSubnetError("give the subnet: --subnet SPEC, --layers N [--mlp-width W] or --from DIR --pick RULE")
    else:
        check_subnet_early(model, None, layers, mlp_width)
    texts = None
    if data:
        from hwnas.model.calibration import load_texts

        texts = load_texts(data)  # a bad --data fails before the model loads

    from hwnas.cli.common import check_resources
    from hwnas.model.supernet import load_supernet, resolve_subnet_option

    check_resources("heal", model, subnet=subnet,
                    layers=layers, mlp_width=mlp_width, out=out, batch_tokens=batch_size * seq_len, train_mode=mode)
    loaded, sn = load_supernet(model, order=not no_order)
    if subnet is None:
        subnet = resolve_subnet_option(None, layers, mlp_width, sn.full_width, space=sn.space)
    sn.space.validate(subnet, structure=False)
    if recovery:
        from hwnas.model.recovery import make_recoverer

        sn.recoverer = make_recoverer(sn, loaded.tokenizer)
    record = {**loaded.source.to_dict(), "sha256": loaded.source.sha256()}
    with progress_bar(f"heal {subnet.key}", enabled=not quiet) as progress:
        res = run_heal(sn, loaded.tokenizer, subnet, out, cfg, texts=texts, model_record=record, resume=resume,
                       force=force, progress=progress)
    click.echo(f"healed {subnet.key} ({subnet.describe()}): {res.steps_done} steps, {res.tokens:,} tokens, "
               f"{res.seconds / 60:.1f} min, {res.trained_parameters:,} parameters trained ({mode})"
               + (" - stopped by --minutes" if res.stopped_by == "time" else ""))
    b, a = res.fidelity_before, res.fidelity_after
    if b and a:
        click.echo(f"token KL to the full model {b['kl']:.4f} ± {b['kl_stderr']:.4f} -> {a['kl']:.4f} ± {a['kl_stderr']:.4f}; "
                   f"top-1 agreement {b['top1_agreement']:.3f} -> {a['top1_agreement']:.3f} "
                   f"({a['tokens']:,} WikiText-2 tokens, search split)")
    click.echo(f"heal folder: {res.out_dir} (use: hwnas export --heal {res.out_dir} --out BUNDLE)")
