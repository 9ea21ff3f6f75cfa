"""`hwnas serve` as a real process on a free 127.0.0.1 port, spoken to with the `openai` client and raw HTTP.

The bundle is a tiny random LLaMA whose weights are scaled so that greedy output varies from token
to token (a plain random tiny model repeats one token, which would make equality checks weak).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import TINY_TARGET  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# The tiny target with exact numerics (f32 math and KV cache, no dynamic quantization), so the
# server's greedy tokens can be compared with the IR's own.
SERVE_TARGET = TINY_TARGET.replace('name = "tiny"', 'name = "tiny-exact"').replace(
    'INFERENCE_PRECISION_HINT = "f32"\n',
    'INFERENCE_PRECISION_HINT = "f32"\nKV_CACHE_PRECISION = "f32"\nDYNAMIC_QUANTIZATION_GROUP_SIZE = 0\n')
CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
                 "{% if add_generation_prompt %}<s>assistant\n{% endif %}")
CONTEXT = 4096
PROMPTS = ["Hello world", "The capital of France is", "abc", "Once upon a time", "1 2 3 4", "zebra",
           "The quick brown fox", "Serve me"]


def make_varied_model_dir(root: Path) -> Path:
    """Tiny LLaMA (untied, projections x8: chaotic enough that greedy tokens vary) + byte tokenizer with a chat template."""
    import torch

    from tests.conftest import make_tiny_llama, make_tiny_tokenizer

    model = make_tiny_llama(seed=1, tie=False)
    model.config.max_position_embeddings = CONTEXT  # room for a request long enough to hold a slot on any host
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "proj" in name:
                p.mul_(8)
    d = root / "tiny-varied"
    model.save_pretrained(d)
    tok = make_tiny_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def served_bundle(tmp_path_factory):
    from hwnas.deploy.export import export_bundle
    from hwnas.deploy.quantize import make_recipe

    root = tmp_path_factory.mktemp("serve")
    target = root / "tiny-exact.toml"
    target.write_text(SERVE_TARGET)
    res = export_bundle(str(make_varied_model_dir(root)), root / "tiny-int8", recipe=make_recipe("int8"),
                        target=str(target), measure=False, generation_check=False)  # random weights
    return res.path, target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, bundle: Path, target: Path, *args: str, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        e = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {}))
        self.proc = subprocess.Popen([sys.executable, "-m", "hwnas", "serve", str(bundle), "--port", str(self.port),
                                      "--target", str(target), *args], env=e, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 180) -> None:
        import httpx

        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.proc.stdout.read()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise AssertionError("server did not come up")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


@pytest.fixture(scope="module")
def server(served_bundle):
    bundle, target = served_bundle
    s = Server(bundle, target, "--max-active", "8", "--max-queue", "8", "--max-body-bytes", "65536")
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def client(server):
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def tokenizer(served_bundle):
    import openvino_genai

    return openvino_genai.Tokenizer(str(served_bundle[0]))


def ref_greedy_text(bundle: Path, tokenizer, prompt: str, n: int) -> tuple[str, list[int]]:
    """The model's own greedy answer, without the server: the bundle's stateful IR, one request, f32 numerics."""
    from hwnas.deploy.manifest import EXACT_PROPERTIES
    from hwnas.deploy.runtime import greedy_tokens

    ids = [int(i) for i in tokenizer.encode(prompt, add_special_tokens=False).input_ids.data[0]]
    toks = greedy_tokens(bundle, ids, n, {**EXACT_PROPERTIES})
    return str(tokenizer.decode(toks, skip_special_tokens=True)), ids


# ----------------------------------------------------------------------------- the openai client

def test_models_and_health(server, client):
    import httpx

    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny-int8"]
    h = httpx.get(server.url + "/health").json()
    assert h["status"] == "ok" and h["model"] == "tiny-int8"


def test_completion_is_the_models_greedy_answer(served_bundle, client, tokenizer):
    prompt = PROMPTS[1]
    ref, ids = ref_greedy_text(served_bundle[0], tokenizer, prompt, 12)
    r = client.completions.create(model="tiny-int8", prompt=prompt, max_tokens=12, temperature=0)
    assert r.choices[0].text == ref and len(set(ref)) > 3  # the model's answer, and not one repeated character
    assert r.choices[0].finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (len(ids), 12, len(ids) + 12)


def test_streaming_equals_non_streaming(client):
    prompt = PROMPTS[3]
    full = client.completions.create(model="tiny-int8", prompt=prompt, max_tokens=20, temperature=0)
    chunks = list(client.completions.create(model="tiny-int8", prompt=prompt, max_tokens=20, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    text_chunks = [c for c in chunks if c.choices]
    assert "".join(c.choices[0].text for c in text_chunks) == full.choices[0].text
    assert len(text_chunks) > 2  # arrived in pieces
    assert text_chunks[-1].choices[0].finish_reason == full.choices[0].finish_reason  # "stop": this prompt meets EOS
    assert chunks[-1].usage.model_dump() == full.usage.model_dump()


def test_chat_uses_the_bundles_chat_template(client, tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    templated = str(tokenizer.apply_chat_template(messages, add_generation_prompt=True))
    assert templated == "<s>system\nBe brief.</s>\n<s>user\nName a colour.</s>\n<s>assistant\n"
    plain = client.completions.create(model="tiny-int8", prompt=templated, max_tokens=10, temperature=0)
    chat = client.chat.completions.create(model="tiny-int8", messages=messages, max_tokens=10, temperature=0)
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content == plain.choices[0].text
    assert chat.usage.prompt_tokens == plain.usage.prompt_tokens and chat.usage.completion_tokens == 10
    stream = client.chat.completions.create(model="tiny-int8", messages=messages, max_tokens=10, temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == plain.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_stop_strings_and_seeded_sampling(client):
    prompt = PROMPTS[0]
    full = client.completions.create(model="tiny-int8", prompt=prompt, max_tokens=24, temperature=0).choices[0].text
    clean = [i for i in range(4, len(full) - 2) if "\ufffd" not in full[i:i + 2] and full[i:i + 2] not in full[:i]]
    assert clean, full
    i = clean[0]
    stop = full[i:i + 2]
    for stream in (False, True):
        if stream:
            text = "".join(c.choices[0].text for c in client.completions.create(
                model="tiny-int8", prompt=prompt, max_tokens=24, temperature=0, stop=[stop], stream=True))
        else:
            r = client.completions.create(model="tiny-int8", prompt=prompt, max_tokens=24, temperature=0, stop=[stop])
            assert r.choices[0].finish_reason == "stop"
            text = r.choices[0].text
        assert text == full[:i], (stream, stop)
    a = client.completions.create(model="tiny-int8", prompt=prompt, max_tokens=16, temperature=1.0, top_p=0.9, seed=7)
    b = client.completions.create(model="tiny-int8", prompt=prompt, max_tokens=16, temperature=1.0, top_p=0.9, seed=7)
    assert a.choices[0].text == b.choices[0].text


def test_ignore_eos_decodes_max_tokens(client):
    """vLLM's `ignore_eos` (the openai client's extra_body): a sampled answer that ended at EOS goes on to max_tokens."""
    kw = dict(model="tiny-int8", prompt=PROMPTS[3], max_tokens=120, temperature=1.5)
    early = next((s for s in range(40) if client.completions.create(seed=s, **kw).choices[0].finish_reason == "stop"), None)
    assert early is not None, "no seed ended at EOS before max_tokens; the check needs one"
    r = client.completions.create(seed=early, extra_body={"ignore_eos": True}, **kw)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 120


def test_client_sees_openai_errors(client):
    import openai

    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="gpt-4", prompt="hi", max_tokens=4)
    assert e.value.body["code"] == "model_not_found" and "'gpt-4' does not exist" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny-int8", prompt="hi", max_tokens=-3)
    assert e.value.body["param"] == "max_tokens" and "-3" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError, match="n=2 is not supported"):
        client.completions.create(model="tiny-int8", prompt="hi", max_tokens=4, n=2)


# ----------------------------------------------------------------------------- raw HTTP, malformed requests

@pytest.mark.parametrize("body,status,needle", [
    (b'{"model": "tiny-int8", "prompt": ', 400, "not valid JSON"),
    (b'[1, 2]', 400, "must be a JSON object"),
    (b'{"prompt": "hi", "max_tokens": "ten"}', 400, "'max_tokens'"),
    (b'{"prompt": 42}', 400, "'prompt"),
    (b'{"prompt": "hi", "temperature": "hot"}', 400, "'temperature'"),
    (b'{"prompt": "hi", "max_tokens": -1}', 400, "max_tokens -1 is invalid"),
    (b'{"prompt": "hi", "max_tokens": 4100}', 400, "maximum context length is 4096 tokens, but 4102 were requested"),
    (b'{"prompt": "' + b"a" * 4200 + b'"}', 400, "maximum context length is 4096 tokens, but the prompt has 4200"),
    (b'{"prompt": [5, 99999]}', 400, "token id 99999 is outside the vocabulary"),
    (b'{"prompt": "hi", "model": "nope"}', 404, "'nope' does not exist"),
    (b'{"messages": []}', 400, "'messages'"),
])
def test_malformed_requests(server, body, status, needle):
    import httpx

    path = "/v1/chat/completions" if b"messages" in body else "/v1/completions"
    r = httpx.post(server.url + path, content=body, headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert needle in err["message"] and err["type"] in ("invalid_request_error", "not_found_error"), err
    assert "Traceback" not in r.text


def test_oversize_body_413_and_server_keeps_serving(server):
    import httpx

    big = json.dumps({"prompt": "a" * 70_000}).encode()
    r = httpx.post(server.url + "/v1/completions", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "over the limit of 65536 bytes" in r.json()["error"]["message"]

    def chunks():  # chunked transfer: no Content-Length, the limit is enforced while reading
        for _ in range(10):
            yield b"x" * 10_000
    r = httpx.post(server.url + "/v1/completions", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    r = httpx.get(server.url + "/v1/nothing-here")
    assert r.status_code == 404 and "error" in r.json()
    ok = httpx.post(server.url + "/v1/completions", json={"prompt": "hi", "max_tokens": 3}, timeout=60)
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3


# ----------------------------------------------------------------------------- concurrency

def test_eight_concurrent_streams_equal_single_request_greedy(server, client, served_bundle, tokenizer):
    first = client.completions.create(model="tiny-int8", prompt=PROMPTS[1], max_tokens=24, temperature=0).choices[0].text
    assert first == ref_greedy_text(served_bundle[0], tokenizer, PROMPTS[1], 24)[0]
    # Streams of 256 tokens (ignore_eos): long enough that all eight are admitted while the first still
    # decodes even on a fast host, where 24-token streams finished before the later connections arrived.
    n, extra = 256, {"ignore_eos": True}
    single = {}
    for p in PROMPTS:  # one at a time first: the single-request greedy answer
        single[p] = client.completions.create(model="tiny-int8", prompt=p, max_tokens=n, temperature=0,
                                              extra_body=extra).choices[0].text
    assert len(set(single.values())) == len(PROMPTS)  # different prompts, different answers
    results, spans, errors = {}, {}, []
    barrier = threading.Barrier(len(PROMPTS))

    def one(p: str) -> None:
        try:
            barrier.wait()
            t0 = time.monotonic()
            parts, times = [], []
            for c in client.completions.create(model="tiny-int8", prompt=p, max_tokens=n, temperature=0, stream=True,
                                               extra_body=extra):
                parts.append(c.choices[0].text)
                times.append(time.monotonic())
            results[p] = "".join(parts)
            spans[p] = (t0, times[0], times[-1])
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=one, args=(p,)) for p in PROMPTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors, errors
    assert results == single
    # They really ran together: most streams had their first chunk before the first one finished (on a
    # loaded 2-core host a stream can be scheduled late, so not all 8 are required).
    first_done = min(s[2] for s in spans.values())
    assert sum(s[1] < first_done for s in spans.values()) >= len(PROMPTS) // 2


# ----------------------------------------------------------------------------- auth, back-pressure, shutdown

@pytest.fixture(scope="module")
def small_server(served_bundle):
    bundle, target = served_bundle
    s = Server(bundle, target, "--max-active", "1", "--max-queue", "0", env={"HWNAS_API_KEY": "s3cret"})
    try:
        yield s
    finally:
        s.stop()


def test_api_key_required_except_health(small_server):
    import httpx
    import openai

    assert httpx.get(small_server.url + "/health").status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        r = httpx.get(small_server.url + "/v1/models", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.post(small_server.url + "/v1/completions", json={"prompt": "hi"})
    assert r.status_code == 401
    good = openai.OpenAI(base_url=small_server.url + "/v1", api_key="s3cret", max_retries=0)
    assert good.completions.create(model="tiny-int8", prompt="hi", max_tokens=2).usage.completion_tokens == 2
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=small_server.url + "/v1", api_key="nope", max_retries=0).models.list()


def test_full_server_answers_503_with_retry_after(small_server):
    import httpx

    auth = {"Authorization": "Bearer s3cret"}
    # The one slot is held by a request of thousands of tokens (no early EOS): seconds of decoding even on
    # a fast host, against the few milliseconds the second request needs to arrive (200 tokens were not).
    long_req = {"prompt": "hi", "max_tokens": CONTEXT - 8, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", small_server.url + "/v1/completions", headers=auth, timeout=120, json=long_req) as long:
        lines = long.iter_lines()
        first = next(ln for ln in lines if ln.startswith("data:"))
        assert json.loads(first[5:])["choices"]
        t0 = time.monotonic()
        busy = httpx.post(small_server.url + "/v1/completions", headers=auth, json={"prompt": "x", "max_tokens": 2}, timeout=30)
        assert time.monotonic() - t0 < 10  # answered at once, not queued behind the long request
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
        assert busy.json()["error"]["code"] == "server_busy"
        rest = [ln for ln in lines if ln.startswith("data:")]
    assert rest[-1] == "data: [DONE]" and json.loads(rest[-2][5:])["choices"][0]["finish_reason"] == "length"
    ok = httpx.post(small_server.url + "/v1/completions", headers=auth, json={"prompt": "x", "max_tokens": 2}, timeout=60)
    assert ok.status_code == 200  # the slot is free again


def test_sigterm_finishes_in_flight_stream(served_bundle):
    import httpx

    bundle, target = served_bundle
    s = Server(bundle, target)
    try:
        with httpx.stream("POST", s.url + "/v1/completions", timeout=120,
                          json={"prompt": "Serve me", "max_tokens": 150, "stream": True, "ignore_eos": True}) as r:
            lines = r.iter_lines()
            next(ln for ln in lines if ln.startswith("data:"))
            s.proc.send_signal(signal.SIGTERM)
            rest = [ln for ln in lines if ln.startswith("data:")]
        assert rest[-1] == "data: [DONE]"
        assert json.loads(rest[-2][5:])["choices"][0]["finish_reason"] in ("length", "stop")
        assert len(rest) > 5  # the stream went on after SIGTERM
        assert s.proc.wait(60) == 0
        assert "server stopped" in s.proc.stdout.read()
        with pytest.raises(httpx.ConnectError):
            httpx.get(s.url + "/health", timeout=5)
    finally:
        s.stop()
