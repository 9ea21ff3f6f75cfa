"""Greedy agreement of a subnet (as a draft model) with the full model, as speculative decoding sees it.

The full model greedily continues a few calibration prompts once (batched, KV cache); each subnet is
then run teacher-forced over prompt + that continuation in one forward pass, and for every generated
position we record whether the subnet's greedy token equals the full model's. Those per-position
booleans, in order, are exactly what `hwnas.hardware.speculation.tokens_per_step` needs: a draft's
run of agreeing tokens is accepted, the first disagreement ends the step.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Sequence

from hwnas.errors import DataError

log = logging.getLogger(__name__)


class GreedyAgreement:
    """Per-position greedy agreement of subnets with the full model on fixed prompts [n, P] (token ids)."""

    def __init__(self, prompts: Any, new_tokens: int = 64):
        import torch

        self.prompts = torch.as_tensor(prompts, dtype=torch.long)
        if self.prompts.dim() != 2 or self.prompts.shape[0] < 1 or self.prompts.shape[1] < 1:
            raise DataError("agreement prompts must be a non-empty [n, P] array of token ids")
        if new_tokens < 2:
            raise DataError(f"agreement needs at least 2 new tokens per prompt, got {new_tokens}")
        self.new_tokens = int(new_tokens)
        self._cont: Any = None

    @classmethod
    def from_texts(cls, tokenizer: Any, texts: Sequence[str], *, prompts: int = 8, prompt_tokens: int = 32,
                   new_tokens: int = 64) -> "GreedyAgreement":
        """The first `prompt_tokens` tokens of the first `prompts` texts that are long enough."""
        rows = []
        for t in texts:
            ids = tokenizer(t, add_special_tokens=False)["input_ids"]
            if len(ids) >= prompt_tokens:
                rows.append(list(ids[:prompt_tokens]))
            if len(rows) == prompts:
                break
        if not rows:
            raise DataError(f"no calibration text has {prompt_tokens} tokens; give longer text or fewer prompt tokens")
        return cls(rows, new_tokens)

    def describe(self) -> dict[str, Any]:
        return {"prompts": int(self.prompts.shape[0]), "prompt_tokens": int(self.prompts.shape[1]),
                "new_tokens": self.new_tokens, "positions": int(self.prompts.shape[0]) * self.new_tokens}

    def continuation(self, supernet: Any) -> Any:
        """The full model's greedy continuation [n, new_tokens] (computed once)."""
        import torch

        if self._cont is None:
            t0 = time.perf_counter()
            with supernet.subnet(None) as lm, torch.inference_mode():
                out = lm(input_ids=self.prompts, use_cache=True)
                tok = out.logits[:, -1].argmax(-1, keepdim=True)
                past, toks = out.past_key_values, [tok]
                for _ in range(self.new_tokens - 1):
                    out = lm(input_ids=tok, past_key_values=past, use_cache=True)
                    past = out.past_key_values
                    tok = out.logits[:, -1].argmax(-1, keepdim=True)
                    toks.append(tok)
            self._cont = torch.cat(toks, dim=1)
            log.info("full model's greedy continuation: %s tokens in %.1f s", tuple(self._cont.shape),
                     time.perf_counter() - t0)
        return self._cont

    def measure(self, supernet: Any, subnet: Any) -> list[list[bool]]:
        """Per prompt, per generated position: does `subnet`'s greedy token equal the full model's?"""
        import torch

        cont = self.continuation(supernet)
        p = self.prompts.shape[1]
        ids = torch.cat([self.prompts, cont[:, :-1]], dim=1)
        with supernet.subnet(subnet) as lm, torch.inference_mode():
            guess = lm(input_ids=ids).logits[:, p - 1:].argmax(-1)
        return (guess == cont).tolist()


def acceptance_rate(agreement: Sequence[Sequence[bool]]) -> float:
    """Fraction of positions where the draft's greedy token is the full model's."""
    n = sum(len(s) for s in agreement)
    return sum(sum(map(bool, s)) for s in agreement) / n if n else 0.0
