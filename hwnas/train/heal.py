"""Heal one picked subnet: distil it from the full model (KL on logits) for a step or time budget.

Training-free recovery (`hwnas.model.recovery`) refits `down_proj` in seconds but leaves the
rest of the subnet as sliced. A short distillation of the *one* subnet that will ship, with the
full model as teacher on calibration text, can close more of the gap: every CPU-minute spent
here goes to the pick, not to the whole supernet as `hwnas train` does.

The student is the dense subnet (`Supernet.extract`, recovered when a recoverer is set); only
its trainable tensors are copied (``cheap``: the RMSNorm weights and `down_proj`; ``all``:
every decoder-layer tensor and the final norm; embeddings stay frozen and shared with the
teacher), so memory grows by the trained tensors and their optimizer state, never by a copy of
the whole model. The teacher is the supernet's full model, run without gradients.

A heal folder::

    OUT/hwnas_heal.json     what was healed (model sha256, subnet, config), status, fidelity before/after
    OUT/heal_log.jsonl      one line per step (KL, lr, seconds) and per validation
    OUT/checkpoint.pt       latest checkpoint while running (trained tensors, optimizer, data position)
    OUT/healed.safetensors  the trained tensors, named as in the dense subnet, when done

`apply_heal` loads them onto a dense subnet; `hwnas export --heal OUT` and `hwnas eval --heal OUT`
use it, so the pick ships (and is scored, paired with the full model) as healed.
"""
from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from hwnas.model.healed import RECORD_FILE, TENSORS_FILE, HealError, read_record, set_param
from hwnas.model.space import SubnetConfig

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
LOG_FILE = "heal_log.jsonl"
CKPT_FILE = "checkpoint.pt"
TRAIN_MODES = ("cheap", "all")
DEFAULT_LR = {"cheap": 1e-4, "all": 3e-5}
# Config fields that do not change the result: they may differ when a run is resumed.
NON_RESULT_FIELDS = ("checkpoint_every", "minutes")

Progress = Callable[[int, int, str], None]


@dataclass
class HealConfig:
    train: str = "cheap"
    steps: int = 100
    minutes: float = 0.0        # wall-time cap; 0 = none. With a cap, the schedule's length is fitted to it
    lr: float = 0.0             # 0 = DEFAULT_LR[train]
    batch_size: int = 4
    seq_len: int = 256
    temperature: float = 1.0
    warmup_steps: int = 5
    checkpoint_every: int = 20
    eval_windows: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, accepted: str) -> HealError:
            return HealError(f"heal {name} {getattr(self, name)!r} is invalid; {accepted}")

        if self.train not in TRAIN_MODES:
            raise bad("train", f"accepted: {', '.join(TRAIN_MODES)}")
        if self.steps < 1:
            raise bad("steps", "accepted: an integer >= 1")
        if self.minutes < 0 or not math.isfinite(self.minutes):
            raise bad("minutes", "accepted: a number >= 0 (0 = no time cap)")
        if self.lr < 0 or not math.isfinite(self.lr):
            raise bad("lr", "accepted: a number > 0 (0 = the default for the train mode)")
        if self.batch_size < 1:
            raise bad("batch_size", "accepted: an integer >= 1")
        if self.seq_len < 8:
            raise bad("seq_len", "accepted: an integer >= 8")
        if self.temperature <= 0:
            raise bad("temperature", "accepted: a number > 0")
        if self.warmup_steps < 0 or self.checkpoint_every < 0 or self.eval_windows < 0:
            raise HealError("heal warmup_steps, checkpoint_every and eval_windows must be >= 0")

    @property
    def peak_lr(self) -> float:
        return self.lr or DEFAULT_LR[self.train]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HealConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def result_fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if k not in NON_RESULT_FIELDS}


@dataclass
class HealResult:
    out_dir: Path
    subnet: SubnetConfig
    steps_done: int
    total_steps: int
    tokens: int
    seconds: float
    trained_parameters: int
    fidelity_before: dict[str, Any] | None
    fidelity_after: dict[str, Any] | None
    stopped_by: str  # "steps" or "time"


# --------------------------------------------------------------------------- which tensors train
def trainable_names(dense: Any, mode: str) -> list[str]:
    """Names of the dense subnet's parameters that `mode` trains (never the shared embeddings / head)."""
    from hwnas.model.arch import adapter_for

    a = adapter_for(dense.config)
    final_norm = f"{a.final_norm}.weight"
    cheap = tuple(f".{n}." for n in a.norms.values()) + (f".{a.mlp['down']}.",)
    names = []
    for name, _ in dense.named_parameters():
        if not name.startswith(a.layers + ".") and name != final_norm:
            continue
        if mode == "all" or name == final_norm or any(c in name for c in cheap):
            names.append(name)
    return names


def make_student(dense: Any, mode: str) -> dict[str, Any]:
    """Freeze the dense subnet and give the trained tensors their own float32 storage; {name: parameter}.

    The frozen tensors stay in the dtype the model was loaded in (a float32 copy of a 16-bit subnet was
    what kept a 3B heal off a 24 GB machine). Small updates need float32 weights, gradients and AdamW
    moments, so the trained tensors are float32, and in a 16-bit model the modules that own them compute
    in float32 and hand back the model's dtype (`_float32_island`): every other module sees the tensors
    it would see in the loaded model. A float32 model is trained exactly as before (no hooks).
    """
    import torch

    dtype = next(dense.parameters()).dtype
    for p in dense.parameters():
        p.requires_grad_(False)
    params = {}
    for name in trainable_names(dense, mode):
        t = dense.get_parameter(name).detach().to(torch.float32, copy=True)
        params[name] = set_param(dense, name, t, requires_grad=True)
    if dtype != torch.float32:
        for module in sorted({n.rpartition(".")[0] for n in params}):
            _float32_island(dense.get_submodule(module), dtype)
    return params


def _float32_island(module: Any, dtype: Any) -> None:
    """Run `module` (whose trained tensors are float32) on float32 inputs and return its output in `dtype`.

    Why both casts: a float32 RMSNorm weight times a bf16 input gives float32, which the next bf16 Linear
    refuses; casting the input up keeps the module's own arithmetic in float32 (as the old float32 student
    did), casting the output down keeps the model's activations, attention and residual stream as loaded.
    Both casts are differentiable, so gradients reach the float32 tensors."""
    import torch

    def up(_m: Any, args: tuple) -> tuple:
        return tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)

    def down(_m: Any, _args: tuple, out: Any) -> Any:
        return out.to(dtype) if torch.is_tensor(out) and out.is_floating_point() else out

    module.register_forward_pre_hook(up)
    module.register_forward_hook(down)


# --------------------------------------------------------------------------- data
def token_windows(tokenizer: Any, texts: Sequence[str], seq_len: int) -> np.ndarray:
    """Documents joined by EOS and cut into full windows of `seq_len` tokens ([n, seq_len] int64)."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for t in texts:
        ids.extend(tokenizer(t, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(int(eos))
    n = len(ids) // seq_len
    if n < 1:
        raise HealError(f"the heal text gives {len(ids)} tokens, fewer than one window of {seq_len}; give more text")
    return np.asarray(ids[: n * seq_len], dtype=np.int64).reshape(n, seq_len)


def _recent_rate(durations: list[float]) -> float:
    """Seconds per step from the last 10 steps, leaving out a session's first (warm-up) step when others exist."""
    recent = durations[1:][-10:] or durations[-10:]
    return sum(recent) / len(recent)


def _fit_total(step: int, seconds: float, durations: list[float], config: HealConfig) -> int:
    """The schedule's length under a time budget, refitted every step from the recent step time.

    Fitting once from the first steps undercounted on a host that sped up after them (a 40-minute budget ended
    after 26 minutes); refitting from the remaining time keeps the cosine decay ending at the deadline.
    `total == step` ends the run when less than one step's time is left."""
    remaining = config.minutes * 60 - seconds
    return min(config.steps, step + max(0, int(remaining / _recent_rate(durations))))


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak at `total`."""
    if warmup and step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def kl_loss(student_logits: Any, teacher_logits: Any, temperature: float) -> Any:
    """KL(teacher || student) per position, averaged (T^2-scaled); every position carries loss."""
    import torch.nn.functional as F

    t = temperature
    s = F.log_softmax(student_logits.float() / t, dim=-1)
    q = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return F.kl_div(s, q, log_target=True, reduction="none").sum(-1).mean() * (t * t)


# --------------------------------------------------------------------------- the folder
def _write_record(out: Path, record: dict[str, Any]) -> None:
    from hwnas.io import write_json_atomic

    write_json_atomic(out / RECORD_FILE, record)


def _append_log(out: Path, entry: dict[str, Any]) -> None:
    with open(out / LOG_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _save_atomic(obj: Any, path: Path) -> None:
    import torch

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_out(out: str | Path, *, resume: bool, force: bool) -> Path:
    """The heal folder may be used: new/empty, or --resume of an unfinished heal, or --force."""
    import shutil

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise HealError(f"--out {out} is a file; give a folder")
    busy = out.is_dir() and any(out.iterdir())
    if resume:
        if not (out / RECORD_FILE).is_file():
            raise HealError(f"--resume: {out} holds no heal run ({RECORD_FILE} missing)")
        return out
    if busy:
        if not force:
            raise HealError(f"--out {out} is not empty; give a new folder, --resume an unfinished heal, or --force")
        shutil.rmtree(out)
    return out


# --------------------------------------------------------------------------- the run
def heal(
    supernet: Any,
    tokenizer: Any,
    subnet: SubnetConfig,
    out: str | Path,
    config: HealConfig | None = None,
    *,
    texts: Sequence[str] | None = None,
    model_record: dict[str, Any] | None = None,
    resume: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    fidelity: Any = None,
) -> HealResult:
    """Distil `subnet` of `supernet` from its full model; returns what was done (folder written atomically).

    `texts` default to the calibration texts; `fidelity` (a TokenFidelity, default WikiText-2
    search split) scores the student before and after. `model_record` (source + sha256) is stored
    so the heal is only applied to the model it was fitted on.
    """
    import torch

    config = config or HealConfig()
    out = check_out(out, resume=resume, force=force)
    tick = progress or (lambda done, total, label="": None)
    supernet.space.validate(subnet, structure=False)
    if subnet == supernet.full_config():
        raise HealError("the full model needs no heal; give a subnet")
    record = _start_record(out, supernet, subnet, config, model_record, resume)
    if texts is None:
        from hwnas.model.calibration import load_texts

        texts = load_texts()
    windows = token_windows(tokenizer, texts, config.seq_len)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)

    supernet.reset()
    dense = supernet.extract(subnet)  # in the loaded dtype: frozen tensors shared, not copied (make_student)
    # the student holds its recovered weights: recovery's calibration states ((layers + 1) x 16,384 tokens x
    # hidden, 2.7 GB at the 3B shape) and fitted subnets are rebuilt on next use, and training needs the memory
    if getattr(supernet, "recoverer", None) is not None:
        supernet.recoverer.release()
    params = make_student(dense, config.train)
    n_trained = int(sum(p.numel() for p in params.values()))
    # foreach=False: the multi-tensor step allocates temporaries the size of all trained tensors at once
    # (2.4 GB more at the 3B shape); one tensor at a time it needs one tensor's worth
    opt = torch.optim.AdamW(list(params.values()), lr=config.peak_lr, weight_decay=0.0, foreach=False)
    if fidelity is None and config.eval_windows:
        from hwnas.accuracy.fidelity import TokenFidelity

        fidelity = TokenFidelity.from_task(tokenizer, windows=config.eval_windows, precision="fp32")

    state = _load_checkpoint(out, params, opt) if resume and (out / CKPT_FILE).is_file() else None
    step = state["step"] if state else 0
    total = state["total"] if state else (config.steps if not config.minutes else None)
    seconds = state["seconds"] if state else 0.0
    order = state["order"] if state else rng.permutation(len(windows)).tolist()
    pos = state["pos"] if state else 0
    if state:
        rng.bit_generator.state = state["rng"]
        log.info("resuming heal at step %d/%s", step, total)
    elif fidelity is not None and record.get("fidelity_before") is None:
        tick(0, config.steps, "fidelity before")
        record["fidelity_before"] = _fidelity(fidelity, supernet, dense)
        _write_record(out, record)
        _append_log(out, {"step": 0, "validation": record["fidelity_before"]})

    teacher = supernet.model
    durations: list[float] = []  # this session's step times (seconds), to fit a time budget's schedule
    dense.train()
    stopped_by = "steps"
    t_start = time.perf_counter() - seconds
    while total is None or step < total:
        if config.minutes and time.perf_counter() - t_start >= config.minutes * 60:
            stopped_by = "time"
            break
        if pos + config.batch_size > len(order):
            order, pos = rng.permutation(len(windows)).tolist(), 0
        idx = order[pos:pos + config.batch_size]
        pos += config.batch_size
        x = torch.as_tensor(windows[idx])
        lr = lr_at(step, total or config.steps, config.warmup_steps, config.peak_lr)
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.no_grad():
            t_logits = teacher(input_ids=x, use_cache=False).logits
        s_logits = dense(input_ids=x, use_cache=False).logits
        loss = kl_loss(s_logits, t_logits, config.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        kl = float(loss.detach())
        del t_logits, s_logits, loss
        step += 1
        now = time.perf_counter() - t_start
        durations.append(now - seconds)
        seconds = now
        if config.minutes and step >= 3:
            fitted = _fit_total(step, seconds, durations, config)
            if total is None:
                log.info("time budget %.1f min: about %d steps (%.1f s/step)", config.minutes, fitted,
                         _recent_rate(durations))
            total = fitted
        _append_log(out, {"step": step, "kl": round(kl, 6), "lr": lr, "seconds": round(seconds, 2)})
        tick(step, total or config.steps, f"KL {kl:.4f}")
        if config.checkpoint_every and step % config.checkpoint_every == 0 and (total is None or step < total):
            _save_checkpoint(out, params, opt, {"step": step, "total": total, "seconds": seconds, "order": order,
                                                "pos": pos, "rng": rng.bit_generator.state})
    if config.minutes and stopped_by == "steps" and step < config.steps:
        stopped_by = "time"  # the refitted schedule ended at the deadline, not at --steps
    dense.eval()
    return _finish(out, record, supernet, dense, params, fidelity, subnet, step, total or step, windows, config,
                   seconds, n_trained, stopped_by, tick)


def _start_record(out: Path, supernet: Any, subnet: SubnetConfig, config: HealConfig,
                  model_record: dict[str, Any] | None, resume: bool) -> dict[str, Any]:
    if resume:
        rec = read_record(out)
        if rec.get("status") == "done":
            raise HealError(f"--resume: the heal in {out} is finished; give a new --out")
        mismatch = [k for k, a, b in (("subnet", rec.get("subnet"), subnet.to_dict()),
                                      ("config", {k: v for k, v in rec.get("config", {}).items() if k not in NON_RESULT_FIELDS},
                                       config.result_fields()),
                                      ("model", (rec.get("model") or {}).get("sha256"), (model_record or {}).get("sha256")))
                    if a != b]
        if mismatch:
            raise HealError(f"--resume: {', '.join(mismatch)} differ from the heal in {out}; give the same inputs or a new --out")
        rec["config"] = config.to_dict()
        return rec
    out.mkdir(parents=True, exist_ok=True)
    rec = {"schema_version": SCHEMA_VERSION, "status": "running", "model": model_record, "subnet": subnet.to_dict(),
           "subnet_key": subnet.key, "config": config.to_dict(), "recovery": supernet.recovery_record(subnet),
           "fidelity_before": None, "fidelity_after": None, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    _write_record(out, rec)
    return rec


def _fidelity(fidelity: Any, supernet: Any, dense: Any) -> dict[str, Any]:
    dense.eval()
    try:
        return fidelity.measure_model(supernet, dense)
    finally:
        dense.train()


def _save_checkpoint(out: Path, params: dict[str, Any], opt: Any, meta: dict[str, Any]) -> None:
    _save_atomic({"params": {k: p.detach().clone() for k, p in params.items()}, "optimizer": opt.state_dict(),
                  **meta}, out / CKPT_FILE)


def _load_checkpoint(out: Path, params: dict[str, Any], opt: Any) -> dict[str, Any]:
    import torch

    ck = torch.load(out / CKPT_FILE, weights_only=False)
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(ck["params"][k])
    opt.load_state_dict(ck["optimizer"])
    return ck


def _finish(out: Path, record: dict[str, Any], supernet: Any, dense: Any, params: dict[str, Any], fidelity: Any,
            subnet: SubnetConfig, step: int, total: int, windows: np.ndarray, config: HealConfig, seconds: float,
            n_trained: int, stopped_by: str, tick: Progress) -> HealResult:
    from safetensors.torch import save_file

    if fidelity is not None:
        tick(step, total, "fidelity after")
        record["fidelity_after"] = _fidelity(fidelity, supernet, dense)
        _append_log(out, {"step": step, "validation": record["fidelity_after"]})
    fd, tmp = tempfile.mkstemp(prefix=f".{TENSORS_FILE}.", suffix=".tmp", dir=out)
    os.close(fd)
    try:
        save_file({k: p.detach().contiguous() for k, p in params.items()}, tmp, metadata={"subnet": subnet.key})
        os.replace(tmp, out / TENSORS_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    tokens = step * config.batch_size * config.seq_len
    record.update(status="done", steps_done=step, total_steps=total, tokens=tokens, seconds=round(seconds, 1),
                  trained_parameters=n_trained, stopped_by=stopped_by, text_windows=int(len(windows)))
    _write_record(out, record)
    (out / CKPT_FILE).unlink(missing_ok=True)
    return HealResult(out_dir=out, subnet=subnet, steps_done=step, total_steps=total, tokens=tokens,
                      seconds=round(seconds, 1), trained_parameters=n_trained,
                      fidelity_before=record.get("fidelity_before"), fidelity_after=record.get("fidelity_after"),
                      stopped_by=stopped_by)
