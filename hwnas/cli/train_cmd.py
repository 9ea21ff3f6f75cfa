"""`hwnas train`: one-shot supernet fine-tuning (sandwich rule, optional in-place distillation)."""
from __future__ import annotations

import click

from hwnas.cli.common import Choice, model_option, progress_bar, quiet_option, seed_option

# hwnas.train.instatune's PRECISIONS and STRATEGIES, spelled here so `hwnas --help` does not import
# torch-side modules (tests/cli/test_bad_inputs.py checks they agree)
TRAIN_PRECISIONS = ("auto", "bf16", "fp32")
TRAIN_STRATEGIES = ("full", "random", "sandwich")


def register(main: click.Group) -> None:
    main.add_command(train)


@click.command()
@model_option
@click.option("--data", required=True, type=click.Path(),
              help="Training data: Alpaca .json, .jsonl ({text} or Alpaca), or .txt (one document per line).")
@click.option("--steps", "--max-steps", "steps", required=True, type=int, help="Optimizer steps (the schedule's length).")
@click.option("--out", required=True, type=click.Path(), help="Run folder; becomes a model folder (--model OUT) when done.")
@click.option("--strategy", type=Choice(TRAIN_STRATEGIES), default="sandwich", show_default=True,
              help="Subnets per step: sandwich = largest + smallest + k random; random = k random; full = full model only.")
@click.option("--k", type=int, default=2, show_default=True, help="Random subnets per step.")
@click.option("--distill", is_flag=True, help="Smaller subnets learn the largest subnet's outputs (KL, in-place distillation).")
@click.option("--temperature", type=float, default=1.0, show_default=True, help="Distillation temperature.")
@click.option("--distill-weight", type=float, default=1.0, show_default=True,
              help="Distilled subnets' loss = w*KL + (1-w)*cross-entropy.")
@click.option("--lr", type=float, default=2e-5, show_default=True, help="Peak learning rate (AdamW).")
@click.option("--warmup-steps", type=int, default=-1, help="Linear warm-up steps before the cosine decay [default: 5% of --steps].")
@click.option("--batch-size", type=int, default=4, show_default=True, help="Sequences per micro-batch.")
@click.option("--seq-len", type=int, default=256, show_default=True, help="Tokens per packed sequence.")
@click.option("--grad-accum", type=int, default=1, show_default=True, help="Micro-batches per optimizer step.")
@click.option("--precision", type=Choice(TRAIN_PRECISIONS), default="auto", show_default=True,
              help="bf16 autocast or fp32; auto = bf16 on CUDA/AMX, fp32 otherwise.")
@click.option("--grad-checkpointing", is_flag=True, help="Recompute activations in backward (less memory, ~30% slower).")
@click.option("--checkpoint-every", type=int, default=0, show_default=True, help="Checkpoint every N steps (0: only at the end).")
@click.option("--eval-every", type=int, default=0, show_default=True,
              help="Validation loss per subnet every N steps (0: before and after training only).")
@click.option("--val-sequences", type=int, default=8, show_default=True, help="Held-out sequences used for validation loss.")
@click.option("--train-on-prompt", is_flag=True, help="Instruction data: put loss on the prompt tokens too.")
@click.option("--keep-checkpoints", is_flag=True, help="Keep the last checkpoint after the run finishes.")
@click.option("--resume", is_flag=True, help="Continue the unfinished run in --out from its latest checkpoint.")
@click.option("--device", default="auto", show_default=True, help="auto (cuda when torch sees a GPU, else cpu), cpu, cuda, cuda:N.")
@seed_option
@quiet_option
def train(model: str, data: str, steps: int, out: str, strategy: str, k: int, distill: bool, temperature: float,
          distill_weight: float, lr: float, warmup_steps: int, batch_size: int, seq_len: int, grad_accum: int,
          precision: str, grad_checkpointing: bool, checkpoint_every: int, eval_every: int, val_sequences: int,
          train_on_prompt: bool, keep_checkpoints: bool, resume: bool, device: str, seed: int, quiet: bool) -> None:
    """Fine-tune --model once as a supernet so that its subnets work without retraining.

    Each step trains several subnets of the search space on the same batch (sandwich rule) on
    the shared weights. The finished --out folder is a model folder: pass it as --model to
    search, eval, extract and export.
    """
    from hwnas.train.instatune import TrainConfig
    from hwnas.train.instatune import train as run_train

    cfg = TrainConfig(
        steps=steps, strategy=strategy, k=k, distill=distill, temperature=temperature, distill_weight=distill_weight,
        lr=lr, warmup_steps=warmup_steps, batch_size=batch_size, seq_len=seq_len, grad_accum=grad_accum,
        precision=precision, grad_checkpointing=grad_checkpointing, checkpoint_every=checkpoint_every,
        eval_every=eval_every, val_sequences=val_sequences, train_on_prompt=train_on_prompt,
        keep_checkpoints=keep_checkpoints, device=device, seed=seed,
    )
    from pathlib import Path

    from hwnas.errors import DataError

    if not Path(data).is_file():
        raise DataError(f"--data {data} is not a file; give an Alpaca .json, a .jsonl or a .txt file")
    from hwnas.cli.common import check_resources

    check_resources("train", model, out=out, batch_tokens=batch_size * seq_len)
    with progress_bar("training", enabled=not quiet) as progress:
        result = run_train(model, data, out, cfg, resume=resume, progress=progress)
    click.echo(f"trained {result.steps_done} steps ({result.tokens:,} tokens, {result.wall_s:.0f} s, "
               f"{result.device}, {result.precision}); model folder: {result.out_dir}")
    click.echo("validation loss      before -> after")
    for name, sub in result.eval_subnets.items():
        before, after = result.val_loss_before.get(name), result.val_loss.get(name)
        desc = f"{len(sub['layers'])} layers, MLP {min(sub['mlp_widths'])}-{max(sub['mlp_widths'])}"
        click.echo(f"  {name:<10} {before:7.4f} -> {after:7.4f}   ({desc})")
