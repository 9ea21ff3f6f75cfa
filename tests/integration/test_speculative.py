"""Speculative bundles: the whole model plus a subnet as its draft; greedy output token-identical to the
full model's, through openvino-genai's LLMPipeline, the serving engine and `hwnas verify`."""
from __future__ import annotations

import json
import shutil

import pytest

from hwnas.deploy.speculative import DRAFT_DIR, SPEC_FILE, default_draft, expected_speed, tokens_per_step
from hwnas.model.space import SubnetConfig

DRAFT = SubnetConfig((0, 1, 3), (128, 128, 128))
PROMPTS = ["Hello world", "The capital of France is", "abc", "Once upon a time", "zebra"]
EXACT = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}


@pytest.fixture(scope="module")
def spec_bundle(tmp_path_factory):
    from hwnas.deploy.quantize import make_recipe
    from hwnas.deploy.speculative import export_speculative_bundle
    from tests.integration.test_serve import SERVE_TARGET, make_varied_model_dir

    root = tmp_path_factory.mktemp("spec")
    target = root / "t.toml"
    target.write_text(SERVE_TARGET)
    res = export_speculative_bundle(str(make_varied_model_dir(root)), root / "spec", recipe=make_recipe("int8"),
                                    draft=DRAFT, num_assistant_tokens=3, target=str(target), measure=False,
                                    generation_check=False)
    return res


def _greedy(folder, prompt, n, draft=None, k=0):
    import openvino_genai as og

    kw = {"draft_model": og.draft_model(str(draft), "CPU", **EXACT)} if draft else {}
    pipe = og.LLMPipeline(str(folder), "CPU", **EXACT, **kw)
    tok = pipe.get_tokenizer()
    cfg = og.GenerationConfig()
    cfg.max_new_tokens = n
    cfg.do_sample = False
    cfg.apply_chat_template = False
    cfg.ignore_eos = True
    if k:
        cfg.num_assistant_tokens = k
    return [int(t) for t in pipe.generate(tok.encode(prompt, add_special_tokens=False), cfg).tokens[0]]


def test_layout_and_verify(spec_bundle):
    from hwnas.deploy.manifest import read_manifest
    from hwnas.deploy.verify import verify_bundle

    b = spec_bundle.path
    spec = json.loads((b / SPEC_FILE).read_text())
    assert spec["num_assistant_tokens"] == 3 and spec["draft"]["layers"] == [0, 1, 3]
    m = read_manifest(b)
    assert m.subnet is None  # the bundle proper is the whole model
    assert {f"{DRAFT_DIR}/openvino_model.xml", f"{DRAFT_DIR}/openvino_model.bin", SPEC_FILE} <= set(m.files)
    assert json.loads((b / DRAFT_DIR / "config.json").read_text())["num_hidden_layers"] == 3
    rep = verify_bundle(b)
    assert rep.ok, rep.problems
    assert any("speculative decoding with 3 draft tokens reproduces" in c for c in rep.checks)


def test_tampered_draft_fails_verification(spec_bundle, tmp_path):
    from hwnas.deploy.verify import verify_bundle

    b = tmp_path / "b"
    shutil.copytree(spec_bundle.path, b)
    p = b / DRAFT_DIR / "openvino_model.bin"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x10
    p.write_bytes(bytes(data))
    assert verify_bundle(b, load=False).problems == [f"{DRAFT_DIR}/openvino_model.bin checksum mismatch (sha256 differs from the manifest)"]


def test_greedy_output_token_identical_to_full_model(spec_bundle):
    b = spec_bundle.path
    mismatched_draft = 0
    for p in PROMPTS:
        full = _greedy(b, p, 24)
        for k in (1, 3, 5):
            assert _greedy(b, p, 24, draft=b / DRAFT_DIR, k=k) == full, (p, k)
        mismatched_draft += _greedy(b / DRAFT_DIR, p, 24) != full
    assert mismatched_draft >= 3  # the draft alone answers differently: speculation really corrected it


def test_serving_engine_uses_the_draft_and_keeps_the_answer(spec_bundle):
    from hwnas.deploy.serving.engine import Engine, SamplingParams
    from hwnas.deploy.serving.server import prepare

    prep = prepare(spec_bundle.path, properties=EXACT, verify=False)
    assert prep.draft == spec_bundle.path / DRAFT_DIR and prep.num_assistant_tokens == 3
    assert prep.info["speculative"] == {"draft": DRAFT.key, "num_assistant_tokens": 3}
    spec = Engine(prep.folder, properties=EXACT, draft=prep.draft, num_assistant_tokens=3)
    plain = Engine(prep.folder, properties=EXACT)
    try:
        for p in PROMPTS:
            ids = spec.encode(p)
            params = SamplingParams(max_tokens=20, ignore_eos=True)
            assert spec.generate(ids, params) == plain.generate(ids, params)
    finally:
        spec.close()
        plain.close()


def test_tokens_per_step_and_expected_speed():
    agree = [[True, True, False, True, True, True, True, False]]
    # k=2: [T,T] accepted + 1 -> pos 3; [T,T] +1 -> pos 6; [T] then F... run=1 (+1) -> pos 8: 3 steps, 8 tokens
    assert tokens_per_step(agree, 2) == pytest.approx(8 / 3)
    assert tokens_per_step(agree, 1) == pytest.approx(8 / 5)
    assert tokens_per_step([[False] * 6], 4) == 1.0
    e = expected_speed(agree, 2, draft_tpot_ms=2.0, verify_ms=10.0)
    assert e["step_ms"] == 14.0 and e["tokens_per_s"] == pytest.approx(1000 * (8 / 3) / 14)


def test_default_draft_rule():
    d = default_draft([5, 0, 3, 1, 2, 4], 6, 64)
    assert d.layers == (0, 3, 5) and d.mlp_widths == (64, 64, 64)
    assert default_draft(None, 5, 8).layers == (0, 1, 2)


def test_measure_speculative_times_the_pair_and_keeps_the_tokens(spec_bundle):
    from hwnas.deploy.speculative import measure_speculative

    sp = measure_speculative(spec_bundle.path, EXACT, tokens=8, repeats=2)
    assert sp["num_assistant_tokens"] == 3 and sp["draft"] == DRAFT.key
    assert sp["identical_greedy_tokens"] == "2/2"  # lossless: same greedy tokens with and without the draft
    assert len(sp["tpot_samples_ms"]) == len(sp["plain_tpot_samples_ms"]) == 2
    assert sp["speculative_speedup"] == pytest.approx(sp["plain_tpot_ms"] / sp["tpot_ms"]) and sp["tpot_ms"] > 0


def test_bench_reports_a_speculative_bundle_as_speculative_with_its_k(spec_bundle, tmp_path, monkeypatch):
    from click.testing import CliRunner

    import hwnas.deploy.benchmark as bm
    from hwnas.cli import main

    # the NNCF baseline of the tiny model is not what this test is about: reuse the bundle's own full IR
    monkeypatch.setattr(bm, "nncf_int8_ir", lambda loaded, out=None: spec_bundle.path)
    r = CliRunner().invoke(main, ["bench", str(spec_bundle.path), "--no-torch", "--json", str(tmp_path / "b.json"), "-q"])
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [x["kind"] for x in rows] == ["openvino-nncf-int8", "bundle", "speculative"]
    assert rows[1]["name"].endswith("(no draft)")
    spec = rows[2]
    assert spec["num_assistant_tokens"] == 3 and spec["draft"] == DRAFT.key and "k=3" in spec["name"]
    assert spec["decode_speedup"] == pytest.approx(spec["plain_tpot_ms"] / spec["tpot_ms"])
    assert "without its draft" in spec["ratio_note"] and spec["identical_greedy_tokens"].startswith(str(spec["repeats"]))
    assert spec["weight_bytes"] > rows[1]["weight_bytes"]  # full model + draft
    assert "speculative k=3" in r.output and "x the same bundle without its draft" in r.output


@pytest.mark.precision_free  # OpenVINO only: one pass of make test
def test_hwnas_serve_a_speculative_bundle_with_api_key_and_model_name(spec_bundle):
    """`hwnas serve` as a user starts it: a speculative bundle, --api-key and --model-name given as flags. The
    server answers under the given name only, behind the key, with the full model's greedy tokens (f32 target)."""
    import httpx
    import openai
    import openvino_genai

    from tests.integration.test_serve import Server, ref_greedy_text

    b = spec_bundle.path
    target = b.parent / "t.toml"
    s = Server(b, target, "--api-key", "s3cret", "--model-name", "my-model", "--max-active", "2")
    try:
        assert httpx.get(s.url + "/v1/models").status_code == 401
        assert httpx.get(s.url + "/health").json()["model"] == "my-model"
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="s3cret", max_retries=0, timeout=120)
        assert [m.id for m in client.models.list().data] == ["my-model"]
        tok = openvino_genai.Tokenizer(str(b))
        for prompt in PROMPTS[:3]:
            ref, ids = ref_greedy_text(b, tok, prompt, 12)  # the full model's IR alone, no draft
            r = client.completions.create(model="my-model", prompt=prompt, max_tokens=12, temperature=0,
                                          extra_body={"ignore_eos": True})
            assert r.choices[0].text == ref and r.usage.completion_tokens == 12, prompt
        with pytest.raises(openai.NotFoundError):
            client.completions.create(model=b.name, prompt="hi", max_tokens=2)  # the bundle's own name is replaced
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=s.url + "/v1", api_key="wrong", max_retries=0).models.list()
    finally:
        assert s.stop() == 0
