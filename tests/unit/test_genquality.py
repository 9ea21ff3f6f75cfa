"""Scores of the generation-quality check on constructed token sequences, the report's round trip,
the prompts file, and the check on tiny torch models (a model agrees with itself; a broken copy fails)."""
from __future__ import annotations

import json

import pytest

from hwnas.accuracy import genquality as gq
from hwnas.errors import DataError


def test_repeated_ngram_fraction():
    assert gq.repeated_ngram_fraction([1, 2, 3, 4, 5, 6]) == 0.0
    # "a b c a b c a b c": 7 trigrams, 3 distinct -> 4 repeats
    assert gq.repeated_ngram_fraction([1, 2, 3] * 3) == pytest.approx(4 / 7)
    # one token forever: every trigram after the first repeats
    assert gq.repeated_ngram_fraction([7] * 10) == pytest.approx(7 / 8)
    assert gq.repeated_ngram_fraction([1, 2]) == 0.0  # shorter than n
    assert gq.repeated_ngram_fraction([1, 2, 1, 2], n=2) == pytest.approx(1 / 3)


def test_prefix_and_token_agreement():
    ref = [5, 6, 7, 8]
    assert gq.prefix_agreement(ref, ref) == 1.0
    assert gq.prefix_agreement([5, 6, 0, 8], ref) == 0.5
    assert gq.prefix_agreement([0, 6, 7, 8], ref) == 0.0
    assert gq.prefix_agreement([5, 6], ref) == 0.5  # stopped early (EOS)
    assert gq.prefix_agreement([], []) == 1.0 and gq.prefix_agreement([1], []) == 0.0
    assert gq.token_agreement([5, 0, 7, 0], ref) == 0.5
    assert gq.token_agreement([5, 6], ref) == 0.5  # missing positions are misses
    assert gq.token_agreement([9, 9, 9, 9], ref) == 0.0


def _score(cands, refs, forced=None, **kw):
    n = len(cands)
    return gq.score_generations([f"p{i}" for i in range(n)], ["continuation"] * n, cands, refs,
                                forced if forced is not None else refs, **kw)


def test_identical_generations_pass_and_aggregates():
    refs = [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10]]
    rep = _score(refs, refs, nll=[1.0, 2.0], ref_nll=[1.0, 2.0])
    assert rep.passed and rep.reasons == ()
    a = rep.aggregate
    assert a["prefix"] == 1.0 and a["forced"] == 1.0 and a["repeat_excess"] == 0.0 and a["exact"] == 2
    assert a["nll_excess"] == 0.0


def test_looping_candidate_fails_on_repetition_and_agreement():
    refs = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]] * 4
    loops = [[1, 2, 3] * 4] * 4  # agrees for 3 tokens, then loops
    t = gq.GenThresholds(min_prefix=0.5, min_forced=None, max_repeat_excess=0.2)
    rep = _score(loops, refs, thresholds=t)
    assert not rep.passed
    assert rep.aggregate["prefix"] == pytest.approx(0.3)
    assert rep.aggregate["repeat_excess"] == pytest.approx(7 / 10)
    assert len(rep.reasons) == 2
    assert "matching prefix 0.30 < 0.50" in rep.reasons[0] and "repeated 3-grams +0.70" in rep.reasons[1]


def test_repetition_is_relative_to_the_full_model():
    """A full model that loops by itself does not make its faithful copy fail."""
    loop = [[4, 4, 4, 4, 4, 4, 4, 4]]
    rep = _score(loop, loop, thresholds=gq.GenThresholds(max_repeat_excess=0.1))
    assert rep.aggregate["repeat"] > 0.8 and rep.aggregate["repeat_excess"] == 0.0 and rep.passed


def test_nll_threshold_only_applies_with_nll():
    refs = [[1, 2, 3, 4]]
    t = gq.GenThresholds(max_nll_excess=0.5)
    assert _score(refs, refs, thresholds=t).passed  # no NLL measured: not judged
    rep = _score(refs, refs, thresholds=t, nll=[3.0], ref_nll=[1.0])
    assert not rep.passed and rep.aggregate["nll_excess"] == pytest.approx(2.0)
    assert "NLL +2.00" in rep.reasons[0]


def test_forced_agreement_threshold():
    refs = [[1, 2, 3, 4]]
    rep = _score(refs, refs, forced=[[1, 0, 0, 4]], thresholds=gq.GenThresholds(min_forced=0.7))
    assert rep.aggregate["forced"] == 0.5 and not rep.passed and "teacher-forced agreement 0.50 < 0.70" in rep.reasons[0]


def test_report_round_trip():
    refs = [[1, 2, 3, 4, 5], [6, 7]]
    rep = _score([[1, 2, 0, 0, 0], [6, 7]], refs, nll=[2.5, 1.0], ref_nll=[1.0, 1.0])
    d = json.loads(json.dumps(rep.to_dict()))
    back = gq.GenQualityReport.from_dict(d)
    assert back == rep
    assert back.prompts[0].prefix == pytest.approx(0.4) and back.thresholds == gq.DEFAULT_THRESHOLDS


def test_thresholds_from_dict_rejects_bad_values():
    assert gq.GenThresholds.from_dict({"min_prefix": 0.3}) == gq.GenThresholds(min_prefix=0.3)
    with pytest.raises(DataError, match="unknown generation threshold 'min_prefx'"):
        gq.GenThresholds.from_dict({"min_prefx": 0.3})
    with pytest.raises(DataError, match="'max_nll_excess' must be a number"):
        gq.GenThresholds.from_dict({"max_nll_excess": "high"})


def test_default_prompts_file():
    prompts = gq.load_prompts()
    kinds = [p.kind for p in prompts]
    assert len(prompts) >= 16 and kinds.count("instruction") >= 6 and kinds.count("continuation") >= 6
    assert len(gq.prompts_sha256(prompts)) == 64


def test_prompts_file_is_not_calibration_text():
    """The prompts live in a subfolder so calibration/*.jsonl (channel order, quantization) is unchanged."""
    from hwnas.model.calibration import load_texts

    texts = load_texts()
    assert not any(p.text in t for p in gq.load_prompts() for t in texts)


def test_bad_prompts_file(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"id": "a", "kind": "poem", "text": "x"}\n')
    with pytest.raises(DataError, match="line 1: kind 'poem'"):
        gq.load_prompts(f)
    f.write_text('{"id": "a", "kind": "continuation", "text": "x"}\n{"id": "a", "kind": "continuation", "text": "y"}\n')
    with pytest.raises(DataError, match="not unique"):
        gq.load_prompts(f)


def _tiny_prompts():
    return [gq.Prompt("c1", "continuation", "hello world, this is"), gq.Prompt("c2", "continuation", "one two three"),
            gq.Prompt("i1", "instruction", "say something")]


def test_torch_candidate_matches_reference_and_broken_copy_fails():
    from tests.conftest import make_tiny_llama, make_tiny_tokenizer

    # untied: a tied random model mostly echoes its input token, whatever its other weights
    model, tok = make_tiny_llama(tie=False), make_tiny_tokenizer()
    ref = gq.reference_generations(model, tok, _tiny_prompts(), max_new_tokens=12)
    assert all(len(t) == 12 or t[-1] in ref.eos_ids for t in ref.tokens)
    # the instruction prompt has no chat template here: plain "Question: ...\nAnswer:"
    assert tok.decode(list(ref.prompt_ids[2])) == "Question: say something\nAnswer:"
    rep, toks = gq.check_candidate(gq.TorchCandidate(model, ref.eos_ids), ref, full_model=model)
    assert rep.passed and rep.aggregate["prefix"] == 1.0 and rep.aggregate["forced"] == 1.0
    assert [tuple(t) for t in toks] == list(ref.tokens)
    assert rep.aggregate["nll_excess"] == pytest.approx(0.0, abs=1e-5)

    broken = make_tiny_llama(tie=False, seed=1)  # other random weights: another model altogether
    rep_b, _ = gq.check_candidate(gq.TorchCandidate(broken, ref.eos_ids), ref, full_model=model,
                                  thresholds=gq.GenThresholds(min_prefix=0.5, min_forced=0.5, max_nll_excess=0.2))
    assert not rep_b.passed and len(rep_b.reasons) == 3
    # near-uniform random models: the NLL moves little (ln 300 = 5.7), agreement collapses
    assert rep_b.aggregate["prefix"] < 0.2 and rep_b.aggregate["forced"] < 0.2 and rep_b.aggregate["nll_excess"] > 0.2


def test_batched_generation_equals_one_prompt_at_a_time():
    """Left-padded batch decoding (the search's generation screen) gives the per-prompt greedy tokens:
    padding, positions and the attention mask are right, and EOS stops a row without stopping the others."""
    from tests.conftest import make_tiny_llama, make_tiny_tokenizer

    model, tok = make_tiny_llama(tie=False), make_tiny_tokenizer()
    ref = gq.reference_generations(model, tok, _tiny_prompts(), max_new_tokens=12)
    assert len({len(p) for p in ref.prompt_ids}) > 1   # prompts of different lengths: some rows are padded
    cand = gq.TorchCandidate(model, ref.eos_ids)
    assert [tuple(t) for t in cand.generate_many(ref.prompt_ids, 12)] == list(ref.tokens)
    # an EOS id that the first prompt emits at its third step ends that row there, the others go on
    eos = ref.tokens[0][2]
    stopped = gq.TorchCandidate(model, (eos,)).generate_many(ref.prompt_ids, 12)
    assert stopped[0] == list(ref.tokens[0][:3])
    for got, want in zip(stopped[1:], ref.tokens[1:]):
        cut = next((i + 1 for i, t in enumerate(want) if t == eos), len(want))
        assert got == list(want[:cut])
    rep, toks = gq.check_candidate(cand, ref, batched=True)
    assert rep.passed and [tuple(t) for t in toks] == list(ref.tokens)


def test_reference_cache(tmp_path, monkeypatch):
    from tests.conftest import make_tiny_llama, make_tiny_tokenizer

    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path))
    model, tok = make_tiny_llama(), make_tiny_tokenizer()
    a = gq.reference_generations(model, tok, _tiny_prompts(), max_new_tokens=6, cache_key="tiny")
    files = list((tmp_path / "genquality").glob("ref-*.json"))
    assert len(files) == 1
    d = json.loads(files[0].read_text())
    d["tokens"][0] = [1, 2, 3]
    files[0].write_text(json.dumps(d))
    b = gq.reference_generations(model, tok, _tiny_prompts(), max_new_tokens=6, cache_key="tiny")
    assert b.tokens[0] == (1, 2, 3) and b.tokens[1:] == a.tokens[1:]  # served from the cache
