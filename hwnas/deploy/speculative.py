"""Lossless speculative bundles: the full model plus a subnet of it as the draft model.

Layout: an ordinary bundle of the full model, plus ``draft/`` (the subnet's bundle files: IR,
config, tokenizer) and ``hwnas_speculative.json`` (draft subnet, number of draft tokens per
step); both are listed with their sha256 in the bundle's manifest, so `verify` checks them.
openvino-genai's draft-model support runs the pair; greedy output equals the full model's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

# What a speculative bundle holds, how a pipeline opens it and its check live one level down (runtime and
# verify need them, and this module builds bundles with export); re-exported here.
from hwnas.deploy.spec_bundle import (  # noqa: F401
    DEFAULT_DRAFT_TOKENS,
    DRAFT_DIR,
    SPEC_FILE,
    SPEC_SCHEMA_VERSION,
    apply_draft_tokens,
    check_speculative,
    draft_of,
    num_draft_tokens,
    pipeline_kwargs,
    read_spec,
)
from hwnas.errors import BundleError
# The speed model lives in the hardware stage, so that `hwnas search --objective speculative` can use it;
# re-exported here for bench/ and the tests.
from hwnas.hardware.speculation import best_k, default_draft, expected_speed, tokens_per_step, verify_cost_ms  # noqa: F401


# ----------------------------------------------------------------------------- choosing the draft
def agreement(full_folder: str | Path, draft_folder: str | Path, prompts_ids: list[list[int]], n: int,
              properties: dict | None = None) -> list[list[bool]]:
    """Per position, does the draft's greedy token equal the full model's? (teacher-forced on the full
    model's greedy continuation of each prompt; both bundles' IRs, same properties)."""
    import numpy as np

    from hwnas.deploy.manifest import EXACT_PROPERTIES
    from hwnas.deploy.runtime import greedy_tokens

    props = dict(properties or EXACT_PROPERTIES)
    out = []
    for ids in prompts_ids:
        cont = greedy_tokens(full_folder, ids, n, props)
        logits = _logits(draft_folder, list(ids) + cont[:-1], props)
        guess = np.argmax(logits[0, len(ids) - 1:], axis=-1).tolist()
        out.append([int(g) == int(t) for g, t in zip(guess, cont)])
    return out


def _logits(folder: str | Path, ids: list[int], props: dict):
    import numpy as np
    import openvino as ov

    from hwnas.deploy.manifest import IR_XML

    compiled = ov.Core().compile_model(str(Path(folder) / IR_XML), "CPU", props)
    req = compiled.create_infer_request()
    req.reset_state()
    t = len(ids)
    res = req.infer({"input_ids": np.asarray([ids], dtype=np.int64), "attention_mask": np.ones((1, t), dtype=np.int64),
                     "position_ids": np.arange(t, dtype=np.int64)[None], "beam_idx": np.zeros(1, dtype=np.int32)})
    return res[compiled.output("logits")]


# ----------------------------------------------------------------------------- building

def export_speculative_bundle(model: str, out: str | Path, *, recipe: Any, draft: Any = None, draft_rule: str | None = None,
                              num_assistant_tokens: int = DEFAULT_DRAFT_TOKENS, target: str = "xeon", seed: int = 0,
                              force: bool = False, archive: bool = False, measure: bool = True,
                              progress: Any = None, **export_kw: Any):
    """Write a speculative bundle: the whole model (the bundle proper) plus `draft` (a SubnetConfig;
    default: `default_draft`) in ``draft/``, both quantized with `recipe`, and ``hwnas_speculative.json``.

    The manifest is the full model's, with every file (the draft's included) checksummed.
    """
    import dataclasses
    import shutil
    import tempfile

    from hwnas.deploy.archive import checksum_files, write_archive
    from hwnas.deploy.export import BundleResult, archive_path, check_export_inputs, export_bundle
    from hwnas.deploy.manifest import MANIFEST_FILE, read_manifest
    from hwnas.errors import ExportError
    from hwnas.io import atomic_dir, write_json_atomic

    if not isinstance(num_assistant_tokens, int) or not 1 <= num_assistant_tokens <= 16:
        raise ExportError(f"--draft-tokens {num_assistant_tokens!r} is invalid; accepted: 1 to 16")
    check_export_inputs(out, force=force, archive=archive)
    out = Path(out)
    if draft is None:
        from hwnas.model.supernet import load_supernet

        _, sn = load_supernet(model)
        draft = default_draft(sn.space.layer_order, sn.space.num_layers, sn.full_width)
        draft_rule = draft_rule or "default: most important half of the layers, full MLP width"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        full = export_bundle(model, Path(tmp) / "full", recipe=recipe, target=target, seed=seed, measure=measure,
                             progress=progress, **export_kw)
        export_kw.pop("accuracy_tasks", None)
        # The draft's own generations never reach a user (the full model verifies every token),
        # so it needs no generation check; its recovery still raises the acceptance rate.
        export_kw["generation_check"] = False
        d = export_bundle(model, Path(tmp) / "draft", recipe=recipe, subnet=draft, target=target, seed=seed,
                          measure=measure, progress=progress, **export_kw)
        if read_manifest(d.path).model["sha256"] != full.manifest.model["sha256"]:
            raise ExportError("the draft was built from another model than the full bundle")  # pragma: no cover
        with atomic_dir(out, force=force) as dst:
            for p in full.path.iterdir():
                if p.name != MANIFEST_FILE:
                    shutil.copy2(p, dst / p.name) if p.is_file() else shutil.copytree(p, dst / p.name)
            shutil.copytree(d.path, dst / DRAFT_DIR)
            spec = {"schema_version": SPEC_SCHEMA_VERSION, "num_assistant_tokens": num_assistant_tokens,
                    "draft": dict(draft.to_dict(), key=draft.key), "draft_rule": draft_rule or "--draft",
                    "draft_measurement": d.manifest.measurement, "full_measurement": full.manifest.measurement}
            write_json_atomic(dst / SPEC_FILE, spec)
            manifest = dataclasses.replace(full.manifest, name=out.name, files=checksum_files(dst))
            manifest.write(dst)
    arch = write_archive(out, archive_path(out), force=force) if archive else None
    return BundleResult(path=out, manifest=manifest, archive=arch)


# ----------------------------------------------------------------------------- benchmarking
BENCH_PROMPTS = ("The three primary colours are", "Once upon a time, in a small village,", "Water boils at",
                 "The best way to learn a language is")


def measure_speculative(folder: str | Path, properties: dict | None = None, *, tokens: int = 32, repeats: int = 3,
                        prompts: tuple[str, ...] = BENCH_PROMPTS) -> dict:
    """Decode speed of a speculative bundle through openvino-genai with its draft, and of the same bundle
    without the draft, in interleaved rounds (same harness, same prompts): ms per token =
    (wall(tokens) - wall(1 token)) / (tokens - 1), median over rounds (the first round is a warm-up).
    Also counts the rounds whose greedy tokens were identical with and without the draft."""
    import statistics
    import time

    import numpy as np
    import openvino as ov
    import openvino_genai as og

    draft, k = draft_of(folder)
    if draft is None:
        raise BundleError(f"{folder} is not a speculative bundle (no {SPEC_FILE})")
    if tokens < 2 or repeats < 1:
        raise BundleError(f"speculative timing needs tokens >= 2 and repeats >= 1, got {tokens}, {repeats}")
    props = {kk: ("YES" if v else "NO") if isinstance(v, bool) else str(v) for kk, v in dict(properties or {}).items()}
    pipes = {"speculative": og.LLMPipeline(str(folder), "CPU", draft_model=og.draft_model(str(draft), "CPU", **props), **props),
             "plain": og.LLMPipeline(str(folder), "CPU", **props)}
    tok = og.Tokenizer(str(folder))
    ids = [[int(i) for i in tok.encode(p, add_special_tokens=False).input_ids.data[0]] for p in prompts]

    def gen(name: str, prompt: list[int], n: int) -> tuple[list[int], float]:
        cfg = og.GenerationConfig()
        cfg.max_new_tokens = cfg.min_new_tokens = n
        cfg.do_sample = False
        cfg.ignore_eos = True
        cfg.apply_chat_template = False
        if name == "speculative":
            cfg.num_assistant_tokens = k
        inp = og.TokenizedInputs(ov.Tensor(np.asarray([prompt], dtype=np.int64)),
                                 ov.Tensor(np.ones((1, len(prompt)), dtype=np.int64)))
        t0 = time.perf_counter()
        res = pipes[name].generate(inp, cfg)
        return [int(t) for t in res.tokens[0]], time.perf_counter() - t0

    per: dict[str, list[float]] = {"speculative": [], "plain": []}
    same = 0
    for r in range(repeats + 1):
        prompt = ids[r % len(ids)]
        got = {}
        for name in (("speculative", "plain") if r % 2 else ("plain", "speculative")):
            got[name], wn = gen(name, prompt, tokens)
            _, w1 = gen(name, prompt, 1)
            if r:
                per[name].append(1000 * (wn - w1) / (tokens - 1))
        if r:
            same += got["speculative"] == got["plain"]
    spec_ms, plain_ms = statistics.median(per["speculative"]), statistics.median(per["plain"])
    spec = read_spec(folder) or {}
    return {"num_assistant_tokens": k, "draft": (spec.get("draft") or {}).get("key"), "tpot_ms": spec_ms,
            "plain_tpot_ms": plain_ms, "speculative_speedup": plain_ms / spec_ms, "tokens": tokens, "repeats": repeats,
            "identical_greedy_tokens": f"{same}/{repeats}", "tpot_samples_ms": per["speculative"],
            "plain_tpot_samples_ms": per["plain"],
            "harness": "openvino-genai LLMPipeline with and without the draft, interleaved rounds"}
