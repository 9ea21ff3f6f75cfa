"""The draft search's ranking (pure): chosen (draft, k) is the argmax of the predicted speed; candidates;
reading a result folder back; resume checks."""
from __future__ import annotations

import itertools
import json

import pytest

from hwnas.errors import SearchError
from hwnas.hardware.speculation import expected_speed, tokens_per_step
from hwnas.model.space import SearchSpace, SubnetConfig
from hwnas.search.speculative import (
    KIND,
    RESULTS_FILE,
    candidate_drafts,
    prepare_out,
    rank_drafts,
    read_draft_search,
)

# three drafts: "good" agrees often but is slow, "fast" is cheap but agrees less, "bad" rarely agrees
AGREE = {
    "good": [[True] * 7 + [False], [True, True, True, False] * 2],
    "fast": [[True, False] * 4, [True, True, False, False] * 2],
    "bad": [[False] * 7 + [True], [False] * 8],
}
TPOT = {"good": 6.0, "fast": 2.0, "bad": 1.0}
VERIFY = {1: 11.0, 2: 12.0, 3: 13.5, 4: 15.0, 5: 17.0}


def test_chosen_draft_and_k_are_the_argmax_of_predicted_speed():
    res = rank_drafts(AGREE, TPOT, VERIFY, full_tpot_ms=10.0)
    brute = max(itertools.product(AGREE, VERIFY),
                key=lambda kk: expected_speed(AGREE[kk[0]], kk[1], TPOT[kk[0]], VERIFY[kk[1]])["tokens_per_s"])
    assert (res["chosen"]["key"], res["chosen"]["k"]) == brute
    best = expected_speed(AGREE[brute[0]], brute[1], TPOT[brute[0]], VERIFY[brute[1]])["tokens_per_s"]
    assert res["chosen"]["tokens_per_s"] == pytest.approx(best)
    assert res["chosen"]["speedup_vs_full"] == pytest.approx(best / 100.0)  # full model: 10 ms -> 100 tokens/s
    for row in res["candidates"]:  # every candidate: its best k is its own argmax, all k reported
        speeds = {p["k"]: p["tokens_per_s"] for p in row["predicted"]}
        assert sorted(speeds) == sorted(VERIFY) and row["best_k"] == max(speeds, key=speeds.get)
        assert row["predicted"][0]["tokens_per_step"] == pytest.approx(tokens_per_step(AGREE[row["key"]], 1))
    assert [r["key"] for r in res["candidates"]] == sorted(
        AGREE, key=lambda k: -max(expected_speed(AGREE[k], kk, TPOT[k], v)["tokens_per_s"] for kk, v in VERIFY.items()))
    assert res["candidates"][-1]["key"] == "bad"
    assert res["candidates"][0]["acceptance_rate"] == pytest.approx(
        sum(map(sum, AGREE[brute[0]])) / sum(map(len, AGREE[brute[0]])))


def test_says_plainly_when_no_draft_beats_the_full_model():
    res = rank_drafts(AGREE, TPOT, VERIFY, full_tpot_ms=3.0)  # a full model faster than any speculation
    assert res["pays"] is False
    assert res["verdict"].startswith("no draft beats the full model") and "ship the full model without a draft" in res["verdict"]
    assert res["chosen"]["speedup_vs_full"] < 1.0
    assert rank_drafts(AGREE, TPOT, VERIFY, full_tpot_ms=10.0)["pays"] is True


def test_candidates_exclude_the_full_model_and_merge_sources():
    space = SearchSpace(num_layers=6, widths=(32, 64), full_width=64, layer_mode="ranked", layer_order=(5, 0, 3, 1, 2, 4))
    full = space.largest()
    extra = SubnetConfig((0, 3, 5), (64, 64, 64))  # also the default rule's draft
    cands = candidate_drafts(space, front=[full, SubnetConfig((0, 1), (32, 64))], extra=[extra])
    keys = [c.subnet.key for c in cands]
    assert full.key not in keys and len(keys) == len(set(keys))
    first = cands[0]
    assert first.subnet == extra and first.sources[0] == "--draft" and any("default rule" in s for s in first.sources)
    cut2 = next(c for c in cands if c.subnet.layers == (0, 5))  # 1/3 of 6 layers: the two most important
    assert cut2.subnet.mlp_widths == (64, 64) and "ranked cut" in cut2.sources[0]
    assert any(c.sources == ["search Pareto front"] for c in cands)
    with pytest.raises(Exception, match="layer"):
        candidate_drafts(space, extra=[SubnetConfig((0, 9), (64, 64))])


def _write_result(folder, model_sha="abc"):
    res = rank_drafts(AGREE, TPOT, VERIFY, full_tpot_ms=10.0)
    subnets = {"good": SubnetConfig((0, 1, 2), (8, 8, 8)), "fast": SubnetConfig((0,), (8,)), "bad": SubnetConfig((1,), (8,))}
    for r in res["candidates"]:
        r["subnet"] = subnets[r["key"]].to_dict()
    folder.mkdir()
    (folder / RESULTS_FILE).write_text(json.dumps({"kind": KIND, "identity": {"model_sha256": model_sha}, **res}))
    return res, subnets


def test_read_draft_search_gives_the_chosen_draft_and_k(tmp_path):
    res, subnets = _write_result(tmp_path / "d")
    dp = read_draft_search(tmp_path / "d")
    assert dp.subnet == subnets[res["chosen"]["key"]] and dp.k == res["chosen"]["k"] and dp.pays
    other = res["candidates"][2]
    dp = read_draft_search(tmp_path / "d", "2")
    assert dp.subnet == subnets[other["key"]] and dp.k == other["best_k"] and not dp.pays
    assert read_draft_search(tmp_path / "d", other["key"]).k == other["best_k"]
    with pytest.raises(SearchError, match="--pick 7 is beyond the 3 candidates"):
        read_draft_search(tmp_path / "d", "7")
    with pytest.raises(SearchError, match="--pick 'zzz' is not an index or a candidate key"):
        read_draft_search(tmp_path / "d", "zzz")
    with pytest.raises(SearchError, match="holds no speculative.json"):
        read_draft_search(tmp_path)


def test_prepare_out_refuses_nonempty_and_changed_identity(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "x").write_text("mine")
    with pytest.raises(SearchError, match="is not empty; pass --resume"):
        prepare_out(out, {}, resume=False)
    with pytest.raises(SearchError, match="not a draft search folder|no readable config.json"):
        prepare_out(out, {}, resume=True)
    (out / "config.json").write_text(json.dumps({"kind": KIND, "identity": {"seed": 0, "target": "xeon"}}))
    prepare_out(out, {"seed": 0, "target": "xeon"}, resume=True)
    with pytest.raises(SearchError, match="different seed"):
        prepare_out(out, {"seed": 1, "target": "xeon"}, resume=True)
    (tmp_path / "f").write_text("")
    with pytest.raises(SearchError, match="exists and is not a folder"):
        prepare_out(tmp_path / "f", {}, resume=False)
