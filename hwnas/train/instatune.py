"""One-shot supernet fine-tuning (InstaTune / LLaMA-NAS): train every subnet at once on shared weights.

Each optimizer step runs the subnets a *strategy* picks on the same batch and accumulates their
gradients into the shared parameters (the supernet slices weights, so a subnet's gradient lands
exactly on the weights it uses). The default ``sandwich`` strategy trains the largest subnet,
the smallest and ``k`` random ones (BigNAS / once-for-all); with ``distill`` the smaller subnets
learn the largest subnet's (detached) output distribution by KL divergence instead of, or as
well as, the data labels.

A run lives in one output folder::

    OUT/hwnas_train_run.json      what this run is (config, model and data hashes) and its status
    OUT/train_log.jsonl           one line per step (losses per subnet, lr, tokens/s) and per validation
    OUT/checkpoints/step-NNNNNNN/ latest checkpoint (model, optimizer, scheduler, RNG, data position)

and, when finished, OUT is also a model folder (``Supernet.save``: safetensors with the channel
order applied, tokenizer, ``hwnas_supernet.json`` with the search space, training config and
per-subnet validation losses) that every command accepts as ``--model OUT``. The folder's
bookkeeping (may --out be used, latest checkpoint, atomic final folder) is in `run_folder.py`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hwnas.model.space import SearchSpace, SubnetConfig
from hwnas.train.run_folder import (
    CKPT_DIR,
    LOG_FILE,
    RUN_FILE,
    TrainError,
    check_run_dir,
    finalize,
    fingerprint,
    iter_log,  # noqa: F401 - re-exported: hwnas.train.instatune.iter_log is public
    latest_checkpoint,
    run_versions,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
PRECISIONS = ("auto", "bf16", "fp32")
IGNORE_INDEX = -100
# Config fields that do not change the trained weights: they may differ when a run is resumed.
NON_RESULT_FIELDS = ("device", "checkpoint_every", "eval_every", "keep_checkpoints")

Progress = Callable[[int, int, str], None]


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run (everything that decides the result, plus bookkeeping)."""

    steps: int
    strategy: str = "sandwich"
    k: int = 2
    distill: bool = False
    temperature: float = 1.0
    distill_weight: float = 1.0  # loss of a distilled subnet = w * KL + (1 - w) * CE
    lr: float = 2e-5
    min_lr_ratio: float = 0.1
    warmup_steps: int = -1  # -1: 5% of steps
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    batch_size: int = 4
    seq_len: int = 256
    grad_accum: int = 1
    precision: str = "auto"  # "auto" | "bf16" | "fp32"
    grad_checkpointing: bool = False
    val_fraction: float = 0.05
    val_sequences: int = 8
    eval_subnets: int = 2  # fixed random subnets validated besides the largest and smallest
    train_on_prompt: bool = False
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 0  # 0: only at the end (and when stopped early)
    eval_every: int = 0  # 0: before and after training only
    keep_checkpoints: bool = False
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        def bad(name: str, accepted: str) -> TrainError:
            return TrainError(f"{name}={getattr(self, name)!r} is invalid; {accepted}")

        if self.steps < 1:
            raise bad("steps", "give at least 1 training step")
        if self.strategy not in STRATEGIES:
            raise bad("strategy", f"accepted: {sorted(STRATEGIES)}")
        if self.k < 0:
            raise bad("k", "give 0 or more random subnets per step")
        if self.strategy == "random" and self.k < 1:
            raise bad("k", "strategy 'random' needs k >= 1")
        if self.distill and self.strategy == "full":
            raise TrainError("distillation needs a strategy that trains smaller subnets ('sandwich' or 'random'), not 'full'")
        if not self.lr > 0:
            raise bad("lr", "give a positive learning rate")
        if not 0 <= self.min_lr_ratio <= 1:
            raise bad("min_lr_ratio", "give a ratio in 0..1")
        if self.temperature <= 0:
            raise bad("temperature", "give a positive temperature")
        if not 0 <= self.distill_weight <= 1:
            raise bad("distill_weight", "give a weight in 0..1")
        for name in ("batch_size", "grad_accum", "val_sequences"):
            if getattr(self, name) < 1:
                raise bad(name, "give at least 1")
        if self.seq_len < 8:
            raise bad("seq_len", "give at least 8 tokens")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"accepted: {list(PRECISIONS)}")
        if self.checkpoint_every < 0 or self.eval_every < 0:
            raise TrainError("checkpoint_every and eval_every must be >= 0 (0 = only at the end)")

    @property
    def warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps >= 0 else max(1, round(0.05 * self.steps)) if self.steps > 1 else 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise TrainError(f"unknown training option(s) {unknown}; accepted: {sorted(known)}")
        return cls(**d)

    def result_fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if k not in NON_RESULT_FIELDS}


# --------------------------------------------------------------------------- strategies
class Strategy:
    """Which subnets one training step runs, as (role, subnet) pairs; role names the subnet size."""

    name = ""

    def __init__(self, k: int = 2):
        self.k = k

    def subnets(self, space: SearchSpace, rng: np.random.Generator) -> list[tuple[str, SubnetConfig]]:
        raise NotImplementedError


class Sandwich(Strategy):
    """The largest, the smallest and k random subnets (the sandwich rule of BigNAS / once-for-all)."""

    name = "sandwich"

    def subnets(self, space, rng):
        picks = [("largest", space.largest()), ("smallest", space.smallest())]
        return picks + [(f"random-{i + 1}", space.sample(rng)) for i in range(self.k)]


class RandomSubnets(Strategy):
    """k random subnets per step (no guaranteed extremes)."""

    name = "random"

    def subnets(self, space, rng):
        return [(f"random-{i + 1}", space.sample(rng)) for i in range(self.k)]


class FullOnly(Strategy):
    """Plain fine-tuning of the full model (the baseline the other strategies are compared with)."""

    name = "full"

    def subnets(self, space, rng):
        return [("largest", space.largest())]


STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Add a strategy class to the registry under its `name` (usable as a decorator)."""
    if not cls.name:
        raise TrainError(f"strategy class {cls.__name__} has no name")
    STRATEGIES[cls.name] = cls
    return cls


for _cls in (Sandwich, RandomSubnets, FullOnly):
    register_strategy(_cls)


def get_strategy(name: str, k: int = 2) -> Strategy:
    if name not in STRATEGIES:
        raise TrainError(f"strategy {name!r} is unknown; accepted: {sorted(STRATEGIES)}")
    return STRATEGIES[name](k=k)


# --------------------------------------------------------------------------- losses and schedule
def lm_loss(logits: Any, labels: Any) -> Any:
    """Mean next-token cross entropy over positions whose label is not IGNORE_INDEX (float32)."""
    import torch.nn.functional as F

    v = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, v), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)


def distill_loss(student_logits: Any, teacher_logits: Any, labels: Any, temperature: float = 1.0) -> Any:
    """KL(teacher || student) of the temperature-softened next-token distributions, T^2-scaled,
    averaged over the positions that carry loss. Exactly zero when student equals teacher."""
    import torch.nn.functional as F

    t = temperature
    s = F.log_softmax(student_logits[:, :-1].float() / t, dim=-1)
    q = F.log_softmax(teacher_logits[:, :-1].detach().float() / t, dim=-1)
    kl = F.kl_div(s, q, log_target=True, reduction="none").sum(-1)
    mask = (labels[:, 1:] != IGNORE_INDEX).to(kl.dtype)
    return (kl * mask).sum() / mask.sum().clamp_min(1.0) * (t * t)


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to `min_ratio` at `total` (step is 0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------- device / precision
def resolve_device(spec: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; 'cuda[:N]' must exist."""
    import torch

    spec = (spec or "auto").lower()
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainError(f"device {spec!r} requested but torch sees no CUDA GPU; use --device cpu")
        return spec
    raise TrainError(f"device {spec!r} is not supported; accepted: auto, cpu, cuda, cuda:N")


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 dot products (AVX-512 BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n", 1)[0].split()
    except (OSError, IndexError):
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: str) -> str:
    """'auto' -> bf16 autocast on a bf16-capable GPU or on a CPU with AMX; fp32 otherwise.

    On a CPU with AVX-512 BF16 but no AMX, bf16 autocast measured no faster than fp32 for this
    model size (see bench/train_bench.py) and costs accuracy, so 'auto' keeps fp32 there.
    """
    import torch

    from hwnas.precision import forced_precision

    if precision != "auto":
        if precision == "bf16" and device == "cpu" and not cpu_has_bf16():
            log.warning("bf16 requested but this CPU has no native bf16; it will be emulated (slow)")
        return precision
    if forced_precision():  # $HWNAS_PRECISION forces one precision for the whole run
        return forced_precision()
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return "bf16" if "amx_bf16" in flags else "fp32"


# --------------------------------------------------------------------------- data order
class Batches:
    """Epoch-wise shuffled batches of sequence indices drawn from the run's one Generator."""

    def __init__(self, n: int, batch_size: int, rng: np.random.Generator):
        self.n, self.batch_size, self.rng = n, batch_size, rng
        self.perm: np.ndarray | None = None
        self.pos = 0
        self.epoch = 0

    def next(self) -> np.ndarray:
        if self.perm is None or self.pos + self.batch_size > self.n:
            self.perm = self.rng.permutation(self.n)
            self.pos = 0
            self.epoch += 1
        idx = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state(self) -> dict[str, Any]:
        return {"perm": None if self.perm is None else self.perm.tolist(), "pos": self.pos, "epoch": self.epoch}

    def load(self, st: dict[str, Any]) -> None:
        self.perm = None if st["perm"] is None else np.asarray(st["perm"], dtype=np.int64)
        self.pos, self.epoch = int(st["pos"]), int(st["epoch"])


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class TrainResult:
    """What a finished (or stopped) run produced."""

    out_dir: str
    steps_done: int
    steps: int
    complete: bool
    val_loss: dict[str, float]  # last validation: subnet name -> loss
    val_loss_before: dict[str, float]
    eval_subnets: dict[str, dict[str, Any]]  # name -> subnet dict
    tokens: int
    wall_s: float
    precision: str
    device: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainResult":
        return cls(**{f.name: d[f.name] for f in fields(cls)})


def eval_subnet_set(space: SearchSpace, n_random: int, seed: int) -> dict[str, SubnetConfig]:
    """Fixed validation subnets: largest, smallest and n_random random ones (own generator, so
    validating never changes the training sequence)."""
    rng = np.random.default_rng([seed, 7919])
    out = {"largest": space.largest(), "smallest": space.smallest()}
    for i in range(n_random):
        out[f"random-{i + 1}"] = space.sample(rng)
    return out


def validation_loss(sn: Any, ids: np.ndarray, labels: np.ndarray, subnets: dict[str, SubnetConfig], *,
                    batch_size: int, device: str, precision: str) -> dict[str, float]:
    """Token-weighted mean next-token loss of each subnet on the held-out sequences."""
    import torch
    import torch.nn.functional as F

    model = sn.model
    was_training = model.training
    model.eval()
    out: dict[str, float] = {}
    try:
        for name, cfg in subnets.items():
            total, count = 0.0, 0
            with sn.subnet(cfg), torch.no_grad():
                for i in range(0, len(ids), batch_size):
                    x = torch.as_tensor(ids[i:i + batch_size], device=device)
                    y = torch.as_tensor(labels[i:i + batch_size], device=device)
                    with _autocast(device, precision):
                        logits = model(input_ids=x, use_cache=False).logits
                    v = logits.shape[-1]
                    loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, v), y[:, 1:].reshape(-1),
                                           ignore_index=IGNORE_INDEX, reduction="sum")
                    total += float(loss)
                    count += int((y[:, 1:] != IGNORE_INDEX).sum())
            out[name] = total / max(count, 1)
    finally:
        model.train(was_training)
    return out


def accumulate_gradients(sn: Any, picks: list[tuple[str, SubnetConfig]], x: Any, y: Any, config: TrainConfig, *,
                         device: str = "cpu", precision: str = "fp32") -> dict[str, float]:
    """Forward and backward every picked subnet on one batch; gradients add up in the shared
    parameters (scaled by 1/grad_accum). With `config.distill`, subnets other than the largest
    learn the largest subnet's detached logits. Returns each subnet's loss."""
    import torch

    model = sn.model
    losses: dict[str, float] = {}
    teacher = None
    picks = sorted(picks, key=lambda p: p[0] != "largest")  # the teacher runs first
    if config.distill and not any(role == "largest" for role, _ in picks):
        with sn.subnet(sn.space.largest()), torch.no_grad(), _autocast(device, precision):
            teacher = model(input_ids=x, use_cache=False).logits.detach()
    for role, cfg in picks:
        with sn.subnet(cfg):  # backward inside: checkpointed layers recompute with this subnet's widths
            with _autocast(device, precision):
                logits = model(input_ids=x, use_cache=False).logits
            if config.distill and role == "largest":
                teacher = logits.detach()
            if config.distill and role != "largest" and teacher is not None:
                loss = config.distill_weight * distill_loss(logits, teacher, y, config.temperature)
                if config.distill_weight < 1:
                    loss = loss + (1 - config.distill_weight) * lm_loss(logits, y)
            else:
                loss = lm_loss(logits, y)
            (loss / config.grad_accum).backward()
        losses[role] = float(loss.detach())
        del logits, loss
    return losses


def _autocast(device: str, precision: str):
    import torch

    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)


# --------------------------------------------------------------------------- the loop
def train(
    model: Any,
    data: str | Path,
    out_dir: str | Path,
    config: TrainConfig,
    *,
    resume: bool = False,
    space: SearchSpace | None = None,
    calib_texts: list[str] | None = None,
    progress: Progress | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Fine-tune `model` (a --model spec, ModelSource or LoadedModel) as a supernet on `data`.

    Writes the run into `out_dir` (see the module docstring); with `resume` continues its latest
    checkpoint on the same schedule. `stop_after` ends this invocation after that many optimizer
    steps (with a checkpoint), so a long run can be done in slices. Returns a TrainResult.
    """
    import torch

    out = Path(out_dir)
    progress = progress or (lambda done, total, label="": None)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    source, data, model_sha, fp, action = _check_inputs(model, data, out, config, space, resume)
    if action == "done":
        run = json.loads((out / RUN_FILE).read_text(encoding="utf-8"))
        log.info("%s already holds this finished run", out)
        return TrainResult.from_dict(run["result"])

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    ckpt = latest_checkpoint(out) if action == "resume" else None
    state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=False) if ckpt else None
    loaded, sn = _load_supernet(model, source, state, space, calib_texts)
    td = _load_data(data, loaded.tokenizer, config)
    run = _Run(out, config, sn, td, rng, device, precision)
    if state is not None:
        run.restore(state)
    else:
        run.clear_folder()
    run.write_record(fp, source, model_sha)
    if not run.val_history:
        progress(0, config.steps, "validating before training")
        run.validate()
    run.iterate(progress, stop_after)
    return run.finish(loaded.tokenizer, progress)


# --------------------------------------------------------------------------- steps of train()
def _check_inputs(model: Any, data: str | Path, out: Path, config: TrainConfig, space: SearchSpace | None,
                  resume: bool) -> tuple[Any, Path, str, dict[str, Any], str]:
    """Cheap checks before anything is loaded: model source, data format, what --out holds.

    Returns (model source, data path, model sha256, run fingerprint, 'new' | 'resume' | 'done').
    """
    import hashlib

    from hwnas.model.loading import LoadedModel, ModelSource, resolve_model
    from hwnas.train.data import read_examples

    if isinstance(model, LoadedModel):
        source = model.source
    else:
        source = model if isinstance(model, ModelSource) else resolve_model(str(model))
    data = Path(data)
    read_examples(data)  # format / emptiness errors before anything is loaded
    model_sha = source.sha256()
    data_sha = hashlib.sha256(data.read_bytes()).hexdigest()
    fp = fingerprint(config, model_sha, data_sha, space.to_dict() if space else None)
    return source, data, model_sha, fp, check_run_dir(out, fp, resume)


def _load_supernet(model: Any, source: Any, state: dict[str, Any] | None, space: SearchSpace | None,
                   calib_texts: list[str] | None) -> tuple[Any, Any]:
    """(LoadedModel, Supernet) to train: the checkpoint's ordered weights on resume, else a fresh supernet."""
    from hwnas.model.loading import LoadedModel, load_model
    from hwnas.model.supernet import Supernet, load_supernet

    if state is not None:  # the checkpoint holds the ordered weights and the supernet metadata
        loaded = model if isinstance(model, LoadedModel) else load_model(source, dtype="float32")  # trained in fp32
        sn = Supernet(loaded.model, space=SearchSpace.from_dict(state["space"]), meta=state["supernet_meta"])
        sn.model.load_state_dict(state["model"])
    elif isinstance(model, LoadedModel):
        loaded = model
        sn = Supernet.from_loaded(loaded, calib_texts, space=space)
    else:
        loaded, sn = load_supernet(source.spec, calib_texts=calib_texts, dtype="float32")  # ordered weights are cached
        if space is not None:
            sn.space = space
    return loaded, sn


def _load_data(data: Path, tokenizer: Any, config: TrainConfig) -> Any:
    """Tokenized, packed training and validation sequences; at least one full batch of training ones."""
    from hwnas.train.data import load_training_data

    td = load_training_data(data, tokenizer, seq_len=config.seq_len, val_fraction=config.val_fraction,
                            max_val_sequences=config.val_sequences, seed=config.seed,
                            train_on_prompt=config.train_on_prompt)
    if len(td.train_ids) < config.batch_size:
        raise TrainError(f"{data} packs into {len(td.train_ids)} training sequences of {config.seq_len} tokens, "
                         f"fewer than --batch-size {config.batch_size}; lower --batch-size or --seq-len")
    return td


class _Run:
    """One invocation of a training run: the supernet in training mode, optimizer, data order, counters."""

    def __init__(self, out: Path, config: TrainConfig, sn: Any, td: Any, rng: np.random.Generator,
                 device: str, precision: str) -> None:
        import torch

        self.out, self.config, self.sn, self.td, self.rng = out, config, sn, td, rng
        self.device, self.precision = device, precision
        sn.reset()
        self.model = sn.model.to(device)
        self.model.train()
        if config.grad_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model.config.use_cache = False
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.95))
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_factor(s, config.steps, config.warmup, config.min_lr_ratio))
        self.batches = Batches(len(td.train_ids), config.batch_size, rng)
        self.strategy = get_strategy(config.strategy, config.k)
        self.eval_set = eval_subnet_set(sn.space, config.eval_subnets, config.seed)
        self.step, self.tokens, self.wall_prev = 0, 0, 0.0
        self.val_history: list[dict[str, Any]] = []
        self.record: dict[str, Any] = {}
        self.t_start = time.perf_counter()

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint: optimizer, schedule, RNGs, data position; drop log lines after it."""
        import torch

        from hwnas.io import read_jsonl, write_text_atomic

        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.rng.bit_generator.state = state["np_rng"]
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and self.device.startswith("cuda"):
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.batches.load(state["batches"])
        self.step, self.tokens, self.wall_prev = state["step"], state["tokens"], state["wall_s"]
        self.val_history = state["val_history"]
        kept = [r for r in read_jsonl(self.out / LOG_FILE) if r.get("step", 0) <= self.step]
        write_text_atomic(self.out / LOG_FILE, "".join(json.dumps(r) + "\n" for r in kept))
        log.info("resuming %s from step %d", self.out, self.step)

    def clear_folder(self) -> None:
        """A new run: remove checkpoints and log of an unfinished run that is started over."""
        if self.out.exists():
            shutil.rmtree(self.out / CKPT_DIR, ignore_errors=True)
            (self.out / LOG_FILE).unlink(missing_ok=True)
        self.out.mkdir(parents=True, exist_ok=True)

    def write_record(self, fp: dict[str, Any], source: Any, model_sha: str) -> None:
        """Write hwnas_train_run.json with status 'running', so --out is recognised on resume."""
        import torch

        from hwnas.io import write_json_atomic

        self.record = {
            "schema_version": SCHEMA_VERSION, "status": "running", "fingerprint": fp,
            "config": self.config.to_dict(), "model": {**source.to_dict(), "sha256": model_sha}, "data": self.td.info,
            "device": self.device, "precision": self.precision,
            "eval_subnets": {k: v.to_dict() for k, v in self.eval_set.items()},
            "versions": run_versions(), "host": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        }
        write_json_atomic(self.out / RUN_FILE, self.record)

    def validate(self) -> dict[str, float]:
        """Validation loss of every eval subnet at the current step, kept in val_history and the log."""
        from hwnas.io import append_jsonl

        v = validation_loss(self.sn, self.td.val_ids, self.td.val_labels, self.eval_set,
                            batch_size=self.config.batch_size, device=self.device, precision=self.precision)
        self.val_history.append({"step": self.step, "val_loss": v})
        append_jsonl(self.out / LOG_FILE, {"step": self.step, "val_loss": v})
        return v

    def iterate(self, progress: Progress, stop_after: int | None) -> None:
        """Optimizer steps until the schedule ends or `stop_after` steps ran, validating and checkpointing on the way."""
        config = self.config
        self.t_start = time.perf_counter()
        ran = 0
        while self.step < config.steps:
            self.train_step(progress)
            ran += 1
            last = self.step == config.steps
            if config.eval_every and self.step % config.eval_every == 0 and not last:
                self.validate()
            stopping = stop_after is not None and ran >= stop_after and not last
            if not last and (stopping or (config.checkpoint_every and self.step % config.checkpoint_every == 0)):
                self.save_checkpoint()
            if stopping:
                break

    def train_step(self, progress: Progress) -> None:
        """One optimizer step over grad_accum batches of the subnets the strategy picks; logged to train_log.jsonl."""
        import torch

        from hwnas.io import append_jsonl

        config = self.config
        tok_per_step = config.batch_size * config.seq_len * config.grad_accum
        t0 = time.perf_counter()
        picks = self.strategy.subnets(self.sn.space, self.rng)
        losses: dict[str, float] = {}
        self.opt.zero_grad(set_to_none=True)
        for _ in range(config.grad_accum):
            idx = self.batches.next()
            x = torch.as_tensor(self.td.train_ids[idx], device=self.device)
            y = torch.as_tensor(self.td.train_labels[idx], device=self.device)
            for role, v in accumulate_gradients(self.sn, picks, x, y, config, device=self.device,
                                                precision=self.precision).items():
                losses[role] = losses.get(role, 0.0) + v / config.grad_accum
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, config.max_grad_norm)
        lr = self.opt.param_groups[0]["lr"]
        self.opt.step()
        self.sched.step()
        self.step += 1
        self.tokens += tok_per_step
        dt = time.perf_counter() - t0
        rec = {"step": self.step, "lr": lr, "loss": losses, "tokens_per_s": tok_per_step / dt,
               "subnets": {r: c.key for r, c in picks}}
        append_jsonl(self.out / LOG_FILE, rec)
        progress(self.step, config.steps, f"loss {_loss_label(losses)} | {tok_per_step / dt:.0f} tok/s")

    def save_checkpoint(self) -> None:
        """Replace the latest checkpoint with the full state at this step (weights unsliced, RNGs, data position)."""
        import torch

        from hwnas.io import atomic_dir

        self.sn.reset()
        ck_root = self.out / CKPT_DIR
        ck_root.mkdir(exist_ok=True)
        target = ck_root / f"step-{self.step:07d}"
        with atomic_dir(target, force=True) as tmp:
            torch.save({
                "step": self.step, "tokens": self.tokens, "wall_s": self.wall_prev + (time.perf_counter() - self.t_start),
                "model": self.sn.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(),
                "np_rng": self.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if self.device.startswith("cuda") else None,
                "batches": self.batches.state(), "supernet_meta": self.sn.meta, "space": self.sn.space.to_dict(),
                "val_history": self.val_history,
            }, tmp / "state.pt")
        for old in ck_root.iterdir():
            if old != target and old.name.startswith("step-"):
                shutil.rmtree(old, ignore_errors=True)
        log.info("checkpoint at step %d", self.step)

    def finish(self, tokenizer: Any, progress: Progress) -> TrainResult:
        """A stopped run returns as is; a complete one is validated, saved as a model folder and marked complete."""
        from hwnas.io import write_json_atomic

        config, sn, model_t = self.config, self.sn, self.model
        wall = self.wall_prev + (time.perf_counter() - self.t_start)
        eval_subnets = {k: v.to_dict() for k, v in self.eval_set.items()}
        if self.step < config.steps:
            return TrainResult(str(self.out), self.step, config.steps, False, self.val_history[-1]["val_loss"],
                               self.val_history[0]["val_loss"], eval_subnets, self.tokens, wall, self.precision,
                               self.device)

        progress(self.step, config.steps, "validating after training")
        v_end = self.validate()
        result = TrainResult(str(self.out), self.step, config.steps, True, v_end, self.val_history[0]["val_loss"],
                             eval_subnets, self.tokens, wall, self.precision, self.device)
        training_meta = {
            "config": config.to_dict(), "model": self.record["model"], "data": self.td.info, "device": self.device,
            "precision": self.precision, "eval_subnets": self.record["eval_subnets"], "val_history": self.val_history,
            "val_loss_before": result.val_loss_before, "val_loss_after": v_end, "tokens": self.tokens, "wall_s": wall,
            "versions": self.record["versions"],
        }
        extra: dict[str, Any] = {"training": training_meta}
        if "training" in sn.meta:  # training a trained supernet again: keep the earlier record
            extra["previous_training"] = list(sn.meta.get("previous_training", [])) + [sn.meta["training"]]
        model_t.to("cpu")
        if config.grad_checkpointing:
            model_t.gradient_checkpointing_disable()
        model_t.config.use_cache = True
        model_t.eval()
        finalize(sn, tokenizer, self.out, extra)
        self.record.update(status="complete", result=result.to_dict())
        write_json_atomic(self.out / RUN_FILE, self.record)
        if not config.keep_checkpoints:
            shutil.rmtree(self.out / CKPT_DIR, ignore_errors=True)
        return result


def _loss_label(losses: dict[str, float]) -> str:
    """Progress text: L and S losses by name, the random subnets' mean as R."""
    rand = [v for r, v in losses.items() if r.startswith("random")]
    label = " ".join(f"{r[0].upper()} {v:.3f}" for r, v in losses.items() if not r.startswith("random"))
    if rand:
        label += f" R {sum(rand) / len(rand):.3f}"
    return label
