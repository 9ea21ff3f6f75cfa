"""The generation check on bundles of a tiny random LLaMA: export refuses a degenerate subnet (one-line
error, exit 2, nothing left behind), --allow-degenerate ships it with its failing scores, `verify`
fails it; the whole model's bundle passes, its manifest record round-trips, and verify catches a
tampered reference."""
from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from click.testing import CliRunner

from hwnas.accuracy.genquality import DegenerateGenerationError, GenQualityReport, GenThresholds
from hwnas.cli import main
from hwnas.deploy.export import export_bundle
from hwnas.deploy.manifest import MANIFEST_FILE, BundleManifest, _canonical, read_manifest
from hwnas.deploy.quantize import make_recipe
from hwnas.deploy.verify import verify_bundle
from tests.conftest import TINY_TARGET, make_tiny_llama, make_tiny_tokenizer, one_line_error

# A random tied model mostly echoes its last token whatever its layers do; untied, its greedy
# tokens depend on every layer, so dropping half of them changes what it generates.
BROKEN = '{"layers": [0, 3], "mlp_widths": [128, 64]}'


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    # module-scoped fixtures run before conftest's function-scoped cache isolation: isolate here too
    root = tmp_path_factory.mktemp("genq")
    mp = pytest.MonkeyPatch()
    mp.setenv("HWNAS_CACHE_DIR", str(root / "cache"))
    model_dir = root / "tiny-untied"
    make_tiny_llama(tie=False).save_pretrained(model_dir)
    make_tiny_tokenizer().save_pretrained(model_dir)
    target = root / "tiny.toml"
    target.write_text(TINY_TARGET)
    yield root, model_dir, target
    mp.undo()


@pytest.fixture(scope="module")
def whole(env):
    root, model_dir, target = env
    return export_bundle(str(model_dir), root / "whole", recipe=make_recipe("int8"), target=str(target), measure=False)


@pytest.fixture(scope="module")
def forced(env):
    """The degenerate subnet shipped with --allow-degenerate through the CLI (after a refused export)."""
    root, model_dir, target = env
    out = root / "forced"
    args = ["export", "--model", str(model_dir), "--subnet", BROKEN, "--quant", "int8", "--target", str(target),
            "--out", str(out), "--no-accuracy", "--no-measure", "-q"]
    refused = CliRunner().invoke(main, args)
    leftovers = sorted(p.name for p in root.iterdir() if p.name.startswith(".forced"))
    assert not out.exists()
    shipped = CliRunner().invoke(main, args + ["--allow-degenerate"])
    return refused, leftovers, shipped, out


def test_whole_model_bundle_passes(whole):
    m = read_manifest(whole.path)
    g = m.generation
    assert g["passed"] is True and g["forced_ship"] is False and g["report"]["passed"] is True
    assert len(g["prompts"]) >= 16 and g["max_new_tokens"] == 32
    rep = GenQualityReport.from_dict(g["report"])
    # int8 of the same model: the same greedy tokens on (nearly) every prompt
    assert rep.aggregate["forced"] >= 0.9 and rep.aggregate["prefix"] >= 0.7
    assert rep.aggregate["nll_excess"] is not None and abs(rep.aggregate["nll_excess"]) < 0.5
    for p in g["prompts"]:
        assert p["prompt_ids"] and 1 <= len(p["reference"]) <= 32 and p["tokens"]


def test_manifest_round_trip_and_old_manifests(whole):
    m = read_manifest(whole.path)
    d = m.to_dict()
    assert BundleManifest.from_dict(d) == m
    old = {k: v for k, v in d.items() if k not in ("generation", "manifest_sha256")}
    old["manifest_sha256"] = hashlib.sha256(_canonical(old)).hexdigest()
    assert BundleManifest.from_dict(old).generation is None  # manifests from before the check still load


def test_verify_reruns_the_check(whole):
    rep = verify_bundle(whole.path)
    assert rep.ok, rep.problems
    assert any(c.startswith("generation check:") and "pass" in c for c in rep.checks)
    assert rep.generation["aggregate"]["nll_excess"] is None  # no full model given
    assert rep.generation["aggregate"]["forced"] == read_manifest(whole.path).generation["report"]["aggregate"]["forced"]


def test_verify_with_full_model_adds_nll(whole, env):
    from hwnas.model.loading import load_model

    rep = verify_bundle(whole.path, full_model=load_model(str(env[1])).model)
    assert rep.ok, rep.problems
    assert rep.generation["aggregate"]["nll_excess"] == pytest.approx(
        read_manifest(whole.path).generation["report"]["aggregate"]["nll_excess"], abs=1e-4)


def test_verify_fails_on_tampered_reference(whole, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(whole.path, b)
    d = json.loads((b / MANIFEST_FILE).read_text())
    for p in d["generation"]["prompts"]:
        p["reference"] = [(t + 1) % 300 for t in p["reference"]]
    d.pop("manifest_sha256")
    d["manifest_sha256"] = hashlib.sha256(_canonical(d)).hexdigest()  # a consistent hand edit
    (b / MANIFEST_FILE).write_text(json.dumps(d))
    rep = verify_bundle(b)
    assert not rep.ok
    assert len(rep.problems) == 1 and rep.problems[0].startswith("generation check:") and "FAIL" in rep.problems[0]
    assert rep.generation["aggregate"]["forced"] < 0.1


def test_export_refuses_degenerate_subnet(forced):
    refused, leftovers, _, out = forced
    one_line_error(refused, "fails the generation check", "--allow-degenerate")
    assert "subnet l2-" in refused.output
    assert leftovers == []  # the temporary bundle folder is gone too


def test_allow_degenerate_ships_and_verify_fails(forced):
    _, _, shipped, out = forced
    assert shipped.exit_code == 0, shipped.output
    assert "generation check:" in shipped.output and "shipped anyway (--allow-degenerate)" in shipped.output
    g = read_manifest(out).generation
    assert g["passed"] is False and g["forced_ship"] is True and g["report"]["reasons"]
    r = CliRunner().invoke(main, ["verify", str(out)])
    assert r.exit_code == 1, r.output
    assert "FAIL  generation check:" in r.output


def test_library_refusal_and_custom_thresholds(env, tmp_path):
    root, model_dir, target = env
    from hwnas.model.space import parse_subnet_spec

    out = tmp_path / "b"
    with pytest.raises(DegenerateGenerationError, match="fails the generation check"):
        export_bundle(str(model_dir), out, recipe=make_recipe("int8"), subnet=parse_subnet_spec(BROKEN),
                      target=str(target), measure=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    # with every limit off the same subnet ships, scores recorded
    res = export_bundle(str(model_dir), out, recipe=make_recipe("int8"), subnet=parse_subnet_spec(BROKEN),
                        target=str(target), measure=False, generation_thresholds=GenThresholds())
    g = read_manifest(res.path).generation
    assert g["passed"] is True and g["thresholds"] == GenThresholds().to_dict()
    assert g["report"]["aggregate"]["forced"] < 0.7
