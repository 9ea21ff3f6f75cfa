"""Training-free recovery of a subnet: least-squares refits of each kept layer's `down_proj`.

A subnet drops decoder layers and narrows MLPs; used as sliced, its residual stream drifts away
from the full model's and the error compounds layer after layer. Recovery refits, for every kept
layer in order, the `down_proj` weights (the only weights that write the MLP into the residual
stream) so that the subnet's residual stream after that layer matches the *full* model's at the
same depth, i.e. at the input of the next kept layer (or of the final norm):

    min_W  sum_tokens || r + W h - t ||^2 + lam || W - W0 ||^2

where, on calibration tokens, `r` is the subnet's residual stream after the layer's attention,
`h` its (narrowed) MLP activation, `t` the full model's hidden state at the next kept depth, and
`W0` the sliced original weights (the ridge pulls towards them, so a well-conditioned layer stays
as it was). This one solve covers both cheap methods of the pruning literature:

- a narrowed MLP (FLAP / ridge refit of `down_proj` on its kept channels): the kept channels
  take over what the dropped ones contributed;
- a run of dropped layers after a kept one (ReplaceMe, 2025): the kept layer's `down_proj`
  also learns the linear part of what the dropped run added to the residual stream.

The fit is sequential on the subnet's *own* activations (each layer sees the recovered output of
the layers before it, as at inference), with statistics accumulated in float64 per layer and
streamed over calibration windows. Windows are fixed-length token runs cut from calibration
text, so there is no padding to mask. The full model's hidden states are computed once per
`Recoverer` (the "teacher" pass) and reused for every subnet. A subnet costs one forward pass
of its own layers over the calibration tokens plus one (w x w) solve per kept layer: seconds.

Only `down_proj` weights change, so a recovered subnet keeps the plain LLaMA structure: it
extracts, quantizes (INC) and exports to OpenVINO exactly like an unrecovered one.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from hwnas.errors import InvalidSubnetError
from hwnas.model.space import SubnetConfig

log = logging.getLogger(__name__)

METHOD = "sequential ridge refit of down_proj to the full model's residual stream"
TARGETS = ("auto", "residual", "mlp")


@dataclass(frozen=True)
class RecoveryConfig:
    """How recovery is calibrated. `ridge` is relative to the mean diagonal of the activation Gram."""

    tokens: int = 16384       # calibration tokens (windows x window); fewer over-fit (bench/recovery_bench.py)
    window: int = 256         # tokens per calibration window
    ridge: float = 1e-3       # lam = ridge * trace(G) / w
    token_weighting: bool = True  # weigh each token's error by 1 / ||full-model state||^2 (relative error)
    # "residual": the full model's stream at the next kept depth; "mlp": the full-width MLP on the
    # subnet's own input; "auto": residual where dropped layers follow, else mlp (bench/recovery_bench.py)
    target: str = "auto"
    chunk: int = 8            # windows per forward call (bounds activation memory)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.window < 8:
            raise InvalidSubnetError(f"recovery window must be >= 8 tokens, got {self.window}")
        if self.tokens < self.window:
            raise InvalidSubnetError(f"recovery needs at least one window of {self.window} tokens, got {self.tokens}")
        if not self.ridge > 0:
            raise InvalidSubnetError(f"recovery ridge must be > 0, got {self.ridge}")
        if self.target not in TARGETS:
            raise InvalidSubnetError(f"recovery target {self.target!r} is not one of {', '.join(TARGETS)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Recovery:
    """Refit `down_proj` weights of one subnet, keyed by base-model layer index."""

    subnet_key: str
    down: dict[int, Any]                         # layer -> torch tensor (hidden x width)
    residual_before: dict[int, float] = field(default_factory=dict)  # relative error, sliced weights
    residual_after: dict[int, float] = field(default_factory=dict)   # relative error, refit weights
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """What a manifest or a results file records (no tensors)."""
        last = max(self.residual_after) if self.residual_after else None
        return {
            "method": METHOD, "subnet_key": self.subnet_key, "layers_refit": len(self.down),
            "seconds": round(self.seconds, 3),
            "final_relative_error_before": None if last is None else round(self.residual_before[last], 5),
            "final_relative_error_after": None if last is None else round(self.residual_after[last], 5),
        }


class Recoverer:
    """Fits `Recovery` for subnets of one supernet on fixed calibration text.

    The teacher pass (full-model hidden states at every layer input) runs once, on first use;
    the last few recoveries are kept in memory by subnet key, so a search that evaluates the
    same subnet twice (search split, then report split) fits it once.
    """

    def __init__(self, supernet: Any, tokenizer: Any, texts: Sequence[str], config: RecoveryConfig | None = None,
                 *, keep: int = 4):
        self.supernet = supernet
        self.tokenizer = tokenizer
        self.texts = list(texts)
        self.config = config or RecoveryConfig()
        self.keep = keep
        self._ids = None
        self._teacher: list[Any] | None = None
        self._layer_kwargs: dict[int, dict[str, Any]] = {}
        self._cache: OrderedDict[str, Recovery] = OrderedDict()
        self.teacher_seconds = 0.0

    def release(self) -> None:
        """Free the calibration states and the fitted subnets (both rebuilt on next use): a caller that has
        what it needed (heal, once its student holds the recovered weights) gives their memory back."""
        self._teacher = None
        self._cache.clear()

    # ------------------------------------------------------------------ identity
    def fingerprint(self) -> str:
        """Changes when the calibration text or the recovery settings change (for caches and manifests)."""
        h = hashlib.sha256(METHOD.encode())
        h.update(repr(sorted(self.config.to_dict().items())).encode())
        for t in self.texts:
            h.update(hashlib.sha256(t.encode()).digest())
        return h.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {"method": METHOD, **self.config.to_dict(), "calibration_fingerprint": self.fingerprint()}

    # ------------------------------------------------------------------ calibration tokens
    def calibration_ids(self):
        """[windows, window] token ids: calibration documents concatenated and cut (no padding)."""
        import torch

        if self._ids is None:
            c = self.config
            stream: list[int] = []
            eos = self.tokenizer.eos_token_id
            for t in self.texts:
                stream += self.tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"]
                if eos is not None:
                    stream.append(int(eos))
                if len(stream) >= c.tokens:
                    break
            n = min(len(stream), c.tokens) // c.window
            if n < 1:
                raise InvalidSubnetError(f"calibration text gives {len(stream)} tokens; recovery needs at least {c.window}")
            self._ids = torch.tensor(stream[: n * c.window]).reshape(n, c.window)
        return self._ids

    # ------------------------------------------------------------------ teacher pass
    def teacher_states(self) -> list[Any]:
        """Full-model hidden states at the input of each layer 0..L-1 and of the final norm (index L).

        Kept in the model's dtype ((L + 1) x tokens x hidden: 3.1 GB in float32 for a 1.1B model at
        16,384 tokens; a bf16 model's states are bf16, so upcasting them would only double that)."""
        import torch

        from hwnas.model.layer_inputs import layer_input_hooks

        if self._teacher is not None:
            return self._teacher
        t0 = time.perf_counter()
        sn = self.supernet
        sn.reset()
        layers = sn._all_layers
        L = len(layers)
        ids = self.calibration_ids()
        chunks: list[list[Any]] = [[] for _ in range(L + 1)]

        def on_input(i, x, kw):
            chunks[i].append(x)  # the model's dtype: a bf16 model's states are bf16
            self._layer_kwargs.setdefault(i, kw)

        def norm_pre(mod, args):
            chunks[L].append(args[0].detach().clone())

        norm_hook = sn.model.model.norm.register_forward_pre_hook(norm_pre)
        try:
            with layer_input_hooks(layers, on_input), torch.inference_mode():
                for s in range(0, ids.shape[0], self.config.chunk):
                    sn.model.model(input_ids=ids[s:s + self.config.chunk], use_cache=False)
        finally:
            norm_hook.remove()
        self._teacher = [torch.cat(c) for c in chunks]
        self.teacher_seconds = time.perf_counter() - t0
        log.info("recovery teacher pass: %d tokens through %d layers in %.1f s", ids.numel(), L, self.teacher_seconds)
        return self._teacher

    # ------------------------------------------------------------------ fitting
    @staticmethod
    def _layer_forward(layer: Any, x: Any, kw: dict[str, Any]) -> Any:
        """One decoder layer at full width (the supernet is reset while fitting)."""
        return _layer_forward_impl(layer, x, kw)

    def fit(self, cfg: SubnetConfig) -> Recovery:
        """The recovered `down_proj` weights of `cfg` (cached by subnet key). Fitted on float weights of
        the architecture: deployment genes (weight formats) are applied after recovery."""
        cfg = cfg.architecture()
        if cfg.key in self._cache:
            self._cache.move_to_end(cfg.key)
            return self._cache[cfg.key]
        rec = self._fit(cfg)
        self._cache[cfg.key] = rec
        while len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return rec

    def _fit(self, cfg: SubnetConfig) -> Recovery:
        import torch

        sn = self.supernet
        sn.space.validate(cfg, structure=False)
        teacher = self.teacher_states()
        t0 = time.perf_counter()
        sn.reset()
        layers = sn._all_layers
        L = len(layers)
        c = self.config
        ids = self.calibration_ids()
        n_win = ids.shape[0]
        with torch.inference_mode():
            x = [sn.model.model.embed_tokens(ids[s:s + c.chunk]).float() for s in range(0, n_win, c.chunk)]
        kw = self._layer_kwargs.get(0, {})
        rec = Recovery(cfg.key, {})
        kept = list(cfg.layers)
        for k, (i, w) in enumerate(zip(kept, cfg.mlp_widths)):
            nxt = kept[k + 1] if k + 1 < len(kept) else L
            local = c.target == "mlp" or (c.target == "auto" and nxt == i + 1)
            layer = layers[i]
            mlp = layer.mlp
            w = int(w)
            if local and w == mlp.full_width:  # the layer is the full model's own: nothing to refit
                x = [self._layer_forward(layer, xs, kw) for xs in x]
                continue
            W0 = mlp.down_proj.weight.detach()[:, :w].double()
            G = torch.zeros(w, w, dtype=torch.float64)
            C = torch.zeros(W0.shape[0], w, dtype=torch.float64)
            err0 = 0.0
            tnorm = 0.0
            parts = []
            targets: list[Any] = []
            with torch.inference_mode():
                for j, s in enumerate(range(0, n_win, c.chunk)):
                    xs = x[j].to(mlp.down_proj.weight.dtype)
                    a = layer.self_attn(hidden_states=layer.input_layernorm(xs), **_chunk_kwargs(kw, xs.shape[0]))[0]
                    r = xs + a
                    u = layer.post_attention_layernorm(xs + a)
                    gate = torch.nn.functional.linear(u, mlp.gate_proj.weight[:w],
                                                      None if mlp.gate_proj.bias is None else mlp.gate_proj.bias[:w])
                    up = torch.nn.functional.linear(u, mlp.up_proj.weight[:w],
                                                    None if mlp.up_proj.bias is None else mlp.up_proj.bias[:w])
                    h = (mlp.act_fn(gate) * up).float().reshape(-1, w)
                    if local:  # what the full-width MLP adds on the subnet's own input
                        t = r.float().reshape(-1, W0.shape[0]) + mlp.down_proj(
                            mlp.act_fn(mlp.gate_proj(u)) * mlp.up_proj(u)).float().reshape(-1, W0.shape[0])
                        targets.append(t)
                    else:
                        t = teacher[nxt][s:s + c.chunk].reshape(-1, W0.shape[0]).float()
                    e = t - r.float().reshape(-1, W0.shape[0]) - h @ W0.T.float()
                    tn = (t * t).sum(-1, keepdim=True)
                    # Per-token relative error: tokens with massive activations (the first of a window)
                    # would otherwise decide the fit alone.
                    wt = (1.0 / tn.clamp(min=1e-12)).sqrt() if c.token_weighting else torch.ones_like(tn)
                    hw, ew = h * wt, e * wt
                    G += (hw.T @ hw).double()
                    C += (ew.T @ hw).double()
                    err0 += float((ew * ew).sum())
                    tnorm += float(len(t)) if c.token_weighting else float(tn.sum())
                    parts.append((r, h))
            lam = c.ridge * float(torch.diagonal(G).mean())
            dW = torch.linalg.solve(G + lam * torch.eye(w, dtype=torch.float64), C.T).T
            W = W0 + dW
            err1 = 0.0
            Wf = W.float()
            for j, (r, h) in enumerate(parts):
                y = r.float().reshape(-1, W.shape[0]) + h @ Wf.T
                s = j * c.chunk
                t = targets[j] if targets else teacher[nxt][s:s + c.chunk].reshape(-1, W.shape[0]).float()
                d2 = ((t - y) ** 2).sum(-1)
                err1 += float((d2 / (t * t).sum(-1).clamp(min=1e-12)).sum() if c.token_weighting else d2.sum())
                x[j] = y.reshape(r.shape)
            rec.down[i] = W.to(mlp.down_proj.weight.dtype).contiguous()
            rec.residual_before[i] = err0 / max(tnorm, 1e-30)
            rec.residual_after[i] = err1 / max(tnorm, 1e-30)
        rec.seconds = time.perf_counter() - t0
        log.info("recovered %s in %.1f s (final relative error %.4f -> %.4f)", cfg.key, rec.seconds,
                 rec.residual_before.get(kept[-1], float("nan")), rec.residual_after.get(kept[-1], float("nan")))
        return rec


def _layer_forward_impl(layer: Any, x: Any, kw: dict[str, Any]) -> Any:
    import torch

    with torch.inference_mode():
        xs = x.to(layer.mlp.down_proj.weight.dtype)
        out = layer(xs, **_chunk_kwargs(kw, xs.shape[0]))
        out = out[0] if isinstance(out, tuple) else out
    return out.float()


def _chunk_kwargs(kw: dict[str, Any], batch: int) -> dict[str, Any]:
    """The layer-0 keyword arguments the model computed (mask, rotary embeddings), cut to `batch` windows."""
    out = {}
    for k, v in kw.items():
        if k == "position_embeddings" and v is not None:
            out[k] = tuple(t[:batch] if t.shape[0] > 1 else t for t in v)
        elif hasattr(v, "shape") and v is not None and v.dim() > 0 and v.shape[0] > 1:
            out[k] = v[:batch]
        else:
            out[k] = v
    return out


def make_recoverer(supernet: Any, tokenizer: Any, *, texts: Sequence[str] | None = None,
                   config: RecoveryConfig | None = None) -> Recoverer:
    """A Recoverer on the project's calibration text (calibration/), unless `texts` are given."""
    if texts is None:
        from hwnas.model.calibration import load_texts

        texts = load_texts(seed=(config or RecoveryConfig()).seed)
    return Recoverer(supernet, tokenizer, texts, config)
