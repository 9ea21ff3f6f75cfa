"""Paired comparison statistics: values checked against hand computations."""
from __future__ import annotations

import math

import numpy as np
import pytest

from hwnas.accuracy.paired import PairedDiff, TaskItems, choice_kl, combine, compare_items, paired_diff


def test_paired_diff_values():
    sub = [1, 0, 1, 1, 0, 0, 1, 1]
    full = [1, 1, 1, 0, 0, 1, 1, 1]
    d = paired_diff(sub, full)
    diffs = 100 * (np.array(sub) - np.array(full))
    assert d.points == pytest.approx(diffs.mean()) == pytest.approx(-12.5)
    assert d.stderr == pytest.approx(diffs.std(ddof=1) / math.sqrt(8))
    lo, hi = d.ci95
    assert lo == pytest.approx(d.points - 1.959964 * d.stderr) and hi == pytest.approx(d.points + 1.959964 * d.stderr)
    assert d.items == 8 and d.drop == pytest.approx(12.5)


def test_pairing_removes_shared_noise():
    """Identical answers on most items: the paired stderr is far below the unpaired one."""
    rng = np.random.default_rng(0)
    full = rng.integers(0, 2, 2000).astype(float)
    sub = full.copy()
    flip = rng.choice(2000, 60, replace=False)
    sub[flip] = 1 - sub[flip]
    d = paired_diff(sub, full)
    unpaired = 100 * math.sqrt(sub.var(ddof=1) / 2000 + full.var(ddof=1) / 2000)
    assert d.stderr < unpaired / 3


def test_verdicts():
    assert PairedDiff(-0.2, 0.3, 2000).verdict(1.0).startswith("within 1 point(s): shown")
    assert PairedDiff(-0.8, 0.5, 2000).verdict(1.0).startswith("within 1 point(s): likely but not shown")
    v = PairedDiff(-1.8, 0.9, 2000).verdict(1.0)
    assert v.startswith("within 1 point(s): not shown") and "drop 1.80 ± 0.90" in v and "2000 items" in v
    assert PairedDiff.from_dict(PairedDiff(-1.8, 0.9, 2000).to_dict()) == PairedDiff(-1.8, 0.9, 2000)


def test_combine_is_the_mean_over_tasks():
    c = combine([PairedDiff(-1.0, 0.4, 100), PairedDiff(-3.0, 0.3, 300)])
    assert c.points == pytest.approx(-2.0) and c.stderr == pytest.approx(0.5 / 2) and c.items == 400


def _items(lls, golds):
    return TaskItems([str(i) for i in range(len(lls))], golds, [np.array(x, float) for x in lls],
                     [np.ones(len(x)) for x in lls])


def test_choice_kl_and_compare_items():
    full = _items([[0.0, -1.0], [-2.0, 0.0], [0.0, 0.0]], [0, 1, 0])
    same = _items([[0.0, -1.0], [-2.0, 0.0], [0.0, 0.0]], [0, 1, 0])
    worse = _items([[-1.0, 0.0], [-2.0, 0.0], [0.0, -0.5]], [0, 1, 0])
    assert np.allclose(choice_kl(same, full), 0)
    kl = choice_kl(worse, full)
    p = np.exp([0.0, -1.0]) / np.exp([0.0, -1.0]).sum()
    q = np.exp([-1.0, 0.0]) / np.exp([-1.0, 0.0]).sum()
    assert kl[0] == pytest.approx(float(np.sum(p * np.log(p / q))))
    assert kl[1] == pytest.approx(0)
    r = compare_items({"t": worse}, {"t": full}, "acc")
    # item 0 flips to wrong, item 2 (a tie resolved to choice 0 by argmax) stays right
    assert r["tasks"]["t"]["points"] == pytest.approx(-100 / 3, abs=1e-3) and r["overall"]["items"] == 3
    with pytest.raises(ValueError, match="different items"):
        compare_items({"t": _items([[0.0, 1.0]], [0])}, {"t": full})
