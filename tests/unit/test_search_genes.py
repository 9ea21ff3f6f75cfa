"""The search loop over deployment genes (synthetic objective, no model)."""
from __future__ import annotations

import pytest

from hwnas.errors import SearchError
from hwnas.io import read_jsonl
from hwnas.model.deploy_space import DeploySpace
from hwnas.model.space import SearchSpace, SubnetConfig
from hwnas.search.config import SearchConfig
from hwnas.search.loop import run_search
from hwnas.search.picking import pick_from_search
from hwnas.search.synthetic import SyntheticValidator

BASE = SearchSpace(num_layers=10, full_width=256, widths=(64, 128, 192, 256), min_layers=5, always_keep=(0, 9))
SPACE = BASE.with_(deploy=DeploySpace(("int8", "int4_asym_g32", "int4_sym_g32"), ("int8", "int4_sym_g32"),
                                      ("int8", "f16"), (("KV_CACHE_PRECISION", ("u8", "f16")),)))


def cfg(**kw):
    base = dict(evaluations=16, population=4, seed=0, surrogate_generations=12, surrogate_population=16)
    base.update(kw)
    return SearchConfig(**base)


class Recording(SyntheticValidator):
    def __init__(self, space, die_after=None):
        super().__init__(space, seed=1)
        self.keys, self.die_after = [], die_after

    def __call__(self, c):
        if self.die_after is not None and self.calls >= self.die_after:
            raise KeyboardInterrupt("killed")
        self.keys.append(c.key)
        return super().__call__(c)


@pytest.mark.parametrize("strategy", ["linas", "nsga2", "random"])
def test_search_records_carry_genes(tmp_path, strategy):
    v = Recording(SPACE)
    res = run_search(SPACE, v, cfg(strategy=strategy), out=tmp_path / "o")
    recs = read_jsonl(tmp_path / "o" / "candidates.jsonl")
    assert len(recs) == 16 == len({r["key"] for r in recs})
    for r in recs:
        sub = SubnetConfig.from_dict(r["subnet"])
        SPACE.validate(sub)                                  # every record is a subnet of the space, genes included
        assert "weights" in r["description"] and "KV_CACHE_PRECISION=" in r["description"]
    assert res.full_model["key"] == SPACE.largest().key
    fmts = {f for r in recs for pair in r["subnet"]["weight_formats"] for f in pair}
    assert len(fmts) >= 2                                     # the search did vary formats
    summary = (tmp_path / "o" / "summary.md").read_text()
    assert "weights" in summary
    # export's --pick hands the genes on
    pick = pick_from_search(tmp_path / "o", "0")
    assert pick.subnet.weight_formats is not None and pick.subnet.head_format in ("int8", "f16")
    assert pick.subnet.to_dict() == res.pareto[0]["subnet"]


def test_linas_learns_the_format_genes():
    """int4 is faster in the synthetic objective: the surrogate front must find int4-heavy subnets."""
    v = Recording(SPACE)
    res = run_search(SPACE, v, cfg(evaluations=24))
    fastest = min(res.pareto, key=lambda r: r["tpot_ms"])
    bits = [f for pair in fastest["subnet"]["weight_formats"] for f in pair]
    assert sum(f.startswith("int4") for f in bits) > len(bits) / 2


def test_resume_with_the_same_genes_and_refusal_with_others(tmp_path):
    first = Recording(SPACE, die_after=9)
    with pytest.raises(KeyboardInterrupt):
        run_search(SPACE, first, cfg(), out=tmp_path / "o")
    second = Recording(SPACE)
    run_search(SPACE, second, cfg(), out=tmp_path / "o", resume=True)
    assert second.calls == 7
    straight = Recording(SPACE)
    run_search(SPACE, straight, cfg(), out=tmp_path / "s")
    assert [r["key"] for r in read_jsonl(tmp_path / "o" / "candidates.jsonl")] == straight.keys
    other = SPACE.with_(deploy=DeploySpace(("int8",), ("int8",), ("int8",), ()))
    with pytest.raises(SearchError, match="different space"):
        run_search(other, Recording(other), cfg(), out=tmp_path / "o", resume=True)
    with pytest.raises(SearchError, match="different space"):
        run_search(BASE, Recording(BASE), cfg(), out=tmp_path / "o", resume=True)
