"""Token-level fidelity of a subnet to the full model on held-out text.

For every position of a few text windows, the full model's next-token distribution p and the
subnet's q are compared: top-1 agreement (the subnet's greedy token equals the full model's) and
KL(p || q). Both are continuous in the damage a subnet does, need no labels, and cost one forward
pass over a few thousand tokens, so they can rank subnets where 0/1 multiple-choice accuracy on a
near-chance task cannot.

The full model's distributions are kept as their top-k entries (k = 64) plus the remaining mass,
so the reference for thousands of positions fits in a few MB; the KL reported is the KL between
the two distributions coarsened to those k + 1 buckets, a lower bound of the exact KL (by the
data-processing inequality) that is tight when the top-k hold most of the mass.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_TOPK = 64


@dataclass
class _Reference:
    top_idx: Any    # [positions, k] long
    top_logp: Any   # [positions, k] float32
    rest_logp: Any  # [positions] float32 (log of the mass outside the top-k)
    argmax: Any     # [positions] long


class TokenFidelity:
    """Scores subnets of one supernet against its full model on fixed token windows."""

    def __init__(self, windows: Any, *, topk: int = DEFAULT_TOPK, precision: str = "auto", chunk: int = 512):
        import torch

        self.windows = torch.as_tensor(windows)
        if self.windows.dim() != 2 or self.windows.shape[1] < 2:
            raise ValueError("fidelity windows must be a [n, T>=2] array of token ids")
        self.topk = topk
        self.precision = precision
        self.chunk = chunk
        self._ref: _Reference | None = None
        self._inputs: list[Any] | None = None   # the full model's input to each decoder layer (capture_layer_inputs)
        self._layer_kw: dict[str, Any] = {}

    @classmethod
    def from_task(cls, tokenizer: Any, task: str = "wikitext2", *, split: str = "search", windows: int = 8,
                  window: int = 256, data_dir: Any = None, seed: int = 0, **kw: Any) -> "TokenFidelity":
        """Windows of a perplexity task's text (default: WikiText-2, search split)."""
        from hwnas.accuracy.evaluate import TaskSuite

        suite = TaskSuite(tokenizer, task, split=split, limit=windows, window=window, data_dir=data_dir, seed=seed)
        wins = [w for d in suite.data.values() for w in (d.windows or []) if len(w) == window]
        if not wins:
            raise ValueError(f"task {task!r} gives no full window of {window} tokens")
        return cls(np.array(wins[:windows]), **kw)

    @property
    def tokens(self) -> int:
        return int(self.windows.shape[0] * (self.windows.shape[1] - 1))

    def _logprobs(self, lm: Any, from_layer: int | None = None):
        """Yields [positions, vocab] float32 log-probs, `chunk` positions at a time; with `from_layer`, only
        layers from_layer.. run, on the full model's inputs to that layer (`capture_layer_inputs`)."""
        import torch

        from hwnas.accuracy.evaluate import _decoder, resolve_precision

        prec = resolve_precision(self.precision)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
            hidden = _decoder(lm, input_ids=self.windows) if from_layer is None else self._suffix(lm, from_layer)
        h = hidden[:, :-1].reshape(-1, hidden.shape[-1]).float()
        head = lm.get_output_embeddings()
        with torch.inference_mode():
            for s in range(0, h.shape[0], self.chunk):
                logits = torch.nn.functional.linear(h[s:s + self.chunk], head.weight.float(),
                                                    None if head.bias is None else head.bias.float())
                yield torch.log_softmax(logits, dim=-1)

    def capture_layer_inputs(self, lm: Any) -> None:
        """Keep the full model's input to every decoder layer on these windows, and the arguments the model
        computed for its layers (mask, rotary embeddings, positions). A change to layer i alone leaves
        layers 0..i-1 as they were, so `measure_model(..., from_layer=i)` need not run them again: the
        per-layer sensitivity table then runs half the layers on average. Call on the full model;
        `release_layer_inputs` frees them (layers x tokens x hidden values)."""
        import torch

        from hwnas.accuracy.evaluate import _decoder, resolve_precision
        from hwnas.model.layer_inputs import layer_input_hooks

        inputs: list[Any] = [None] * len(lm.model.layers)
        kws: dict[int, dict[str, Any]] = {}

        def on_input(i, x, kw):
            inputs[i] = x
            kws.setdefault(i, kw)

        prec = resolve_precision(self.precision)
        with layer_input_hooks(lm.model.layers, on_input), torch.inference_mode(), \
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
            _decoder(lm, input_ids=self.windows)
        self._inputs, self._layer_kw = inputs, kws[0]

    def release_layer_inputs(self) -> None:
        self._inputs, self._layer_kw = None, {}

    def _suffix(self, lm: Any, start: int) -> Any:
        """Final-norm hidden states from layer `start` on, fed the full model's input to that layer."""
        if self._inputs is None or not 0 <= start < len(self._inputs):
            raise ValueError("from_layer needs capture_layer_inputs() on the full model first")
        x = self._inputs[start]
        for layer in lm.model.layers[start:]:
            out = layer(x, **self._layer_kw)
            x = out[0] if isinstance(out, tuple) else out
        return lm.model.norm(x)

    def reference(self, supernet: Any) -> _Reference:
        """The full model's top-k next-token distribution at every position (computed once)."""
        import torch

        if self._ref is None:
            with supernet.subnet(None) as lm:
                parts = []
                for lp in self._logprobs(lm):
                    top = torch.topk(lp, self.topk, dim=-1)
                    mass = torch.exp(top.values).sum(-1).clamp(max=1.0)
                    rest = torch.log1p(-mass.clamp(max=1 - 1e-7))
                    parts.append((top.indices, top.values, rest, lp.argmax(-1)))
            self._ref = _Reference(*(torch.cat([p[i] for p in parts]) for i in range(4)))
        return self._ref

    def measure(self, supernet: Any, subnet: Any) -> dict[str, Any]:
        """{kl, kl_stderr, top1_agreement, top1_stderr, tokens, seconds} of `subnet` against the full model."""
        self.reference(supernet)  # the full model's, before the subnet is set
        with supernet.subnet(subnet) as lm:
            return self.measure_model(supernet, lm)

    def measure_model(self, supernet: Any, lm: Any, *, from_layer: int | None = None) -> dict[str, Any]:
        """As `measure`, for any causal LM sharing the supernet's vocabulary (e.g. a dense, healed subnet).
        `from_layer`: `lm` is the full model changed in layers from_layer.. only (see `capture_layer_inputs`)."""
        import torch

        ref = self.reference(supernet)
        t0 = time.perf_counter()
        kls, agree = [], []
        s = 0
        for lp in self._logprobs(lm, from_layer):
            n = lp.shape[0]
            idx = ref.top_idx[s:s + n]
            p_log = ref.top_logp[s:s + n]
            q_log = torch.gather(lp, 1, idx)
            q_rest = torch.log1p(-torch.exp(q_log).sum(-1).clamp(max=1 - 1e-7))
            p_rest = ref.rest_logp[s:s + n]
            kl = (torch.exp(p_log) * (p_log - q_log)).sum(-1) + torch.exp(p_rest) * (p_rest - q_rest)
            kls.append(kl.clamp(min=0).double())
            agree.append((lp.argmax(-1) == ref.argmax[s:s + n]).double())
            s += n
        kl = torch.cat(kls).numpy()
        ag = torch.cat(agree).numpy()
        # Positions within a window are correlated; the stderr uses per-window means.
        per_win = self.windows.shape[1] - 1
        w_kl = kl.reshape(-1, per_win).mean(1)
        w_ag = ag.reshape(-1, per_win).mean(1)
        se = (lambda x: float(np.std(x, ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan"))
        return {"kl": round(float(kl.mean()), 6), "kl_stderr": round(se(w_kl), 6),
                "top1_agreement": round(float(ag.mean()), 6), "top1_stderr": round(se(w_ag), 6),
                "tokens": int(len(kl)), "seconds": round(time.perf_counter() - t0, 3)}


def greedy_layer_order(supernet: Any, fidelity: TokenFidelity, *, min_layers: int = 1, keep: Sequence[int] = (),
                       progress: Any = None) -> tuple[list[int], list[float]]:
    """A layer order by measured damage: drop, one at a time, the layer whose removal hurts the
    full-width subnet's KL to the full model least (greedy; nested, so the k most important layers
    of the order are exactly the greedy k-layer subnet). Returns (order, kl after each removal):
    `order` lists the layers most important first, as `SearchSpace.layer_order` expects.

    Costs sum(k for k in L..min_layers+1) fidelity passes: a few minutes for a 30-layer model on
    a few thousand tokens, so callers cache the result per model."""
    from hwnas.model.space import SubnetConfig

    n = supernet._full_num_layers
    width = supernet.full_width
    kept = list(range(n))
    removed: list[int] = []
    kls: list[float] = []
    steps = n - max(min_layers, len(set(keep)), 1)
    for step in range(steps):
        best, best_kl = None, float("inf")
        for i in kept:
            if i in keep:
                continue
            cand = [j for j in kept if j != i]
            kl = fidelity.measure(supernet, SubnetConfig(tuple(cand), (width,) * len(cand)))["kl"]
            if kl < best_kl:
                best, best_kl = i, kl
        if best is None:
            break
        kept.remove(best)
        removed.append(best)
        kls.append(best_kl)
        if progress:
            progress(step + 1, steps, f"dropped layer {best} (KL {best_kl:.4f})")
        log.info("greedy layer order: dropped %d, %d left, KL %.4f", best, len(kept), best_kl)
    order = kept + removed[::-1]
    return order, kls
