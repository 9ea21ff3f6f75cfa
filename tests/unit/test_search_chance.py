"""Chance-level tasks in the search: records, the pick rule, summary.md and pareto.png."""
from __future__ import annotations

import json

import pytest

from hwnas.accuracy.evaluate import TaskSuite
from hwnas.model.space import SubnetConfig
from hwnas.model.supernet import Supernet
from hwnas.search.config import SearchConfig
from hwnas.search.picking import pick_fastest_within
from hwnas.search.report import chance_plot_note, plot_pareto, summary_markdown
from hwnas.search.result import SearchResult
from hwnas.search.validation import SubnetValidator
from tests.conftest import make_tiny_llama, make_tiny_tokenizer


class _Latency:
    def predict(self, cfg):
        return {"tpot_ms": 1.0 + cfg.num_layers, "ttft_ms": 10.0, "throughput_tok_s": 100.0}


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """A random tiny model on a 3-choice task: it is at chance, as a 135M model is on MMLU."""
    path = tmp_path_factory.mktemp("task") / "guess.jsonl"
    with open(path, "w") as f:
        for i in range(30):
            f.write(json.dumps({"id": str(i), "question": f"which is {i}?", "choices": ["a", "b", "c"],
                                "answer": i % 3}) + "\n")
    return Supernet(make_tiny_llama(layers=4)), TaskSuite(make_tiny_tokenizer(), str(path), split="all",
                                                          data_dir=path.parent)


def test_validator_flags_a_search_where_no_task_is_above_chance(tiny_setup):
    sn, suite = tiny_setup
    v = SubnetValidator(sn, suite, model_id="tiny", metric="acc_norm", latency_model=_Latency())
    full, sub = v(sn.full_config()), v(SubnetConfig((0, 3), (64, 64)))
    assert full["chance"]["guess"]["above_chance"] is False and full["chance"]["guess"]["chance"] == pytest.approx(1 / 3)
    assert sub["chance_tasks"] == ["guess"] and sub["pick_tasks"] == []
    assert sub["paired"]["at_chance"] is True
    # asked for, the task stays in the pick rule and nothing is flagged
    keep = SubnetValidator(sn, suite, model_id="tiny", metric="acc_norm", latency_model=_Latency(),
                           include_chance_tasks=True)
    r = keep(SubnetConfig((0, 3), (64, 64)))
    assert "at_chance" not in r["paired"] and r["pick_tasks"] == ["guess"]
    assert r["paired"]["points"] == sub["paired"]["points"]


def _rec(key, tpot, paired, report=None, **kw):
    return {"key": key, "tpot_ms": tpot, "accuracy": 0.5, "paired": paired, "report": report,
            "subnet": {"layers": [0, 1], "mlp_widths": [64, 64]}, "description": key, **kw}


def test_pick_rule_skips_records_whose_tasks_are_all_at_chance():
    full = _rec("full", 10.0, {"points": 0.0, "stderr": 0.0, "items": 60}, full_model=True)
    fast = _rec("fast", 5.0, {"points": 0.0, "stderr": 1.0, "items": 60, "at_chance": True},
                {"accuracy": 0.5, "paired": {"points": 0.5, "stderr": 1.0, "items": 60, "at_chance": True}})
    assert pick_fastest_within([full, fast], 1.0)["key"] == "full"
    # the same record with a task above chance (its paired mean over that task) qualifies
    ok = dict(fast, report={"accuracy": 0.5, "paired": {"points": -0.5, "stderr": 0.4, "items": 60}})
    assert pick_fastest_within([full, ok], 1.0)["key"] == "fast"


def _result(include: bool = False, all_at_chance: bool = False) -> SearchResult:
    chance = {"arc_easy": {"task": "arc_easy", "metric": "acc_norm", "score": 0.46, "chance": 0.25, "stderr": 0.02,
                           "items": 600, "points_above": 21.0, "lower_bound_points": 17.7, "above_chance": True},
              "mmlu": {"task": "mmlu", "metric": "acc_norm", "score": 0.262, "chance": 0.25, "stderr": 0.018,
                       "items": 600, "points_above": 1.2, "lower_bound_points": -1.8, "above_chance": False}}
    if all_at_chance:
        chance.pop("arc_easy")
    full = _rec("full", 10.0, {"points": 0.0, "stderr": 0.0, "items": 600}, full_model=True, chance=chance,
                include_chance_tasks=include, chance_tasks=["mmlu"], accuracy_metric="acc_norm")
    sub = _rec("l1-x", 5.0, {"points": -0.4, "stderr": 0.5, "items": 300},
               {"accuracy": 0.49, "paired": {"points": -0.3, "stderr": 0.4, "items": 600}},
               vs_full={"tpot_speedup": 2.0}, chance_tasks=["mmlu"])
    return SearchResult(SearchConfig(objectives=("accuracy", "tpot_ms")), [full, sub], [sub, full], [], full, None)


def test_summary_and_plot_say_which_tasks_are_at_chance(tmp_path):
    md = summary_markdown(_result())
    assert "## Chance level" in md
    assert "mmlu: full model 26.2% acc_norm vs chance 25.0% (+1.2 ± 1.8 points, 600 items): not above chance at 95%" in md
    assert "arc_easy: full model 46.0% acc_norm vs chance 25.0%" in md and "above chance" in md
    assert "Left out of the pick rule's paired mean: mmlu" in md
    assert "on request (--include-chance-tasks): mmlu" in summary_markdown(_result(include=True))
    assert "above chance on no task" in summary_markdown(_result(all_at_chance=True))
    note = chance_plot_note(_result())
    assert note.startswith("Full model not above chance on mmlu (26.2% vs chance 25.0%)") and "left out" in note
    png = plot_pareto(_result(), tmp_path / "pareto.png")
    assert png.stat().st_size > 10_000
    # a search where every task is above chance has no such section or note
    r = _result()
    r.full_model["chance"]["mmlu"]["above_chance"] = True
    assert "## Chance level" not in summary_markdown(r) and chance_plot_note(r) == ""


def test_report_split_is_not_scored_when_no_task_is_above_chance():
    from hwnas.search.picking import evaluate_reports

    full = _rec("full", 10.0, {"points": 0.0, "stderr": 0.0, "items": 60}, full_model=True)
    front = [_rec("a", 5.0, {"points": 0.0, "stderr": 1.0, "items": 60}), _rec("b", 7.0, {"points": 0.0, "stderr": 1.0, "items": 60})]
    scored = []

    def report(cfg):
        scored.append(cfg)
        return {"accuracy": 0.5, "paired": {"points": 0.0, "stderr": 0.0, "items": 60, "at_chance": True}}

    evaluate_reports(front, full, report, known={})
    assert len(scored) == 1  # the full model only
    assert all("not above chance on any task" in r["report_skipped"] for r in front)
    # with a task above chance, the front is scored as before
    scored.clear()
    front = [_rec("a", 5.0, {"points": -0.2, "stderr": 1.0, "items": 60})]
    evaluate_reports(front, dict(full), lambda cfg: (scored.append(cfg), {"accuracy": 0.5, "paired": {
        "points": -0.1, "stderr": 0.5, "items": 60}})[1], known={})
    assert len(scored) == 2 and front[0]["report"]["paired"]["points"] == -0.1


def test_report_split_scores_a_candidate_on_the_pick_rules_tasks_only(tmp_path):
    """On the report split a candidate is not scored on a task where the full model is at chance (it
    supports no claim); the record says which were left unscored, and its paired figures are unchanged."""
    import dataclasses

    for name in ("sure", "guess"):
        with open(tmp_path / f"{name}.jsonl", "w") as f:
            for i in range(30):
                f.write(json.dumps({"id": str(i), "question": f"{name} {i}?", "choices": ["a", "b", "c"],
                                    "answer": i % 3}) + "\n")
    tok = make_tiny_tokenizer()
    tasks = [str(tmp_path / "sure.jsonl"), str(tmp_path / "guess.jsonl")]
    search = TaskSuite(tok, tasks, split="all", data_dir=tmp_path)
    select = TaskSuite(tok, tasks, split="all", data_dir=tmp_path)
    sn = Supernet(make_tiny_llama(layers=4))
    sub = SubnetConfig((0, 3), (64, 64))
    v = SubnetValidator(sn, search, model_id="tiny", metric="acc_norm", latency_model=_Latency())
    report = v.report(select)
    chance = v.chance_tests()   # both at chance on a random model: declare "sure" above chance
    chance["sure"] = dataclasses.replace(chance["sure"], score=0.99, stderr=0.01)
    full = report(sn.full_config())
    assert set(full["tasks"]) == {"sure", "guess"} and full["pick_tasks"] == ["sure"]
    r = report(sub)
    assert set(r["tasks"]) == {"sure"} and r["unscored_tasks"] == ["guess"] and r["chance_tasks"] == ["guess"]
    assert r["pick_accuracy"] == r["accuracy"] == r["tasks"]["sure"]
    assert full["pick_accuracy"] == full["tasks"]["sure"]
    # the same candidate scored on every task pairs the same way on the pick rule's task
    keep = SubnetValidator(sn, search, model_id="tiny", metric="acc_norm", latency_model=_Latency(),
                           include_chance_tasks=True)
    r_all = keep.report(select)(sub)
    assert set(r_all["tasks"]) == {"sure", "guess"}
    assert r["paired_tasks"]["sure"] == r_all["paired_tasks"]["sure"]
    # the search split is scored on every task (its choice KL ranks the search)
    assert set(v(sub)["tasks"]) == {"sure", "guess"}


def test_scored_tasks_leave_out_chance_level_tasks_unless_none_is_above():
    from hwnas.accuracy.chance import ChanceTest, scored_tasks

    sure = ChanceTest("sure", "acc_norm", 0.9, 0.25, 0.02, 300)
    guess = ChanceTest("guess", "acc_norm", 0.26, 0.25, 0.02, 300)
    assert scored_tasks(["sure", "guess"], {"sure": sure, "guess": guess}) == (["sure"], ["guess"])
    assert scored_tasks(["guess"], {"guess": guess}) == (["guess"], [])          # none above: all scored
    assert scored_tasks(["sure"], {"sure": sure}) == (["sure"], [])


def test_report_split_is_scored_in_two_looks_and_stops_a_clear_failure_early(tmp_path, monkeypatch):
    """A candidate's report split is scored every third item first, then the rest: the record equals one
    pass over the whole split. A candidate beyond every pick rule at the first look stops there."""
    import dataclasses

    import hwnas.search.picking as picking
    from hwnas.accuracy.items import merge_every
    from hwnas.accuracy.paired import compare_items, full_model_items

    with open(tmp_path / "sure.jsonl", "w") as f:
        for i in range(31):
            f.write(json.dumps({"id": str(i), "question": f"sure {i}?", "choices": ["a", "b", "c"],
                                "answer": i % 3}) + "\n")
    tok = make_tiny_tokenizer()
    task = [str(tmp_path / "sure.jsonl")]
    select = TaskSuite(tok, task, split="all", data_dir=tmp_path)
    first, rest = select.every(3)
    assert (first.n_items, rest.n_items) == (11, 20)
    ids = [r.id for r in select.data["sure"].requests]
    sn = Supernet(make_tiny_llama(layers=4))
    sub = SubnetConfig((0, 3), (64, 64))
    one = select.evaluate(sn, subnet=sub, keep_items=True)["_items"]
    parts = [p.evaluate(sn, subnet=sub, keep_items=True)["_items"]["sure"] for p in (first, rest)]
    merged = merge_every(parts[0], parts[1], 3)
    assert merged.ids == ids == one["sure"].ids and merged.golds == one["sure"].golds
    v = SubnetValidator(sn, TaskSuite(tok, task, split="all", data_dir=tmp_path), model_id="tiny",
                        metric="acc_norm", latency_model=_Latency())
    report = v.report(select)
    chance = v.chance_tests()
    chance["sure"] = dataclasses.replace(chance["sure"], score=0.99, stderr=0.01)   # above chance
    report(sn.full_config())
    r = report(sub)
    want = compare_items(one, full_model_items(select, sn, "tiny"), "acc_norm", chance_tasks=[])["overall"]
    assert r["items"] == 31 and "stopped_early" not in r
    assert r["paired"]["points"] == pytest.approx(want["points"], abs=1e-9)
    assert r["paired"]["stderr"] == pytest.approx(want["stderr"], abs=1e-9)
    # every pick rule's bound made unreachable: the first look decides, and the record says on what
    monkeypatch.setattr(picking, "PICK_POINTS", (-1e9,))
    early = report(sub)
    assert early["stopped_early"]["items"] == 11 and early["stopped_early"]["of"] == 31
    assert early["paired"]["items"] == 11 and "no pick rule can take it" in early["stopped_early"]["why"]


def _chance(task, score, items):
    from hwnas.accuracy.chance import ChanceTest

    return ChanceTest(task, "acc_norm", score, 0.25, (score * (1 - score) / items) ** 0.5, items).to_dict()


@pytest.mark.parametrize("kept", [False, True])
def test_export_skips_the_tasks_the_searchs_full_model_was_at_chance_on(tmp_path, kept):
    """What `hwnas export --from` leaves out of its holdout: the search's chance-level tasks, unless the
    search kept them in its pick rule; a search without the record skips nothing."""
    from hwnas.search.picking import search_chance_skips

    assert search_chance_skips(tmp_path) == {}
    full = {"key": "l4-full", "full_model": True, "include_chance_tasks": kept,
            "chance": {"arc_easy": _chance("arc_easy", 0.47, 400), "mmlu": _chance("mmlu", 0.26, 400)}}
    (tmp_path / "candidates.jsonl").write_text(json.dumps({"key": "l2-x"}) + "\n" + json.dumps(full) + "\n")
    skips = search_chance_skips(tmp_path)
    if kept:
        assert skips == {}
    else:
        assert list(skips) == ["mmlu"] and "not above chance" in skips["mmlu"] and "400 items" in skips["mmlu"]
    # what a search writes: the full model's record names its chance-level tasks (the tests themselves sit
    # with the report split), and config.json says whether the pick rule kept them
    full = {"key": "l4-full", "full_model": True, "chance_tasks": ["mmlu"]}
    (tmp_path / "candidates.jsonl").write_text(json.dumps(full) + "\n")
    (tmp_path / "config.json").write_text(json.dumps({"identity": {"include_chance_tasks": kept}}))
    skips = search_chance_skips(tmp_path)
    assert skips == {} if kept else (list(skips) == ["mmlu"] and "not above chance" in skips["mmlu"])
