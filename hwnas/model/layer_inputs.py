"""What each decoder layer of a model is fed in a forward pass: its input hidden states and the arguments the
model computed for it. The recovery fit (teacher states) and the sensitivity table (layers i.. rerun on the
full model's input to layer i) both replay layers from these."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

LAYER_KWARGS = ("attention_mask", "position_embeddings", "position_ids")   # enough to call a layer again


@contextlib.contextmanager
def layer_input_hooks(layers: Sequence[Any], on_input: Callable[[int, Any, dict[str, Any]], None]) -> Iterator[None]:
    """While open, every forward of layer i calls on_input(i, a detached copy of its input hidden states,
    {the LAYER_KWARGS the model passed it})."""
    def pre(i: int):
        def hook(mod, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            on_input(i, x.detach().clone(), {k: v for k, v in kwargs.items() if k in LAYER_KWARGS})
        return hook

    hooks = [layer.register_forward_pre_hook(pre(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()
