"""The loop's `submit` path (used by a Ray cluster, hwnas.search.cluster) records exactly what the one-by-one
path records, whatever order results arrive in: same candidates, indices, front; each record written once."""
from __future__ import annotations

import json

import pytest

from hwnas.io import read_jsonl
from hwnas.model.space import SearchSpace
from hwnas.search.config import SearchConfig
from hwnas.search.loop import run_search
from hwnas.search.synthetic import SyntheticValidator

SPACE = SearchSpace(num_layers=10, full_width=256, widths=(64, 128, 192, 256), min_layers=5, always_keep=(0, 9))
TIMING = ("validate_s",)


class _Batch:
    def __init__(self, results, order):
        self.results, self.order = results, list(order)

    def next_done(self):
        i = self.order.pop(0)
        return i, self.results[i], 0.5


class ShuffledValidator:
    """Validates a submitted batch at once and hands results back last-first (or in a seeded shuffle)."""

    def __init__(self, seed: int | None = None):
        self.v = SyntheticValidator(SPACE)
        self.batches: list[int] = []
        self.seed = seed

    def __call__(self, cfg):
        raise AssertionError("a batch validator is only called through submit")

    def submit(self, cfgs):
        import random

        self.batches.append(len(cfgs))
        order = list(range(len(cfgs)))[::-1]
        if self.seed is not None:
            random.Random(self.seed + len(self.batches)).shuffle(order)
        return _Batch([self.v(c) for c in cfgs], order)


def _strip(recs):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in recs]


@pytest.mark.parametrize("strategy", ["linas", "nsga2", "random"])
def test_out_of_order_arrival_records_what_a_local_run_records(tmp_path, strategy):
    cfg = SearchConfig(evaluations=14, population=4, seed=3, strategy=strategy)
    local = run_search(SPACE, SyntheticValidator(SPACE), cfg, out=tmp_path / "local")
    sv = ShuffledValidator(seed=7)
    batched = run_search(SPACE, sv, cfg, out=tmp_path / "batched")
    assert sum(sv.batches) == 14 and sv.batches[0] == 4
    assert _strip(batched.records) == _strip(local.records)
    assert [r["key"] for r in batched.pareto] == [r["key"] for r in local.pareto]
    # the file holds every record once, in arrival order, with the proposal-order index
    on_disk = read_jsonl(tmp_path / "batched" / "candidates.jsonl")
    assert len(on_disk) == 14 and len({r["key"] for r in on_disk}) == 14
    assert sorted(r["index"] for r in on_disk) == list(range(14))
    assert [r["index"] for r in on_disk] != list(range(14))   # arrival order is not the proposal order
    front = [_strip([r])[0] for r in json.loads((tmp_path / "batched" / "pareto.json").read_text())]
    assert front == [_strip([r])[0] for r in json.loads((tmp_path / "local" / "pareto.json").read_text())]


def test_interrupted_batch_resumes_without_duplicates(tmp_path):
    """A batch cut off after some arrivals (a gap in the indices) resumes to the straight run's records."""
    cfg = SearchConfig(evaluations=10, population=4, seed=1)
    straight = run_search(SPACE, SyntheticValidator(SPACE), cfg, out=tmp_path / "straight")
    out = tmp_path / "cut"
    recs = read_jsonl(tmp_path / "straight" / "candidates.jsonl")
    # the first batch's records 0, 1 and 3 arrived, record 2 did not (the driver was stopped)
    run_search(SPACE, SyntheticValidator(SPACE), SearchConfig(evaluations=4, population=4, seed=1), out=out)
    kept = [r for r in read_jsonl(out / "candidates.jsonl") if r["index"] != 2]
    (out / "candidates.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    (out / "history.jsonl").write_text("")
    sv = ShuffledValidator()
    resumed = run_search(SPACE, sv, cfg, out=out, resume=True)
    assert sv.batches[0] == 1                      # only the missing one is validated again
    assert _strip(resumed.records) == _strip(straight.records)
    assert sorted(r["index"] for r in read_jsonl(out / "candidates.jsonl")) == list(range(10))
    assert [r["key"] for r in resumed.records] == [r["key"] for r in recs]
