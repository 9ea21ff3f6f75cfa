"""bench/deploy_bench.py's accuracy columns: paired with the NNCF int8 baseline (b), ± stderr, values checked by hand
on synthetic per-item results; its per-item cache, row choice and table."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from hwnas.accuracy.paired import TaskItems
from tests.conftest import bench_module



@pytest.fixture(scope="module")
def db():
    with bench_module("deploy_bench.py", "deploy_bench_under_test") as mod:
        yield mod


def _items(correct_norm, correct_raw=None, prefix="i"):
    """TaskItems whose acc_norm / acc correctness per item is given (gold 0 of two choices); the choices'
    byte lengths differ where acc (raw argmax) and acc_norm (per-byte argmax) must disagree."""
    correct_raw = correct_norm if correct_raw is None else correct_raw
    table = {(1, 1): ([-1.0, -2.0], [1.0, 1.0]), (0, 0): ([-2.0, -1.0], [1.0, 1.0]),
             (1, 0): ([-4.0, -1.5], [4.0, 1.0]), (0, 1): ([-1.5, -4.0], [1.0, 4.0])}
    cases = [table[(int(cn), int(cr))] for cn, cr in zip(correct_norm, correct_raw)]
    return TaskItems([f"{prefix}{k}" for k in range(len(cases))], [0] * len(cases), [np.array(ll) for ll, _ in cases],
                     [np.array(b) for _, b in cases])


def test_synthetic_items_give_the_intended_correctness():
    it = _items([1, 0, 1, 0], [1, 0, 0, 1])
    assert list(it.correct("acc_norm")) == [1, 0, 1, 0]
    assert list(it.correct("acc_norm")) == [1, 0, 1, 0] and list(it.correct("acc")) == [1, 0, 0, 1]


def _rows_and_items():
    base = {"t1": _items([1, 1, 0, 0, 1, 0, 1, 1]), "t2": _items([1, 0, 1, 0, 0, 0])}
    sub = {"t1": _items([1, 0, 0, 0, 1, 0, 1, 0], [1, 1, 0, 0, 1, 0, 1, 0]), "t2": _items([1, 0, 1, 1, 0, 0])}
    rows = [{"name": "full model", "key": "nncf", "kind": "openvino-nncf-int8", "label": "(b) nncf",
             "decode_tok_s": 80.0, "ttft_ms": 50.0, "throughput_tok_s": 200.0, "weight_bytes": 135e6, "total_bytes": 137e6,
             "decode_speedup": 1.0, "decode_speedup_ci95": [1.0, 1.0], "size_ratio": 1.0, "stable": True},
            {"name": "subnet int8", "key": "subnet int8", "kind": "bundle", "label": "(d) subnet int8",
             "decode_tok_s": 120.0, "ttft_ms": 30.0, "throughput_tok_s": 300.0, "weight_bytes": 90e6, "total_bytes": 92e6,
             "decode_speedup": 1.5, "decode_speedup_ci95": [1.4, 1.6], "size_ratio": 1.5, "stable": False,
             "generation_passed": True},
            {"name": "whole model int4", "key": "unscored", "kind": "bundle", "decode_tok_s": None, "ttft_ms": None,
             "throughput_tok_s": None}]
    return rows, {"nncf": base, "subnet int8": sub}, base, sub


def test_own_accuracy_and_paired_difference_match_hand_computation(db):
    rows, items, base, sub = _rows_and_items()
    db.add_accuracy(rows, items, baseline="nncf")
    b, s, none = (r["accuracy"] for r in rows)
    assert none is None
    # own acc_norm of (b): t1 5/8, t2 2/6; stderr per task sd(ddof=1)/sqrt(n); overall mean of tasks, sqrt(sum se^2)/2
    c1, c2 = np.array([1, 1, 0, 0, 1, 0, 1, 1.0]), np.array([1, 0, 1, 0, 0, 0.0])
    se1, se2 = 100 * c1.std(ddof=1) / math.sqrt(8), 100 * c2.std(ddof=1) / math.sqrt(6)
    own = b["pct"]["acc_norm"]
    assert own["tasks"]["t1"]["points"] == pytest.approx(62.5) and own["tasks"]["t1"]["stderr"] == pytest.approx(se1, abs=1e-3)
    assert own["overall"]["points"] == pytest.approx((62.5 + 100 / 3) / 2, abs=1e-3)
    assert own["overall"]["stderr"] == pytest.approx(math.sqrt(se1 ** 2 + se2 ** 2) / 2, abs=1e-3)
    assert own["overall"]["items"] == 14 and b["items"] == 14 and b["vs_b"] is None
    # paired: subnet minus (b) per item, acc_norm: t1 d = [0,-1,0,0,0,0,0,-1], t2 d = [0,0,0,1,0,0]
    d1, d2 = 100 * np.array([0, -1, 0, 0, 0, 0, 0, -1.0]), 100 * np.array([0, 0, 0, 1, 0, 0.0])
    v = s["vs_b"]["acc_norm"]
    assert v["tasks"]["t1"]["points"] == pytest.approx(-25.0) and v["tasks"]["t2"]["points"] == pytest.approx(100 / 6, abs=1e-3)
    pse1, pse2 = d1.std(ddof=1) / math.sqrt(8), d2.std(ddof=1) / math.sqrt(6)
    assert v["tasks"]["t1"]["stderr"] == pytest.approx(pse1, abs=1e-3)
    assert v["overall"]["points"] == pytest.approx((-25.0 + 100 / 6) / 2, abs=1e-3)
    assert v["overall"]["stderr"] == pytest.approx(math.sqrt(pse1 ** 2 + pse2 ** 2) / 2, abs=1e-3)
    lo, hi = v["overall"]["ci95"]
    assert lo == pytest.approx(v["overall"]["points"] - 1.959964 * v["overall"]["stderr"], abs=2e-3)
    assert hi == pytest.approx(v["overall"]["points"] + 1.959964 * v["overall"]["stderr"], abs=2e-3)
    assert v["overall"]["items"] == 14
    # acc differs from acc_norm on t1 (the subnet's raw argmax is right on item 1): d = [0,0,0,0,0,0,0,-1]
    assert s["vs_b"]["acc"]["tasks"]["t1"]["points"] == pytest.approx(-12.5)
    # older field names: plain means (fractions) and differences in points, paired = unpaired on the same items
    assert rows[1]["mean_acc_norm"] == pytest.approx((3 / 8 + 3 / 6) / 2)
    assert rows[1]["accuracy_norm_points_vs_b"] == pytest.approx(100 * (rows[1]["mean_acc_norm"] - rows[0]["mean_acc_norm"]),
                                                                 abs=1e-3)
    assert rows[0]["accuracy_points_vs_b"] == 0.0


def test_different_items_are_refused(db):
    rows, items, base, _ = _rows_and_items()
    items["subnet int8"] = {"t1": _items([1] * 8, prefix="other"), "t2": base["t2"]}
    with pytest.raises(ValueError, match="different items"):
        db.add_accuracy(rows, items, baseline="nncf")


def _result(rows):
    return {"target": "xeon", "host": {"cpu_model": "CPU", "physical_cores": 2}, "properties": {"X": 1},
            "subnet": {"key": "l2-abc", "layers": [0, 1], "mlp_widths": [64, 128], "how": "--subnet"}, "recovery": True,
            "heal": None, "repeats": 3, "limit": 8, "tasks": ["t1", "t2"], "items": {"t1": 8, "t2": 6}, "items_total": 14,
            "rows": rows}


def test_markdown_table_has_the_accuracy_columns_and_the_note(db):
    rows, items, _, _ = _rows_and_items()
    db.add_accuracy(rows, items, baseline="nncf")
    md = db.markdown(_result(rows))
    lines = md.splitlines()
    head = next(line for line in lines if line.startswith("| model | decode"))
    assert "| acc_norm ± stderr | Δ acc_norm vs (b) ± stderr [95% CI] (items) |" in head
    assert "| acc ± stderr | Δ acc vs (b) ± stderr [95% CI] (items) |" in head
    ncols = head.count("|")
    start = lines.index(head)
    table = lines[start + 2:start + 5]
    assert len(table) == 3 and all(line.count("|") == ncols for line in table) and lines[start + 5] == ""
    v = rows[1]["accuracy"]["vs_b"]["acc_norm"]["overall"]
    lo, hi = v["ci95"]
    sub_line = next(line for line in lines if line.startswith("| (d) subnet int8 | 120.0"))
    assert f"| {v['points']:+.2f} ± {v['stderr']:.2f} [{lo:+.2f}, {hi:+.2f}] (14) |" in sub_line
    own = rows[1]["accuracy"]["pct"]["acc_norm"]["overall"]
    assert f"| {own['points']:.1f} ± {own['stderr']:.1f} |" in sub_line
    assert "| 1.50x [1.40, 1.60] ! |" in sub_line and sub_line.endswith("| pass |")
    base_line = next(line for line in lines if line.startswith("| (b) nncf | 80.0"))
    assert "| 0 (baseline) |" in base_line
    unscored = next(line for line in lines if line.startswith("| whole model int4 |"))
    assert unscored.count("| - |") >= 5
    note = next(line for line in lines if line.startswith("Accuracy: report split"))
    assert "the same 14 items in every row (t1 8, t2 6" in note and "paired" in note and "95% interval" in note
    assert "recovery on" in md
    per_task = next(line for line in lines if line.startswith("| (d) subnet int8 | ") and "120.0" not in line)
    t1 = rows[1]["accuracy"]["vs_b"]["acc_norm"]["tasks"]["t1"]
    se = rows[1]['accuracy']['pct']['acc_norm']['tasks']['t1']['stderr']
    assert f"| 37.5 ± {se:.1f} (Δ {t1['points']:+.2f} ± {t1['stderr']:.2f}, 8) |" in per_task


def test_readme_claims_are_cells_of_the_table(db):
    """tests/unit/test_readme_results.py checks README against deploy_bench.json in the table's own cell format,
    so README can quote the cells of deploy_bench.md as written."""
    from tests.unit.test_readme_results import _deploy_paired_claims

    rows, items, _, _ = _rows_and_items()
    db.add_accuracy(rows, items, baseline="nncf")
    res = _result(rows)
    md = " ".join(db.markdown(res).split())
    claims = _deploy_paired_claims(res)
    assert claims[0] == "14 report items" and len(claims) == 1 + 2 + 1  # own cells of (b) and (d), Δ of (d)
    for c in claims[1:]:
        assert c in md, c


def _suite(ids_by_task):
    from hwnas.accuracy.evaluate import TaskSuite

    data = {t: SimpleNamespace(requests=[SimpleNamespace(id=i, gold=0, choice_bytes=[1, 1]) for i in ids])
            for t, ids in ids_by_task.items()}
    suite = SimpleNamespace(data=data)
    suite._task_items = lambda lls: TaskSuite._task_items(suite, lls)
    return suite


def test_item_cache_round_trip_merge_and_miss(db, tmp_path):
    path = tmp_path / "accuracy_cache.json"
    path.write_text(json.dumps({"old-format|key|100": {"tasks": {}, "mean": 0.4}}))  # an older run's entry stays
    small = _suite({"t1": ["i0", "i1"]})
    items = {"t1": _items([1, 0])}
    cache = db.ItemCache(path)
    assert cache.get("k", small) is None
    cache.put("k", items)
    back = db.ItemCache(path).get("k", small)
    assert back["t1"].ids == ["i0", "i1"] and [list(x) for x in back["t1"].lls] == [list(x) for x in items["t1"].lls]
    assert list(back["t1"].correct("acc_norm")) == [1, 0]
    big = _suite({"t1": ["i0", "i1", "i2"]})
    assert db.ItemCache(path).get("k", big) is None  # an item missing: rescore
    db.ItemCache(path).put("k", {"t1": _items([1, 1, 0])})
    stored = json.loads(path.read_text())
    assert set(stored[f"{db.CACHE_VERSION}|k"]["t1"]) == {"i0", "i1", "i2"} and "old-format|key|100" in stored
    assert db.ItemCache(path, ignore=True).get("k", big) is None  # --rescore
    assert db.ItemCache(path).get("other-weights", big) is None


def _args(**kw):
    base = dict(whole=False, no_subnet=False, recovery=True, heal=None, subnet=None, search_dir=None, pick="fastest-within 1.0",
                model="default")
    return SimpleNamespace(**{**base, **kw})


def test_rows_to_build(db, tmp_path):
    from hwnas.model.space import SubnetConfig

    sub = SubnetConfig((0, 2), (128, 64))
    v = db._variants(_args(), ["int8", "int4"], sub)
    assert [(x.variant, x.quant, x.recovery) for x in v] == [("subnet", "int8", True), ("subnet", "int4", True)]
    v = db._variants(_args(whole=True, recovery=False), ["int8"], sub)
    assert [(x.variant, x.subnet, x.recovery) for x in v] == [("whole", None, False), ("subnet", sub, False)]
    assert [x.name for x in v] == ["whole model int8", "subnet int8"] and v[1].folder == "subnet-int8"
    assert [x.variant for x in db._variants(_args(), ["int8"], None)] == ["whole"]  # --subnet full / a full-model pick
    assert db._variants(_args(no_subnet=True), ["int8"], None) == []
    heal = tmp_path / "heal"
    heal.mkdir()
    (heal / "hwnas_heal.json").write_text(json.dumps({"status": "done", "subnet": sub.to_dict(), "steps_done": 40}))
    v = db._variants(_args(no_subnet=True, heal=str(heal)), ["int8"], None)
    assert [(x.variant, x.subnet, x.heal, x.name) for x in v] == [("healed", sub, str(heal), "healed subnet int8")]
    assert db._label(v[0]).startswith("(e) healed subnet l2-")
    assert db._label(db.Variant("subnet", "int8", sub, recovery=True)).endswith("hwnas INC int8, recovery on")
    # a reused bundle must be the same subnet, recipe, recovery and heal
    man = SimpleNamespace(quantization={"name": "int8"}, subnet={"key": sub.key}, supernet={"recovery": {"method": "x"}})
    assert db._reusable(man, db.Variant("subnet", "int8", sub, recovery=True))
    assert not db._reusable(man, db.Variant("subnet", "int8", sub, recovery=False))
    assert not db._reusable(man, db.Variant("subnet", "int4", sub, recovery=True))
    assert not db._reusable(man, db.Variant("whole", "int8"))
    healed = SimpleNamespace(quantization={"name": "int8"}, subnet={"key": sub.key},
                             supernet={"recovery": None, "heal": {"folder": str(heal), "steps": 40}})
    assert db._reusable(healed, v[0]) and not db._reusable(healed, db.Variant("subnet", "int8", sub, recovery=True))
    (heal / "hwnas_heal.json").write_text(json.dumps({"status": "done", "subnet": sub.to_dict(), "steps_done": 80}))
    assert not db._reusable(healed, v[0])  # the heal went on since


def test_subnet_full_and_a_full_model_pick_mean_the_whole_model(db):
    loaded = SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(num_hidden_layers=2, intermediate_size=128)))
    assert db._resolve_subnet(_args(subnet="full"), loaded)[0] is None
    sub, how = db._resolve_subnet(_args(subnet='{"layers": [0, 1], "mlp_widths": [128, 128]}'), loaded)
    assert sub is None and how.endswith("the whole model")
    sub, _ = db._resolve_subnet(_args(subnet='{"layers": [0, 1], "mlp_widths": [128, 64]}'), loaded)
    assert sub.mlp_widths == (128, 64)
