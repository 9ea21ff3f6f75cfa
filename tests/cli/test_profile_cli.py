"""`hwnas profile` through click's CliRunner: bad input leaves nothing behind; a tiny model end to end."""
import dataclasses
import json

import pytest
from click.testing import CliRunner

from hwnas.cli import main
from hwnas.errors import MeasurementError
from hwnas.hardware.profile import load_profile

TINY_TARGET = """
name = "tiny"
expected_cpu = ["NoSuchCPU 9000"]
[openvino]
INFERENCE_PRECISION_HINT = "f32"
INFERENCE_NUM_THREADS = "physical_cores"
NUM_STREAMS = 1
[workload]
prompt_tokens = 8
new_tokens = 4
batch_sizes = [1, 2]
[measure]
warmup = 1
repeats = 2
max_remeasure = 0
"""


def run(*args):
    return CliRunner().invoke(main, ["profile", *args], catch_exceptions=False)


def test_unknown_target_lists_available_targets(tmp_path):
    out = tmp_path / "p"
    r = run("--target", "xenon", "--out", str(out))
    assert r.exit_code == 2
    assert "unknown target 'xenon'" in r.output and "xeon" in r.output and "edge" in r.output
    assert not out.exists()


def test_misspelled_property_is_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY_TARGET.replace("NUM_STREAMS", "NUM_STREAM"))
    out = tmp_path / "p"
    r = run("--target", str(bad), "--out", str(out))
    assert r.exit_code == 2
    assert "'NUM_STREAM'" in r.output and "did you mean 'NUM_STREAMS'" in r.output and "accepted:" in r.output
    assert not out.exists()


@pytest.mark.parametrize("args, needle", [
    (["--samples", "0"], "--samples must be >= 1"),
    (["--probe-layers", "1"], "--probe-layers must be 0"),
])
def test_bad_counts_are_errors_and_write_nothing(tmp_path, args, needle):
    out = tmp_path / "p"
    r = run("--target", "xeon", "--out", str(out), *args)
    assert r.exit_code == 2 and needle in r.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_non_empty_out_needs_force(tmp_path):
    out = tmp_path / "p"
    out.mkdir()
    (out / "x").write_text("keep")
    r = run("--target", "xeon", "--out", str(out))
    assert r.exit_code == 2 and "not empty" in r.output
    assert [p.name for p in out.iterdir()] == ["x"]


def test_profile_tiny_model_end_to_end(tmp_path, tiny_model_dir):
    target = tmp_path / "tiny.toml"
    target.write_text(TINY_TARGET)
    out = tmp_path / "prof"
    r = run("--target", str(target), "--model", str(tiny_model_dir), "--samples", "4", "--out", str(out),
            "--seed", "3", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "Measuring on:" in r.output and "NoSuchCPU 9000" in r.output  # says plainly which CPU was measured
    assert "leave-one-out MAPE" in r.output and "Kendall tau" in r.output
    d = json.loads((out / "profile.json").read_text())
    assert d["target"]["name"] == "tiny" and d["seed"] == 3 and d["samples"] == 4
    assert d["host_matches_target"] is False and d["host_note"]
    ms = d["measurements"]
    assert len(ms) == 5  # full model + smallest + 3 random
    assert ms[0]["mlp_widths"] == [128] * 4  # the full model first
    fps = {m["host_fingerprint"] for m in ms}
    assert fps == {d["host"]["fingerprint"]}
    for m in ms:
        assert m["ttft_ms"] > 0 and m["tpot_ms"] > 0 and m["throughput_tok_s"] > 0
        assert [b["batch_size"] for b in m["batches"]] == [1, 2]
    lm = d["latency_model"]
    assert lm["error"]["n_subnets"] == 5 and lm["error"]["tpot_ms_mape_pct"] >= 0
    # the error is split into the model's and the measurements' own (95% intervals over rounds)
    split = lm["error"]["noise_split"]["tpot_ms@1"]
    assert 0 <= split["within_noise_share"] <= 1 and split["model_error_pct"] <= split["rms_error_pct"] + 1e-9
    assert lm["error"]["tpot_ms_measurement_noise_pct"] == split["measurement_noise_pct"] >= 0
    assert "of which the model" in r.output and "interleaved rounds" in r.output
    assert d["measurement_session"]["rounds"] >= 2 and "loadavg_before" in d["measurement_session"]["load"]
    for m in ms:
        lo, hi = m["batches"][0]["tpot_ci_ms"]
        assert lo <= m["tpot_ms"] <= hi and m["batches"][0]["estimator"] == "round_min"
    assert set(lm["per_layer_ms"]["tpot_ms@1"]) == {"64", "128"}
    assert "kendall_tau_params_vs_tpot_ms" in d["ranking"]
    prof = load_profile(out)
    p = prof.latency_model.predict({"mlp_widths": [64, 128, 64]})
    assert set(p) == {"ttft_ms", "tpot_ms", "throughput_tok_s"} and p["tpot_ms"] > 0
    prof.check_host(d["host"]["fingerprint"])
    # profiles from different hosts are never mixed
    with pytest.raises(MeasurementError, match="this host is h-other"):
        load_profile(out, expect_host="h-other")
    with pytest.raises(MeasurementError, match="different hosts"):
        prof.add_measurements([dataclasses.replace(prof.measurements[1], host_fingerprint="h-other")])
    assert len(prof.add_measurements([prof.measurements[1]]).measurements) == 6
    d["measurements"][2]["host_fingerprint"] = "h-other"
    (tmp_path / "mixed.json").write_text(json.dumps(d))
    with pytest.raises(MeasurementError, match="mixes measurements from hosts"):
        load_profile(tmp_path / "mixed.json")
    # a second run reuses every exported IR; --holdout measures one more subnet, never fit on
    out2 = tmp_path / "prof2"
    r2 = run("--target", str(target), "--model", str(tiny_model_dir), "--samples", "4", "--out", str(out2),
             "--seed", "3", "--no-progress", "--holdout", "1")
    assert r2.exit_code == 0, r2.output
    d2 = json.loads((out2 / "profile.json").read_text())
    assert d2["timings_s"]["irs_exported"] == 1 and d2["timings_s"]["irs_from_cache"] == 5
    assert len(d2["holdout"]) == 1 and len(d2["measurements"]) == 5
    assert d2["holdout"][0]["subnet_key"] not in {m["subnet_key"] for m in d2["measurements"]}
    ho = d2["latency_model"]["error"]["holdout"]
    assert ho["n_subnets"] == 1 and ho["subnets"] == [d2["holdout"][0]["subnet_key"]]
    pred = load_profile(out2).latency_model.predict(d2["holdout"][0]["mlp_widths"])["tpot_ms"]
    assert ho["tpot_ms_predicted"][0] == pytest.approx(pred, rel=1e-3)
    assert ho["tpot_ms_mape_pct"] == pytest.approx(100 * abs(pred / d2["holdout"][0]["tpot_ms"] - 1), rel=1e-2)
    assert "held-out subnets (1, never fit on)" in r2.output


def test_profile_with_too_few_samples_says_the_error_is_not_estimated(tmp_path, tiny_model_dir):
    """--samples 2: three subnets, so no leave-one-out refit has the 3 distinct models a fit needs."""
    target = tmp_path / "tiny.toml"
    target.write_text(TINY_TARGET)
    out = tmp_path / "prof"
    r = run("--target", str(target), "--model", str(tiny_model_dir), "--samples", "2", "--out", str(out),
            "--no-progress")
    assert r.exit_code == 0, r.output
    d = json.loads((out / "profile.json").read_text())
    err = d["latency_model"]["error"]
    assert len(d["measurements"]) == 3 and "ttft_ms_mape_pct" not in err and "too few" in err["note"]
    text = " ".join(r.output.split())      # rich may wrap the line
    assert "its error could not be estimated with 3 measured subnets (too few measured subnets" in text
    assert "leave-one-out MAPE" not in text and f"wrote {out}/profile.json" in text
    assert load_profile(out).latency_model.predict({"mlp_widths": [64, 128]})["tpot_ms"] > 0
