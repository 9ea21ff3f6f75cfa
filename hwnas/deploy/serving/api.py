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

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @asynccontextmanager
    async def lifespan(app):
        yield
        if on_shutdown is not None:
            await asyncio.get_running_loop().run_in_executor(None, on_shutdown)

    app = FastAPI(title="hwnas serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    created = int(time.time())

    def err(status: int, message: str, type_: str = "invalid_request_error", param=None, code=None, headers=None):
        return JSONResponse(_error_body(message, type_, param, code), status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def _api_error(request, e: ApiError):
        return err(e.status, e.message, e.type, e.param, e.code, e.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request, e: RequestValidationError):
        return err(400, _validation_message(e.errors()), param=_validation_param(e.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, e: StarletteHTTPException):
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return err(e.status_code, str(e.detail), kind)

    @app.exception_handler(Exception)
    async def _internal(request, e: Exception):
        log.exception("internal error on %s", request.url.path)
        return err(500, f"internal server error: {type(e).__name__}", "server_error")

    @app.middleware("http")
    async def _auth_and_size(request: Request, call_next):
        if settings.api_key and request.url.path != "/health":
            auth = request.headers.get("authorization", "")
            token = auth[7:] if auth.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), settings.api_key.encode()):
                return err(401, "invalid or missing API key; send 'Authorization: Bearer KEY'", "authentication_error",
                           code="invalid_api_key")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            return err(413, f"request body of {length} bytes is over the limit of {settings.max_body_bytes} bytes",
                       code="request_too_large")
        return await call_next(request)

    async def body_json(request: Request) -> Any:
        raw = bytearray()
        async for chunk in request.stream():  # chunked uploads have no Content-Length: count as they come
            raw += chunk
            if len(raw) > settings.max_body_bytes:
                raise ApiError(413, f"request body is over the limit of {settings.max_body_bytes} bytes",
                               code="request_too_large")
        try:
            return json.loads(bytes(raw))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, f"request body is not valid JSON: {e}", code="invalid_json") from None

    def parse(model_cls, data):
        if not isinstance(data, dict):
            raise ApiError(400, f"request body must be a JSON object, got {type(data).__name__}")
        try:
            return model_cls.model_validate(data)
        except ValidationError as e:
            raise ApiError(400, _validation_message(e.errors()), param=_validation_param(e.errors())) from None

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

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = parse(CompletionRequest, await body_json(request))
        _common_checks(req, settings)
        p = req.prompt
        if isinstance(p, list):
            if len(p) == 0:
                raise ApiError(400, "prompt is empty; give a string or a list of token ids", param="prompt")
            if isinstance(p[0], str):
                if len(p) != 1:
                    raise ApiError(400, f"prompt holds {len(p)} strings; this server accepts one prompt per request", param="prompt")
                ids = engine.encode(p[0])
            else:
                ids = [int(i) for i in p]
                bad = [i for i in ids if i < 0 or (settings.vocab_size and i >= settings.vocab_size)]
                if bad:
                    raise ApiError(400, f"token id {bad[0]} is outside the vocabulary; accepted: 0 to "
                                        f"{(settings.vocab_size or 1) - 1}", param="prompt")
        else:
            ids = engine.encode(p)
        params = _params(req, req.max_tokens, ids, settings)
        return await respond(req, ids, params, chat=False)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        req = parse(ChatRequest, await body_json(request))
        _common_checks(req, settings)
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
        ids = engine.encode(prompt)
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        return await respond(req, ids, _params(req, max_tokens, ids, settings), chat=True)

    async def respond(req: _Req, ids: list[int], params: SamplingParams, chat: bool):
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
        cid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        usage = lambda n: {"prompt_tokens": len(ids), "completion_tokens": n, "total_tokens": len(ids) + n}  # noqa: E731
        if not req.stream:
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
            text = "".join(parts)
            choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                       "finish_reason": last.finish_reason} if chat else
                      {"index": 0, "text": text, "logprobs": None, "finish_reason": last.finish_reason})
            return {"id": cid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
                    "model": settings.model_id, "choices": [choice], "usage": usage(last.completion_tokens)}

        include_usage = bool((req.stream_options or {}).get("include_usage"))
        obj = "chat.completion.chunk" if chat else "text_completion"

        def chunk(text: str | None, finish: str | None, first: bool = False) -> str:
            if chat:
                delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text else {})
                c = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            else:
                c = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
            d = {"id": cid, "object": obj, "created": int(time.time()), "model": settings.model_id, "choices": [c]}
            if include_usage:
                d["usage"] = None
            return f"data: {json.dumps(d)}\n\n"

        async def events():
            finished = False
            try:
                if chat:
                    yield chunk(None, None, first=True)
                while True:
                    ev = await q.get()
                    if ev.error:
                        yield f"data: {json.dumps(_error_body(ev.error, 'server_error'))}\n\n"
                        finished = True
                        break
                    if ev.text or ev.finish_reason:
                        if ev.text and ev.finish_reason:
                            yield chunk(ev.text, None)
                            yield chunk(None, ev.finish_reason)
                        else:
                            yield chunk(ev.text, ev.finish_reason)
                    if ev.finish_reason:
                        finished = True
                        if include_usage:
                            d = {"id": cid, "object": obj, "created": int(time.time()), "model": settings.model_id,
                                 "choices": [], "usage": usage(ev.completion_tokens)}
                            yield f"data: {json.dumps(d)}\n\n"
                        break
                yield "data: [DONE]\n\n"
            finally:
                if not finished:  # the client went away: free the slot
                    engine.cancel(rid)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return app


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
