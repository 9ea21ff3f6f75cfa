"""The OpenAI-compatible HTTP API of `hwnas serve` (FastAPI): completions, chat completions (both
with server-sent-event streaming), models, health; OpenAI-style JSON errors; bearer-token auth;
request-body size limit; 503 with Retry-After when the engine is full.
"""

import asyncio
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from hwnas.deploy.serving.engine import EngineBusy, EngineClosed, Event, SamplingParams

log = logging.getLogger(__name__)

DEFAULT_CHAT_MAX_TOKENS = 256
RETRY_AFTER_S = 1


# ----------------------------------------------------------------------------- request schemas

class _Req(BaseModel):
    # Unknown fields are ignored (clients send e.g. `user`); known fields are type-checked strictly.
    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = None
    max_tokens: StrictInt | None = None
    temperature: Union[StrictFloat, StrictInt] = 1.0
    top_p: Union[StrictFloat, StrictInt] = 1.0
    seed: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    n: StrictInt = 1
    stream: StrictBool = False
    stream_options: dict | None = None
    logprobs: Any = None
    echo: StrictBool = False
    best_of: StrictInt | None = None
    ignore_eos: StrictBool = False  # vLLM's extension (sent via the openai client's extra_body)


class CompletionRequest(_Req):
    prompt: StrictStr | list[StrictStr] | list[StrictInt]
    max_tokens: StrictInt | None = 16


class _Part(BaseModel):
    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer"]
    content: StrictStr | list[_Part]


class ChatRequest(_Req):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = None
    logprobs: StrictBool | None = None
    tools: Any = None


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type, self.headers = status, message, param, code, type_, headers


def _error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


# ----------------------------------------------------------------------------- app

@dataclass
class ServeSettings:
    model_id: str
    context_length: int
    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    info: dict | None = None        # extra fields for GET /v1/models (bundle facts)
    vocab_size: int | None = None


def create_app(engine: Any, settings: ServeSettings, on_shutdown=None):
    """The FastAPI app over a running `Engine`; `on_shutdown` runs when the server stops (after in-flight requests)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    @asynccontextmanager
    async def lifespan(app):
        yield
        if on_shutdown is not None:
            await asyncio.get_running_loop().run_in_executor(None, on_shutdown)

    app = FastAPI(title="hwnas serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    _add_error_handlers(app)
    _add_auth_and_size_limit(app, settings)
    _add_model_routes(app, engine, settings, created=int(time.time()))
    _add_generation_routes(app, engine, settings)
    return app


def _err(status: int, message: str, type_: str = "invalid_request_error", param=None, code=None, headers=None):
    """An OpenAI-style JSON error response."""
    from fastapi.responses import JSONResponse

    return JSONResponse(_error_body(message, type_, param, code), status_code=status, headers=headers)


def _add_error_handlers(app: Any) -> None:
    """Every error leaves as OpenAI's {"error": {...}}: ours, validation, HTTP and unexpected ones."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(ApiError)
    async def _api_error(request, e: ApiError):
        return _err(e.status, e.message, e.type, e.param, e.code, e.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request, e: RequestValidationError):
        return _err(400, _validation_message(e.errors()), param=_validation_param(e.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, e: StarletteHTTPException):
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return _err(e.status_code, str(e.detail), kind)

    @app.exception_handler(Exception)
    async def _internal(request, e: Exception):
        log.exception("internal error on %s", request.url.path)
        return _err(500, f"internal server error: {type(e).__name__}", "server_error")


def _add_auth_and_size_limit(app: Any, settings: ServeSettings) -> None:
    """Bearer-token check (all but /health) and the declared body size limit, before any route runs."""
    from fastapi import Request

    @app.middleware("http")
    async def _auth_and_size(request: Request, call_next):
        if settings.api_key and request.url.path != "/health":
            auth = request.headers.get("authorization", "")
            token = auth[7:] if auth.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), settings.api_key.encode()):
                return _err(401, "invalid or missing API key; send 'Authorization: Bearer KEY'", "authentication_error",
                            code="invalid_api_key")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            return _err(413, f"request body of {length} bytes is over the limit of {settings.max_body_bytes} bytes",
                        code="request_too_large")
        return await call_next(request)


def _add_model_routes(app: Any, engine: Any, settings: ServeSettings, created: int) -> None:
    """GET /health, /v1/models and /v1/models/{id}."""

    @app.get("/health")
    async def health():
        running, queued = engine.load
        return {"status": "ok", "model": settings.model_id, "running": running, "queued": queued}

    @app.get("/v1/models")
    async def models():
        card = {"id": settings.model_id, "object": "model", "created": created, "owned_by": "hwnas",
                "context_length": settings.context_length}
        card.update(settings.info or {})
        return {"object": "list", "data": [card]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str):
        if model_id != settings.model_id:
            raise ApiError(404, f"model {model_id!r} does not exist; this server serves {settings.model_id!r}",
                           "not_found_error", param="model", code="model_not_found")
        return {"id": settings.model_id, "object": "model", "created": created, "owned_by": "hwnas"}


def _add_generation_routes(app: Any, engine: Any, settings: ServeSettings) -> None:
    """POST /v1/completions and /v1/chat/completions: parse, check, tokenize, then `_respond`."""
    from fastapi import Request

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = _parse(CompletionRequest, await _body_json(request, settings))
        _common_checks(req, settings)
        ids = _completion_prompt_ids(req, engine, settings)
        return await _respond(engine, settings, req, ids, _params(req, req.max_tokens, ids, settings), chat=False)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        req = _parse(ChatRequest, await _body_json(request, settings))
        _common_checks(req, settings)
        ids = _chat_prompt_ids(req, engine)
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        return await _respond(engine, settings, req, ids, _params(req, max_tokens, ids, settings), chat=True)


async def _body_json(request: Any, settings: ServeSettings) -> Any:
    """The request body as JSON, counted as it arrives (chunked uploads have no Content-Length)."""
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > settings.max_body_bytes:
            raise ApiError(413, f"request body is over the limit of {settings.max_body_bytes} bytes",
                           code="request_too_large")
    try:
        return json.loads(bytes(raw))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"request body is not valid JSON: {e}", code="invalid_json") from None


def _parse(model_cls: Any, data: Any) -> Any:
    if not isinstance(data, dict):
        raise ApiError(400, f"request body must be a JSON object, got {type(data).__name__}")
    try:
        return model_cls.model_validate(data)
    except ValidationError as e:
        raise ApiError(400, _validation_message(e.errors()), param=_validation_param(e.errors())) from None


def _completion_prompt_ids(req: CompletionRequest, engine: Any, settings: ServeSettings) -> list[int]:
    """A completion's prompt as token ids: one string, a one-string list, or a list of token ids."""
    p = req.prompt
    if not isinstance(p, list):
        return engine.encode(p)
    if len(p) == 0:
        raise ApiError(400, "prompt is empty; give a string or a list of token ids", param="prompt")
    if isinstance(p[0], str):
        if len(p) != 1:
            raise ApiError(400, f"prompt holds {len(p)} strings; this server accepts one prompt per request", param="prompt")
        return engine.encode(p[0])
    ids = [int(i) for i in p]
    bad = [i for i in ids if i < 0 or (settings.vocab_size and i >= settings.vocab_size)]
    if bad:
        raise ApiError(400, f"token id {bad[0]} is outside the vocabulary; accepted: 0 to "
                            f"{(settings.vocab_size or 1) - 1}", param="prompt")
    return ids


def _chat_prompt_ids(req: ChatRequest, engine: Any) -> list[int]:
    """A chat request's messages through the bundle's chat template, as token ids."""
    if req.logprobs:
        raise ApiError(400, "logprobs are not supported; accepted: false or absent", param="logprobs")
    if req.tools:
        raise ApiError(400, "tools are not supported by this server", param="tools")
    messages = [{"role": m.role, "content": m.content if isinstance(m.content, str)
                 else "".join(part.text for part in m.content)} for m in req.messages]
    try:
        prompt = engine.chat_prompt(messages)
    except Exception as e:  # noqa: BLE001 - template errors are the request's fault
        raise ApiError(400, f"the bundle's chat template cannot format these messages: {e}", param="messages") from None
    return engine.encode(prompt)


async def _respond(engine: Any, settings: ServeSettings, req: _Req, ids: list[int], params: SamplingParams, chat: bool):
    """Submit to the engine (503 + Retry-After when it is full or closing), then answer whole or streamed."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[Event] = asyncio.Queue()
    try:
        rid = engine.submit(ids, params, lambda ev: loop.call_soon_threadsafe(q.put_nowait, ev))
    except EngineBusy as e:
        raise ApiError(503, f"server is busy ({e}); retry later", "server_busy", code="server_busy",
                       headers={"Retry-After": str(RETRY_AFTER_S)}) from None
    except EngineClosed as e:
        raise ApiError(503, str(e), "server_busy", code="shutting_down",
                       headers={"Retry-After": str(RETRY_AFTER_S)}) from None
    reply = _Reply(settings.model_id, ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24], chat, len(ids),
                   bool((req.stream_options or {}).get("include_usage")))
    if not req.stream:
        return await _whole_answer(engine, rid, q, reply)
    from fastapi.responses import StreamingResponse

    return StreamingResponse(_stream_events(engine, rid, q, reply), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@dataclass(frozen=True)
class _Reply:
    """What every response body of one request shares (id, kind, model) and how its parts are written."""

    model_id: str
    cid: str
    chat: bool
    prompt_tokens: int
    include_usage: bool

    def usage(self, n: int) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": n, "total_tokens": self.prompt_tokens + n}

    @property
    def chunk_object(self) -> str:
        return "chat.completion.chunk" if self.chat else "text_completion"

    def whole(self, text: str, finish_reason: str, completion_tokens: int) -> dict:
        choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                   "finish_reason": finish_reason} if self.chat else
                  {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason})
        return {"id": self.cid, "object": "chat.completion" if self.chat else "text_completion",
                "created": int(time.time()), "model": self.model_id, "choices": [choice],
                "usage": self.usage(completion_tokens)}

    def chunk(self, text: str | None, finish: str | None, first: bool = False) -> str:
        if self.chat:
            delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text else {})
            c = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            c = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        d = {"id": self.cid, "object": self.chunk_object, "created": int(time.time()), "model": self.model_id,
             "choices": [c]}
        if self.include_usage:
            d["usage"] = None
        return f"data: {json.dumps(d)}\n\n"

    def usage_chunk(self, completion_tokens: int) -> str:
        d = {"id": self.cid, "object": self.chunk_object, "created": int(time.time()), "model": self.model_id,
             "choices": [], "usage": self.usage(completion_tokens)}
        return f"data: {json.dumps(d)}\n\n"


async def _whole_answer(engine: Any, rid: Any, q: "asyncio.Queue[Event]", reply: _Reply) -> dict:
    """Wait for the last event and answer in one body (the request is cancelled if the client goes)."""
    parts, last = [], None
    try:
        while True:
            ev = await q.get()
            parts.append(ev.text)
            if ev.error:
                raise ApiError(500, ev.error, "server_error")
            if ev.finish_reason:
                last = ev
                break
    except asyncio.CancelledError:
        engine.cancel(rid)
        raise
    return reply.whole("".join(parts), last.finish_reason, last.completion_tokens)


async def _stream_events(engine: Any, rid: Any, q: "asyncio.Queue[Event]", reply: _Reply):
    """Server-sent events as OpenAI sends them; a client that goes away frees its engine slot."""
    finished = False
    try:
        if reply.chat:
            yield reply.chunk(None, None, first=True)
        while True:
            ev = await q.get()
            if ev.error:
                yield f"data: {json.dumps(_error_body(ev.error, 'server_error'))}\n\n"
                finished = True
                break
            if ev.text or ev.finish_reason:
                if ev.text and ev.finish_reason:
                    yield reply.chunk(ev.text, None)
                    yield reply.chunk(None, ev.finish_reason)
                else:
                    yield reply.chunk(ev.text, ev.finish_reason)
            if ev.finish_reason:
                finished = True
                if reply.include_usage:
                    yield reply.usage_chunk(ev.completion_tokens)
                break
        yield "data: [DONE]\n\n"
    finally:
        if not finished:  # the client went away: free the slot
            engine.cancel(rid)


# ----------------------------------------------------------------------------- request checks

def _common_checks(req: _Req, settings: ServeSettings) -> None:
    if req.model is not None and req.model != settings.model_id:
        raise ApiError(404, f"model {req.model!r} does not exist; this server serves {settings.model_id!r}",
                       "not_found_error", param="model", code="model_not_found")
    if req.n != 1:
        raise ApiError(400, f"n={req.n} is not supported; accepted: 1", param="n")
    if req.best_of not in (None, 1):
        raise ApiError(400, f"best_of={req.best_of} is not supported; accepted: 1", param="best_of")
    if req.echo:
        raise ApiError(400, "echo is not supported; accepted: false", param="echo")
    if req.logprobs not in (None, False, 0):
        raise ApiError(400, "logprobs are not supported; accepted: null", param="logprobs")
    if not 0 <= req.temperature <= 2:
        raise ApiError(400, f"temperature {req.temperature} is out of range; accepted: 0 to 2", param="temperature")
    if not 0 < req.top_p <= 1:
        raise ApiError(400, f"top_p {req.top_p} is out of range; accepted: > 0 and <= 1", param="top_p")
    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stops) > 4:
        raise ApiError(400, f"{len(stops)} stop sequences given; accepted: at most 4", param="stop")


def _params(req: _Req, max_tokens: int | None, ids: list[int], settings: ServeSettings) -> SamplingParams:
    ctx = settings.context_length
    if not ids:
        raise ApiError(400, "prompt is empty (0 tokens); give at least one token", param="prompt")
    if max_tokens is not None and max_tokens < 1:
        raise ApiError(400, f"max_tokens {max_tokens} is invalid; accepted: an integer >= 1", param="max_tokens")
    if len(ids) >= ctx:
        raise ApiError(400, f"this model's maximum context length is {ctx} tokens, but the prompt has {len(ids)} tokens",
                       param="prompt", code="context_length_exceeded")
    if max_tokens is None:
        max_tokens = min(DEFAULT_CHAT_MAX_TOKENS, ctx - len(ids))
    if len(ids) + max_tokens > ctx:
        raise ApiError(400, f"this model's maximum context length is {ctx} tokens, but {len(ids) + max_tokens} were "
                            f"requested ({len(ids)} in the prompt, {max_tokens} for the completion)",
                       param="max_tokens", code="context_length_exceeded")
    stops = tuple([req.stop] if isinstance(req.stop, str) else (req.stop or []))
    return SamplingParams(max_tokens=max_tokens, temperature=float(req.temperature), top_p=float(req.top_p),
                          seed=req.seed, stop=tuple(s for s in stops if s), ignore_eos=req.ignore_eos)


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "literal"}


def _loc(e: dict) -> list[str]:
    """A validation error's field path without pydantic's union-branch tags ('float', 'list[int]', ...)."""
    return [str(x) for x in e.get("loc", ()) if x != "body" and not (
        isinstance(x, str) and (x.split("[")[0] in _TYPE_TAGS or x.startswith(("function", "constrained"))))]


def _validation_param(errors: list[dict]) -> str | None:
    for e in errors:
        loc = _loc(e)
        if loc:
            return loc[0]
    return None


def _validation_message(errors: list[dict]) -> str:
    e = errors[0] if errors else {}
    loc = ".".join(_loc(e)) or "body"
    if e.get("type") == "missing":
        return f"missing required field {loc!r}"
    return f"field {loc!r}: {e.get('msg', 'invalid value')} (got {e.get('input')!r})"[:300]
