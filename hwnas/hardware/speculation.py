"""Speed model of greedy speculative decoding with a draft model, and the timings it needs.

One verification step runs the draft k times (one token each, its TPOT) and then the full model
once over k+1 tokens; it yields the draft's agreeing run (at most k tokens) plus the full model's
own next token. So the expected decode speed of a (draft, k) pair follows from three measured
things: per-position greedy agreement of the draft with the full model (`tokens_per_step`), the
draft's cost per token, and the full model's cost of a pass over k+1 tokens (`step_costs_ms`).
Used by `hwnas search --objective speculative` (choosing the draft) and by the deploy stage.
"""
from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]


def default_draft(layer_order: Any, n_layers: int, full_width: int) -> Any:
    """The documented rule when no draft is given: the most important half of the layers (the
    supernet's layer ranking, rounded up) at full MLP width."""
    from hwnas.model.space import SubnetConfig

    keep = max(1, (n_layers + 1) // 2)
    order = list(layer_order) if layer_order else list(range(n_layers))
    layers = tuple(sorted(order[:keep]))
    return SubnetConfig(layers, (full_width,) * len(layers))


def tokens_per_step(agreement: Sequence[Sequence[bool]], k: int) -> float:
    """Exact greedy-speculation yield: tokens produced per verification step with `k` draft tokens,
    from per-position agreement of the draft's greedy token with the full model's (teacher-forced
    on the full model's own greedy continuation). Each step accepts the agreeing run (at most k)
    and adds the full model's own token."""
    tokens = steps = 0
    for seq in agreement:
        pos = 0
        while pos < len(seq):
            run = 0
            while run < k and pos + run < len(seq) and seq[pos + run]:
                run += 1
            step = min(run + 1, len(seq) - pos)
            pos += step
            tokens += step
            steps += 1
    return tokens / steps if steps else 1.0


def expected_speed(agreement: Sequence[Sequence[bool]], k: int, draft_tpot_ms: float, verify_ms: float) -> dict:
    """Predicted speculative decode speed: one step = k draft tokens (draft TPOT each) + one full-model
    pass over k+1 tokens (`verify_ms`, measured), yielding `tokens_per_step` tokens."""
    tps = tokens_per_step(agreement, k)
    step_ms = k * draft_tpot_ms + verify_ms
    return {"k": k, "tokens_per_step": tps, "step_ms": step_ms, "ms_per_token": step_ms / tps,
            "tokens_per_s": 1000.0 * tps / step_ms}


def best_k(agreement: Sequence[Sequence[bool]], draft_tpot_ms: float, verify_ms_of_k: Mapping[int, float]) -> dict:
    """The k (among those with a measured verify cost) with the highest expected tokens/s."""
    return max((expected_speed(agreement, k, draft_tpot_ms, v) for k, v in verify_ms_of_k.items()),
               key=lambda r: r["tokens_per_s"])


# ----------------------------------------------------------------------------- timing
def step_costs_ms(jobs: Mapping[str, tuple[str | Path, Sequence[int]]], properties: Mapping[str, Any] | None = None, *,
                  context: int = 64, repeats: int = 7, warmup: int = 1, progress: Progress | None = None) -> dict:
    """Median wall time of one pass over n new tokens after a `context`-token prompt (KV cache), for
    every (name -> (IR folder, [n, ...])) job, in one session of interleaved rounds (the order rotates
    each round) so that all figures share the host's load. n = 1 is a plain decode step (TPOT);
    n = k + 1 is the full model verifying k draft tokens. Logits are computed for every new token,
    as verification needs. Returns {name: {n: ms}} plus "_spread" {name: {n: [min, max]}}."""
    import numpy as np
    import openvino as ov

    from hwnas.errors import MeasurementError
    from hwnas.hardware.measure import compile_ir

    if context < 1 or repeats < 1:
        raise MeasurementError(f"step timing needs context >= 1 and repeats >= 1, got {context}, {repeats}")
    core = ov.Core()
    props = dict(properties or {})
    reqs = {name: compile_ir(folder, props, slice_logits=False, core=core)[0].create_infer_request()
            for name, (folder, _) in jobs.items()}

    def feed(req: Any, ids: list[int], past: int) -> None:
        t = len(ids)
        req.infer({"input_ids": np.asarray([ids], dtype=np.int64), "attention_mask": np.ones((1, past + t), dtype=np.int64),
                   "position_ids": np.arange(past, past + t, dtype=np.int64)[None], "beam_idx": np.zeros(1, dtype=np.int32)})

    def one(name: str, n: int) -> float:
        req = reqs[name]
        req.reset_state()
        feed(req, [5 + i % 50 for i in range(context)], 0)
        t0 = time.perf_counter()
        feed(req, [7 + i for i in range(n)], context)
        return 1000 * (time.perf_counter() - t0)

    cells = [(name, int(n)) for name, (_, ns) in jobs.items() for n in ns]
    samples: dict[tuple[str, int], list[float]] = {c: [] for c in cells}
    total, done = (warmup + repeats) * len(cells), 0
    for r in range(warmup + repeats):
        shift = r % len(cells)
        for c in cells[shift:] + cells[:shift]:
            ms = one(*c)
            if r >= warmup:
                samples[c].append(ms)
            done += 1
            if progress:
                progress(done, total, f"timing {c[0]} over {c[1]} token(s)")
    out: dict[str, Any] = {name: {} for name in jobs}
    spread: dict[str, dict[int, list[float]]] = {name: {} for name in jobs}
    for (name, n), xs in samples.items():
        out[name][n] = statistics.median(xs)
        spread[name][n] = [min(xs), max(xs)]
    out["_spread"] = spread
    return out


def verify_cost_ms(folder: str | Path, ks: Sequence[int], properties: Mapping[str, Any] | None = None, context: int = 64,
                   repeats: int = 5) -> dict[int, float]:
    """Median wall time of one full-model pass over k+1 new tokens after a `context`-token prompt (KV cache)."""
    t = step_costs_ms({"full": (folder, [k + 1 for k in ks])}, properties, context=context, repeats=repeats)
    return {k: t["full"][k + 1] for k in ks}
