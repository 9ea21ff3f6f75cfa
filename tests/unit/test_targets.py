import pytest

from hwnas.errors import TargetError
from hwnas.hardware.host import HostInfo
from hwnas.hardware.targets import OPENVINO_PROPERTIES, Target, available_targets, load_target

GOOD = """
schema_version = 1
name = "mine"
expected_cpu = ["Xeon"]
[openvino]
INFERENCE_PRECISION_HINT = "bf16"
INFERENCE_NUM_THREADS = "physical_cores"
NUM_STREAMS = 1
KV_CACHE_PRECISION = "u8"
[workload]
prompt_tokens = 32
new_tokens = 8
batch_sizes = [1, 8]
[measure]
repeats = 5
"""


def host(isa=("avx512f", "avx512_bf16"), cores=4, model="Intel(R) Xeon(R) Platinum 8480+"):
    return HostInfo(cpu_model=model, vendor="GenuineIntel", physical_cores=cores, logical_cpus=2 * cores,
                    isa=tuple(isa), openvino_version="2026.4.1")


def write(tmp_path, text, name="t.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_shipped_targets_load_and_have_the_required_settings():
    assert {"xeon", "core", "edge"} <= set(available_targets())
    xeon = load_target("xeon")
    assert xeon.openvino["INFERENCE_PRECISION_HINT"] == "bf16"
    assert xeon.openvino["INFERENCE_NUM_THREADS"] == "physical_cores"
    assert xeon.openvino["PERFORMANCE_HINT"] == "LATENCY"
    assert xeon.openvino["NUM_STREAMS"] == 1
    assert xeon.openvino["KV_CACHE_PRECISION"] in ("f16", "u8")
    assert xeon.workload.batch_sizes[0] == 1 and len(xeon.workload.batch_sizes) >= 2
    edge = load_target("edge")
    assert edge.openvino["INFERENCE_PRECISION_HINT"] == "f32"
    assert isinstance(edge.openvino["INFERENCE_NUM_THREADS"], int) and edge.openvino["INFERENCE_NUM_THREADS"] <= 4
    assert load_target("core").name == "core"


def test_user_file_round_trips(tmp_path):
    t = load_target(str(write(tmp_path, GOOD)))
    assert t.name == "mine"
    assert t.workload.batch_sizes == (1, 8) and t.workload.prompt_tokens == 32 and t.workload.new_tokens == 8
    assert t.measure.repeats == 5 and t.measure.warmup == 1  # unspecified keys keep their defaults
    again = Target.from_dict(t.to_dict())
    assert again == t


def test_unknown_target_name_lists_available_ones():
    with pytest.raises(TargetError) as e:
        load_target("xeonn")
    msg = str(e.value)
    assert "'xeonn'" in msg and "xeon" in msg and "core" in msg and "edge" in msg


def test_missing_file_is_a_target_error(tmp_path):
    with pytest.raises(TargetError, match="not found"):
        load_target(str(tmp_path / "nope.toml"))


def test_misspelled_property_names_key_and_lists_accepted(tmp_path):
    p = write(tmp_path, GOOD.replace("INFERENCE_PRECISION_HINT", "INFERENCE_PRECISON_HINT"))
    with pytest.raises(TargetError) as e:
        load_target(str(p))
    msg = str(e.value)
    assert "INFERENCE_PRECISON_HINT" in msg
    assert "did you mean 'INFERENCE_PRECISION_HINT'" in msg
    for k in OPENVINO_PROPERTIES:
        assert k in msg


@pytest.mark.parametrize("bad, needle", [
    ('INFERENCE_PRECISION_HINT = "fp8"', "['f32', 'bf16', 'f16']"),
    ('KV_CACHE_PRECISION = "i3"', "u8"),
    ('NUM_STREAMS = 0', "positive integer"),
    ('INFERENCE_NUM_THREADS = "all"', "physical_cores"),
    ('ENABLE_CPU_PINNING = "yes"', "true or false"),
])
def test_bad_property_values_name_value_and_accepted(tmp_path, bad, needle):
    key = bad.split(" = ")[0]
    lines = [ln for ln in GOOD.splitlines() if not ln.startswith(key + " ")]
    text = "\n".join(lines).replace("[openvino]", "[openvino]\n" + bad)
    with pytest.raises(TargetError) as e:
        load_target(str(write(tmp_path, text)))
    assert key in str(e.value) and needle in str(e.value)


@pytest.mark.parametrize("section, line, needle", [
    ("workload", "batch_size = 4", "unknown workload key"),
    ("workload", "batch_sizes = [0]", "batch_sizes"),
    ("workload", "batch_sizes = [1, 1]", "repeats a value"),
    ("workload", "new_tokens = 1", "new_tokens"),
    ("measure", "max_cv = 2", "max_cv"),
    ("measure", "repeat = 3", "did you mean 'repeats'"),
    ("measure", 'estimator = "fastest"', "estimator = 'fastest' is not accepted; accepted: \\['round_min'"),
    ("measure", "interference_tol = -0.1", "interference_tol = -0.1 is not accepted"),
    ("measure", "max_rel_ci = 1.5", "max_rel_ci = 1.5 is not accepted"),
])
def test_bad_workload_and_measure_settings(tmp_path, section, line, needle):
    text = GOOD.replace(f"[{section}]", f"[{section}]\n{line}")
    if line.startswith("batch_sizes"):
        text = text.replace("batch_sizes = [1, 8]\n", "")
    if line.startswith("new_tokens"):
        text = text.replace("new_tokens = 8\n", "")
    with pytest.raises(TargetError, match=needle):
        load_target(str(write(tmp_path, text)))


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(TargetError, match="unknown key 'openvno'"):
        load_target(str(write(tmp_path, GOOD + '\n[openvno]\nX = 1\n')))


def test_invalid_toml_is_a_target_error(tmp_path):
    with pytest.raises(TargetError, match="not valid TOML"):
        load_target(str(write(tmp_path, "[openvino\n")))


def test_resolved_properties_follow_the_host():
    t = load_target("xeon")
    props = t.resolved_properties(host(cores=8))
    assert props["INFERENCE_NUM_THREADS"] == 8
    assert props["INFERENCE_PRECISION_HINT"] == "bf16"
    no_bf16 = t.resolved_properties(host(isa=("avx2",), cores=4, model="Intel(R) Core(TM) i7"))
    assert no_bf16["INFERENCE_PRECISION_HINT"] == "f32"
    assert no_bf16["INFERENCE_NUM_THREADS"] == 4
    assert t.openvino["INFERENCE_PRECISION_HINT"] == "bf16"  # the target itself is unchanged


def test_cpu_match():
    t = load_target("xeon")
    assert t.cpu_matches("Intel(R) Xeon(R) Gold 6430")
    assert not t.cpu_matches("AMD EPYC")
    assert load_target("edge").cpu_matches("anything")  # no expectation


def test_host_fingerprint_is_stable_and_sensitive():
    a, b = host(), host()
    assert a.fingerprint == b.fingerprint and a.fingerprint.startswith("h-")
    assert host(cores=8).fingerprint != a.fingerprint
    assert HostInfo.from_dict(a.to_dict()) == a
    assert a.has_bf16 and a.has_avx512 and not a.has_amx and a.is_xeon


def test_robust_measure_settings_default_and_round_trip(tmp_path):
    from hwnas.hardware.targets import Target

    t = load_target(str(write(tmp_path, GOOD)))
    assert (t.measure.estimator, t.measure.interference_tol, t.measure.max_rel_ci) == ("round_min", 0.25, 0.03)
    t2 = load_target(str(write(tmp_path, GOOD.replace("[measure]", '[measure]\nestimator = "median"\ninterference_tol = 0'))))
    assert t2.measure.estimator == "median" and t2.measure.interference_tol == 0.0
    assert Target.from_dict(t2.to_dict()).measure == t2.measure
