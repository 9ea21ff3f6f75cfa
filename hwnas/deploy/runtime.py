"""Running a bundle with openvino-genai: pipelines, greedy tokens, text generation."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from hwnas.deploy.manifest import EXACT_PROPERTIES, IR_XML, SMOKE_TOKENS

# ----------------------------------------------------------------------------- generation (smoke, run)

def greedy_tokens(folder: str | Path, prompt_ids: Sequence[int], n: int = SMOKE_TOKENS,
                  properties: Mapping[str, Any] | None = None) -> list[int]:
    """Greedy decode `n` tokens with the bundle's stateful IR (no tokenizer needed)."""
    import numpy as np
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(str(Path(folder) / IR_XML), "CPU", dict(properties or EXACT_PROPERTIES))
    req = compiled.create_infer_request()
    req.reset_state()
    ids = np.asarray([list(prompt_ids)], dtype=np.int64)
    past = 0
    out: list[int] = []
    for _ in range(n):
        t = ids.shape[1]
        res = req.infer({
            "input_ids": ids, "attention_mask": np.ones((1, past + t), dtype=np.int64),
            "position_ids": np.arange(past, past + t, dtype=np.int64)[None], "beam_idx": np.zeros(1, dtype=np.int32),
        })
        logits = res[compiled.output("logits")]
        tok = int(np.argmax(logits[0, -1]))
        out.append(tok)
        past += t
        ids = np.asarray([[tok]], dtype=np.int64)
    return out


def genai_pipeline(folder: str | Path, properties: Mapping[str, Any] | None = None):
    """openvino_genai.LLMPipeline on the bundle (needs its tokenizer IRs); a speculative bundle's with its draft."""
    import openvino_genai

    from hwnas.deploy.spec_bundle import pipeline_kwargs

    props = {k: ("YES" if v else "NO") if isinstance(v, bool) else str(v) for k, v in dict(properties or {}).items()}
    return openvino_genai.LLMPipeline(str(folder), "CPU", **props, **pipeline_kwargs(folder, props))


def generate_text(folder: str | Path, prompt: str, max_new_tokens: int = 32, *, properties: Mapping[str, Any] | None = None,
                  streamer: Callable[[str], Any] | None = None) -> str:
    """Greedy generation from a bundle with openvino-genai, streaming subwords to `streamer`."""
    import openvino_genai

    from hwnas.deploy.spec_bundle import apply_draft_tokens

    pipe = genai_pipeline(folder, properties)
    cfg = openvino_genai.GenerationConfig()
    cfg.max_new_tokens = max_new_tokens
    cfg.do_sample = False
    apply_draft_tokens(folder, cfg)
    if streamer is not None:
        def _stream(sub: str) -> bool:
            streamer(sub)
            return False  # keep going
        out = pipe.generate(prompt, cfg, _stream)
    else:
        out = pipe.generate(prompt, cfg)
    return str(out)


