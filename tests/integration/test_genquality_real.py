"""The generation check on the real default model: its own int8 bundle passes (and verifies), an int8
bundle of 15 ranked layers x MLP 384 without recovery is refused with nothing left behind."""
from __future__ import annotations

import pytest

from hwnas.accuracy.genquality import DEFAULT_THRESHOLDS, DegenerateGenerationError
from hwnas.deploy.export import export_bundle
from hwnas.deploy.manifest import read_manifest
from hwnas.deploy.quantize import make_recipe
from hwnas.deploy.verify import verify_bundle
from hwnas.model.space import SubnetConfig

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _temp_cache(tmp_path_factory):
    """These tests write the ordered supernet and the full model's reference generations to the cache: the
    session's temporary cache (tests/conftest.py, which links the shared converted default model into it
    read-only), never the user's ~/.cache/hwnas. Checked, so a fixture that re-points it fails here."""
    import os
    from pathlib import Path

    from hwnas.model.loading import cache_dir

    if "HWNAS_TEST_KEEP_CACHE" not in os.environ:
        assert cache_dir().resolve().is_relative_to(Path(tmp_path_factory.getbasetemp()).resolve()), cache_dir()
        assert cache_dir() != Path.home() / ".cache" / "hwnas"


def test_full_model_int8_bundle_passes(tmp_path):
    res = export_bundle("default", tmp_path / "full", recipe=make_recipe("int8"), measure=False)
    g = read_manifest(res.path).generation
    a = g["report"]["aggregate"]
    assert g["passed"] and not g["forced_ship"], g["report"]["reasons"]
    assert a["forced"] >= DEFAULT_THRESHOLDS.min_forced and a["prefix"] >= DEFAULT_THRESHOLDS.min_prefix
    rep = verify_bundle(res.path)
    assert rep.ok, rep.problems
    assert any(c.startswith("generation check:") for c in rep.checks)


def test_int8_15x384_without_recovery_is_refused(tmp_path):
    from hwnas.model.supernet import load_supernet

    loaded, sn = load_supernet("default")
    cfg = SubnetConfig(tuple(sorted(sn.space.layer_order[:15])), (384,) * 15)
    out = tmp_path / "broken"
    with pytest.raises(DegenerateGenerationError) as e:
        export_bundle(loaded, out, recipe=make_recipe("int8"), subnet=cfg, measure=False)
    msg = str(e.value)
    assert "\n" not in msg and f"subnet {cfg.key}" in msg and "--allow-degenerate" in msg
    assert not out.exists() and list(tmp_path.iterdir()) == []
