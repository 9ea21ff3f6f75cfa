"""`hwnas export` as a user runs it, in a real process: the default path (holdout accuracy paired with
the full model, generation check, speed) prints its comparison, and stderr stays free of third-party
warnings unless -v asks for them."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_TARGET

ROOT = Path(__file__).resolve().parents[2]

# What Neural Compressor, NNCF, transformers, torch and torchao print when nobody quietens them.
THIRD_PARTY = re.compile(r"\[WARNING\]|^WARNING:nncf|^INFO:nncf|torchao|_pytree|Numba is not installed|"
                         r"has already been set|loss_type=None|cache_position|FutureWarning|DeprecationWarning|"
                         r"UserWarning", re.M)

pytestmark = pytest.mark.precision_free  # OpenVINO paths or explicit --precision: one pass of make test


def write_tasks(folder: Path, n: int = 60) -> str:
    """Two local multiple-choice task files (enough items that their holdout splits are not empty), as --tasks."""
    paths = []
    for name, offset in (("qa_a", 1), ("qa_b", 2)):
        paths.append(folder / f"{name}.jsonl")
        with open(paths[-1], "w") as f:
            for i in range(n):
                f.write(json.dumps({"id": str(i), "question": f"what is {i} plus {offset}?",
                                    "choices": [str(i + offset), str(i + 7), "blue"], "answer": i % 3}) + "\n")
    return ",".join(map(str, paths))


def hwnas(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="default")
    for var in ("LOGLEVEL", "TRANSFORMERS_VERBOSITY"):  # the process decides these itself
        env.pop(var, None)
    return subprocess.run([sys.executable, "-m", "hwnas", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture
def setup(tmp_path, tiny_model_dir):
    target = tmp_path / "tiny.toml"
    target.write_text(TINY_TARGET)
    return tiny_model_dir, target, write_tasks(tmp_path)


def test_default_export_prints_the_paired_holdout_comparison_and_stays_quiet(tmp_path, setup):
    """No --no-accuracy: the bundle's IR is scored on the holdout split paired with the full model
    (`_paired_ir_accuracy`), and what export prints is what the manifest holds."""
    model, target, tasks = setup
    out = tmp_path / "bundle"
    r = hwnas("export", "--model", str(model), "--target", str(target), "--tasks", tasks, "--data-dir", str(tmp_path),
              "--out", str(out), "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not THIRD_PARTY.search(r.stderr), r.stderr
    m = json.loads((out / "hwnas_manifest.json").read_text())
    acc = m["accuracy"]
    assert acc["split"] == "holdout" and acc["scored_with"] == "openvino"
    o = acc["vs_full"]["acc_norm"]["overall"]
    per_task = acc["vs_full"]["acc_norm"]["tasks"]
    assert set(per_task) == set(acc["tasks"]) == {"qa_a", "qa_b"}
    assert o["items"] == sum(acc["tasks"][n]["n"] for n in per_task) and min(t["items"] for t in per_task.values()) > 0
    for name, t in per_task.items():
        assert t["subnet"] == pytest.approx(100 * acc["tasks"][name]["acc_norm"], abs=1e-3)
    line = next(x for x in r.stdout.splitlines() if "acc_norm on the holdout split" in x)
    assert f"({o['items']} items no pick rule saw, mean of 2 tasks)" in line
    bundle, full = (sum(t[k] for t in per_task.values()) / 2 for k in ("subnet", "full"))
    assert f"bundle {bundle:.1f}%, full model {full:.1f}%" in line
    assert f"paired difference {o['points']:+.2f} ± {o['stderr']:.2f} points" in line
    assert acc["verdict_1pt"] in r.stdout
    assert m["generation"]["report"] and "generation check:" in r.stdout and "(pass)" in r.stdout
    assert m["measurement"]["tpot_ms"] > 0 and f"TPOT {m['measurement']['tpot_ms']:.2f} ms" in r.stdout
    steps = m["build_seconds"]   # where the export's time went, step by step
    assert list(steps) == ["load", "full_model_holdout", "quantize", "ir", "generation_check", "measure", "accuracy"]
    assert all(v >= 0 for v in steps.values())


@pytest.mark.parametrize("name", ["neural_compressor", "nncf"])
def test_verbose_shows_the_third_party_warnings(name, monkeypatch):
    """In-process, as these libraries set themselves up on import: their own handler, no propagation, their own
    level (the export above shows the quiet side end to end). -v lets their warnings through, no -v does not."""
    import logging

    from hwnas.cli import setup_output

    for var in ("LOGLEVEL", "TRANSFORMERS_VERBOSITY"):
        monkeypatch.delenv(var, raising=False)
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    lg = logging.getLogger(name)
    handler = Collect()
    lg.addHandler(handler)
    monkeypatch.setattr(lg, "propagate", False)
    monkeypatch.setattr(lg, "filters", list(lg.filters))
    try:
        setup_output(0)
        lg.setLevel(logging.INFO)  # what INC and NNCF do when first imported, after the CLI set them up
        lg.warning("The configuration for .*lm_head has already been set, update it.")
        lg.error("a real failure")
        assert seen == ["a real failure"]
        if name == "nncf":
            lg.info_once("NNCF's logger class method on a logger made before NNCF")  # must exist
        setup_output(1)
        lg.setLevel(logging.INFO)
        lg.warning("Numba is not installed, please install it with `pip install numba`.")
        assert seen[-1].startswith("Numba is not installed")
    finally:
        lg.removeHandler(handler)
        lg.setLevel(logging.NOTSET)
