"""The generation engine behind `hwnas serve`: one worker thread drives an openvino-genai
``ContinuousBatchingPipeline`` (paged KV cache, requests join and leave the running batch at every
step), so concurrent requests share the CPU without corrupting each other.

Back-pressure: at most `max_active + max_queue` requests are admitted; `submit` raises `EngineBusy`
beyond that (the server answers 503 with Retry-After), it never blocks. Each admitted request gets
its text as `Event`s through a callback: incremental, UTF-8-safe detokenization, `stop` strings cut
on the engine side (the request is stopped in the pipeline as soon as one appears), usage counts.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from hwnas.errors import HwnasError

log = logging.getLogger(__name__)


class EngineBusy(HwnasError):
    """Every slot of the engine (running and queued) is taken; retry later."""


class EngineClosed(HwnasError):
    """The engine is shutting down and admits no new request."""


@dataclass(frozen=True)
class SamplingParams:
    """What one request asks for. temperature 0 is greedy; `seed` makes sampling repeatable."""

    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False


@dataclass
class Event:
    """A piece of one request's output: `text` is new text since the last event; the last event has
    `finish_reason` ("stop" or "length") and the final usage, or `error`."""

    text: str = ""
    completion_tokens: int = 0
    finish_reason: str | None = None
    error: str | None = None


@dataclass
class _Request:
    rid: int
    prompt_ids: list[int]
    params: SamplingParams
    deliver: Callable[[Event], None]
    ids: list[int] = field(default_factory=list)
    sent: int = 0          # characters of the decoded text already delivered
    handle: Any = None
    done: bool = False
    cancelled: bool = False


class Engine:
    """Continuous-batching generation from a bundle folder on CPU.

    properties: OpenVINO properties for the model (e.g. a target's); draft: a draft-model folder for
    speculative decoding with `num_assistant_tokens` draft tokens per step (greedy output unchanged).
    """

    def __init__(self, folder: str | Path, *, properties: Mapping[str, Any] | None = None, max_active: int = 8,
                 max_queue: int = 8, cache_size_gb: int = 1, draft: str | Path | None = None,
                 num_assistant_tokens: int = 0):
        import openvino_genai as og

        self.folder = Path(folder)
        self.max_active = int(max_active)
        self.max_queue = int(max_queue)
        props = {k: ("YES" if v else "NO") if isinstance(v, bool) else str(v) for k, v in dict(properties or {}).items()}
        sc = og.SchedulerConfig()
        sc.cache_size = int(cache_size_gb)
        sc.max_num_seqs = self.max_active
        self.num_assistant_tokens = int(num_assistant_tokens) if draft else 0
        if draft is not None:
            props = dict(props, draft_model=og.draft_model(str(draft), "CPU", **props))
        self.tokenizer = og.Tokenizer(str(self.folder))
        self.eos_token_id = int(self.tokenizer.get_eos_token_id())
        self._og = og
        self._pipe = og.ContinuousBatchingPipeline(str(self.folder), sc, "CPU", props)
        self._lock = threading.Condition()
        self._pending: deque[_Request] = deque()
        self._running: dict[int, _Request] = {}
        self._next_id = 0
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="hwnas-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public API

    def encode(self, text: str) -> list[int]:
        return [int(i) for i in self.tokenizer.encode(text, add_special_tokens=False).input_ids.data[0]]

    def chat_prompt(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The bundle tokenizer's chat template applied to `messages`, ready for generation."""
        return str(self.tokenizer.apply_chat_template([dict(m) for m in messages], add_generation_prompt=True))

    @property
    def load(self) -> tuple[int, int]:
        """(running, queued) requests."""
        with self._lock:
            return len(self._running), len(self._pending)

    def submit(self, prompt_ids: Sequence[int], params: SamplingParams, deliver: Callable[[Event], None]) -> int:
        """Admit a request (EngineBusy when full, EngineClosed when shutting down); returns its id.

        `deliver` is called from the engine thread, so it must be quick and thread-safe.
        """
        with self._lock:
            if self._closing:
                raise EngineClosed("the server is shutting down")
            if len(self._running) + len(self._pending) >= self.max_active + self.max_queue:
                raise EngineBusy(f"all {self.max_active} running and {self.max_queue} queued slots are taken")
            rid = self._next_id
            self._next_id += 1
            self._pending.append(_Request(rid, [int(i) for i in prompt_ids], params, deliver))
            self._lock.notify_all()
            return rid

    def cancel(self, rid: int) -> None:
        """Stop a request (its client went away); it gets no more events."""
        with self._lock:
            for r in list(self._pending):
                if r.rid == rid:
                    self._pending.remove(r)
                    return
            r = self._running.get(rid)
            if r is not None:
                r.cancelled = True
                self._lock.notify_all()

    def generate(self, prompt_ids: Sequence[int], params: SamplingParams, timeout: float = 300.0) -> tuple[str, int, str]:
        """Blocking helper: (text, completion tokens, finish reason)."""
        import queue

        q: queue.Queue[Event] = queue.Queue()
        self.submit(prompt_ids, params, q.put)
        parts = []
        while True:
            ev = q.get(timeout=timeout)
            parts.append(ev.text)
            if ev.error:
                raise RuntimeError(ev.error)
            if ev.finish_reason:
                return "".join(parts), ev.completion_tokens, ev.finish_reason

    def close(self, timeout: float = 30.0) -> None:
        """Admit nothing new, let running and queued requests finish, stop the thread."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        self._thread.join(timeout)

    # ------------------------------------------------------------------ worker thread

    def _config(self, p: SamplingParams):
        cfg = self._og.GenerationConfig()
        cfg.max_new_tokens = int(p.max_tokens)
        cfg.ignore_eos = bool(p.ignore_eos)
        cfg.apply_chat_template = False
        cfg.set_eos_token_id(self.eos_token_id)
        if p.temperature > 0:
            cfg.do_sample = True
            cfg.temperature = float(p.temperature)
            cfg.top_p = float(p.top_p)
            if p.seed is not None:
                cfg.rng_seed = int(p.seed)
        else:
            cfg.do_sample = False
        if self.num_assistant_tokens:
            cfg.num_assistant_tokens = self.num_assistant_tokens
        return cfg

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._running and not self._closing:
                    self._lock.wait()
                if self._closing and not self._pending and not self._running:
                    return
                new = list(self._pending)
                self._pending.clear()
                for r in new:
                    self._running[r.rid] = r
                cancelled = [r for r in self._running.values() if r.cancelled and not r.done]
            for r in new:
                try:
                    r.handle = self._pipe.add_request(r.rid, _tensor([r.prompt_ids]), self._config(r.params))
                except Exception as e:  # noqa: BLE001 - a bad request must not stop the engine
                    self._finish(r, Event(error=f"{type(e).__name__}: {e}"))
            for r in cancelled:
                self._stop_handle(r)
                with self._lock:
                    r.done = True
                    self._running.pop(r.rid, None)
            try:
                if self._pipe.has_non_finished_requests():
                    self._pipe.step()
            except Exception as e:  # noqa: BLE001 - fail the running requests, keep serving
                log.exception("generation step failed")
                for r in list(self._running.values()):
                    self._finish(r, Event(error=f"generation failed: {type(e).__name__}: {e}"))
                continue
            for r in list(self._running.values()):
                if not r.done:
                    self._read(r)

    def _read(self, r: _Request) -> None:
        h = r.handle
        finish = None
        if h.can_read():
            for out in h.read().values():
                r.ids.extend(int(t) for t in out.generated_ids)
                fr = str(out.finish_reason).rsplit(".", 1)[-1]
                if fr in ("STOP", "LENGTH"):
                    finish = fr.lower()
        status = str(h.get_status()).rsplit(".", 1)[-1]
        if finish is None and status != "RUNNING":
            finish = "length" if len(r.ids) >= r.params.max_tokens else "stop"
        self._emit(r, finish)

    def _emit(self, r: _Request, finish: str | None) -> None:
        ids = r.ids
        if ids and ids[-1] == self.eos_token_id and not r.params.ignore_eos:
            ids = ids[:-1]
        text = str(self.tokenizer.decode(ids, skip_special_tokens=True)) if ids else ""
        stop_at = _first_stop(text, r.params.stop, r.sent)
        if stop_at is not None:
            text, finish = text[:stop_at], "stop"
            self._stop_handle(r)
        end = len(text)
        if finish is None:
            while end > r.sent and text[end - 1] == "\ufffd":  # an incomplete UTF-8 sequence: wait for more bytes
                end -= 1
            hold = max((len(s) - 1 for s in r.params.stop), default=0)  # a stop string may be starting
            end = max(r.sent, end - hold)
        delta = text[r.sent:end]
        r.sent = end
        n = len(r.ids)
        if finish is not None:
            self._finish(r, Event(delta, n, finish))
        elif delta:
            r.deliver(Event(delta, n))

    def _finish(self, r: _Request, ev: Event) -> None:
        with self._lock:
            r.done = True
            self._running.pop(r.rid, None)
        try:
            r.deliver(ev)
        except Exception:  # noqa: BLE001 - a broken consumer must not stop the engine
            log.exception("delivering the last event of request %d failed", r.rid)

    def _stop_handle(self, r: _Request) -> None:
        try:
            if r.handle is not None:
                r.handle.stop()
        except Exception:  # noqa: BLE001
            log.debug("stopping request %d failed", r.rid, exc_info=True)


def _tensor(rows: list[list[int]]):
    import numpy as np
    import openvino as ov

    return ov.Tensor(np.asarray(rows, dtype=np.int64))


def _first_stop(text: str, stops: Sequence[str], sent: int) -> int | None:
    """Index of the earliest stop string in `text` that ends after what was already sent."""
    best = None
    for s in stops:
        if not s:
            continue
        i = text.find(s, max(0, sent - len(s) + 1))
        if i >= 0 and (best is None or i < best):
            best = i
    return best
