"""llama.cpp timing in a child process, for the benches that compare it with OpenVINO.

Why a child: a real frontier bench run, llama.cpp in the same process as OpenVINO, died of a general
protection fault in libggml-cpu and took every OpenVINO figure with it. Here each block of llama.cpp rounds runs in its own `python llamacpp_timing.py` process
(only `llama_cpp` imported there): the parent sends the request as JSON on stdin, the child answers
the per-round figures as JSON on stdout, and a child that crashes, fails or times out becomes a
`LlamaCppChildError` with a one-line reason instead of taking the caller down.

The fault itself is not OpenVINO's: llama-cpp-python 0.3.36's libggml-cpu faults on its own, at an
`ldtilecfg` (AMX) instruction, on the first batch of 2+ tokens when it runs on a CPU that reports AMX
but where the kernel/VM does not let the process use the tile state (this 2-core Xeon VM). The AMX
kernels come with llama.cpp's "extra buffer types" (weight repacking), so the timer loads the model
with `use_extra_bufts` off by default (plain AVX-512/VNNI kernels; Q4_1 has no CPU repack anyway)
and records that; `extra_buffers=True` asks for them.

Request: {"gguf": path, "threads": n, "prompt": [token ids], "new_tokens": n, "rounds": n, "extra_buffers": bool}
Answer:  {"rounds": [[ttft_ms, [decode step ms, ...]], ...], "n_vocab": n}  (one warm-up round not included)
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

CHILD_TIMEOUT_S = 600.0      # one block of rounds; a 135M model takes seconds per round


class LlamaCppChildError(RuntimeError):
    """The llama.cpp child did not return figures (crash, error, timeout, bad answer); str() is one line."""


class LlamaCppTimer:
    """Greedy generation with llama-cpp-python: TTFT (prompt eval + first token) and decode step times."""

    def __init__(self, path: Path, threads: int = 2, extra_buffers: bool = False):
        import llama_cpp.llama as llama_module
        from llama_cpp import Llama

        # Llama() takes no switch for llama_model_params.use_extra_bufts: wrap the defaults it starts from
        defaults = llama_module.llama_cpp.llama_model_default_params

        def model_params():
            p = defaults()
            p.use_extra_bufts = extra_buffers
            return p

        llama_module.llama_cpp.llama_model_default_params = model_params
        try:
            self.llm = Llama(model_path=str(path), n_threads=threads, n_threads_batch=threads, n_ctx=512,
                             n_batch=512, verbose=False)
        finally:
            llama_module.llama_cpp.llama_model_default_params = defaults
        self.vocab = self.llm.n_vocab()

    def generate(self, prompt: Sequence[int], new_tokens: int) -> tuple[float, list[float]]:
        self.llm.reset()
        t0 = time.perf_counter()
        steps: list[float] = []
        ttft = 0.0
        last = t0
        for i, _ in enumerate(self.llm.generate(list(prompt), top_k=1, temp=0.0, reset=True)):
            now = time.perf_counter()
            if i == 0:
                ttft = (now - t0) * 1e3
            else:
                steps.append((now - last) * 1e3)
            last = now
            if i + 1 >= new_tokens:
                break
        return ttft, steps


def time_llamacpp(timer: LlamaCppTimer, prompt: Sequence[int], new_tokens: int, n: int) -> list[tuple[float, list[float]]]:
    """One warm-up generation, then `n` timed ones."""
    timer.generate(prompt, new_tokens)  # warm-up
    return [timer.generate(prompt, new_tokens) for _ in range(n)]


def gguf_vocab_size(path: Path) -> int:
    """The number of tokens in a GGUF's vocabulary, read from its metadata (llama.cpp not loaded)."""
    from gguf import GGUFReader

    return len(GGUFReader(str(path)).fields["tokenizer.ggml.tokens"].data)


def _one_line(text: str, limit: int = 300) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "")[:limit]


def time_llamacpp_child(path: Path, threads: int, prompt: Sequence[int], new_tokens: int, rounds: int,
                        timeout_s: float = CHILD_TIMEOUT_S, extra_buffers: bool = False) -> list[tuple[float, list[float]]]:
    """Time `rounds` greedy generations (after one warm-up) in a child process; blocks until it answers.

    Returns [(ttft_ms, [decode step ms, ...]), ...]; raises `LlamaCppChildError` (one-line reason) if
    the child crashes, exits non-zero, outlives `timeout_s` or answers something that is not figures.
    """
    req = {"gguf": str(path), "threads": int(threads), "prompt": [int(t) for t in prompt],
           "new_tokens": int(new_tokens), "rounds": int(rounds), "extra_buffers": bool(extra_buffers)}
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve())], input=json.dumps(req),
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise LlamaCppChildError(f"llama.cpp child timed out after {timeout_s:.0f}s "
                                 f"({rounds} rounds of {new_tokens} tokens, {Path(path).name})") from None
    if proc.returncode != 0:
        if proc.returncode < 0:
            try:
                how = f"was killed by {signal.Signals(-proc.returncode).name}"
            except ValueError:
                how = f"was killed by signal {-proc.returncode}"
        else:
            how = f"exited with status {proc.returncode}"
        last = _one_line(proc.stderr)
        raise LlamaCppChildError(f"llama.cpp child {how}" + (f": {last}" if last else ""))
    try:
        ans = json.loads(_one_line(proc.stdout, limit=10**9))
        out = [(float(t), [float(s) for s in steps]) for t, steps in ans["rounds"]]
    except (ValueError, KeyError, TypeError) as e:
        raise LlamaCppChildError(f"llama.cpp child answered no figures ({type(e).__name__}): "
                                 f"{_one_line(proc.stdout) or _one_line(proc.stderr)}") from None
    if len(out) != rounds:
        raise LlamaCppChildError(f"llama.cpp child answered {len(out)} rounds, asked for {rounds}")
    return out


def _child_main() -> int:
    """The child: read the request on stdin, time, write the answer as one JSON line on the real stdout."""
    req = json.loads(sys.stdin.read())
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)                      # anything llama.cpp prints goes to stderr, never into the answer
    try:
        from llama_cpp import Llama  # noqa: F401
    except ImportError as e:
        print(f"llama_cpp is not importable (pip install '.[bench]'): {e}", file=sys.stderr)
        return 3
    path = Path(req["gguf"])
    if not path.is_file():
        print(f"GGUF file not found: {path}", file=sys.stderr)
        return 2
    timer = LlamaCppTimer(path, req["threads"], extra_buffers=req.get("extra_buffers", False))
    bad = [t for t in req["prompt"] if not 0 <= t < timer.vocab]
    if bad:
        print(f"prompt token {bad[0]} is outside the GGUF's vocabulary (0..{timer.vocab - 1})", file=sys.stderr)
        return 2
    rounds = time_llamacpp(timer, req["prompt"], req["new_tokens"], req["rounds"])
    answer.write(json.dumps({"rounds": rounds, "n_vocab": timer.vocab}) + "\n")
    answer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())
