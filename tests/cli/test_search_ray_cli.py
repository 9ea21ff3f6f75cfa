"""`hwnas search --ray` on a real two-node Ray cluster started on this machine (ray.cluster_utils): one node
for accuracy, one advertising the tiny target. Same answers as a local run, a killed actor loses nothing,
and a missing target node, a wrong address or a stopped cluster give a one-line error (exit 2)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner

from hwnas.cli import main
from hwnas.io import read_jsonl
from tests.conftest import TINY_TARGET, one_line_error

ray = pytest.importorskip("ray")
MB = 1024 ** 2
# what differs between two runs of the same search: timings, and where a cluster run made each figure
MEASURED = {"tpot_ms", "ttft_ms", "throughput_tok_s", "latency_stable", "tpot_cv", "export_s", "measure_s", "ir_cached",
            "validate_s", "eval_s", "scored_on", "measured_on", "cluster_s"}


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 100 * MB,
                                                      "include_dashboard": False})
    c.add_node(num_cpus=1, resources={"hwnas-target-tiny": 1}, object_store_memory=100 * MB)
    c.wait_for_nodes()
    yield c
    if ray.is_initialized():
        ray.shutdown()
    c.shutdown()


@pytest.fixture
def setup(tmp_path, tiny_model_dir):
    task = tmp_path / "tinyqa.jsonl"
    with open(task, "w") as f:
        for i in range(24):
            f.write(json.dumps({"id": str(i), "question": f"what is {i} plus one?",
                                "choices": [str(i + 1), str(i + 7), "blue"], "answer": 0}) + "\n")
    target = tmp_path / "tiny.toml"
    target.write_text(TINY_TARGET)
    return ["search", "--target", str(target), "--model", str(tiny_model_dir), "--tasks", str(task),
            "--data-dir", str(tmp_path), "--limit", "6", "--report-limit", "3", "--seed", "5", "--no-progress"]


def _accuracy_view(recs):
    return sorted(({k: v for k, v in r.items() if k not in MEASURED} for r in recs), key=lambda r: r["index"])


def test_cluster_search_matches_local_run(tmp_path, cluster, setup):
    """Objectives accuracy and parameter count (both exact), so the two runs must propose the same subnets;
    latency is still measured, on the target node only, and recorded with its host fingerprint."""
    args = setup + ["--objectives", "accuracy,n_params", "--evaluations", "4", "--population", "2"]
    r = CliRunner().invoke(main, args + ["--out", str(tmp_path / "local")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, args + ["--out", str(tmp_path / "ray"), "--ray", cluster.address])
    assert r.exit_code == 0, r.output
    assert "latency on 1 tiny node(s)" in r.output
    local, remote = read_jsonl(tmp_path / "local" / "candidates.jsonl"), read_jsonl(tmp_path / "ray" / "candidates.jsonl")
    assert len(remote) == 4 and _accuracy_view(remote) == _accuracy_view(local)
    for name in ("pareto.json",):
        a = json.loads((tmp_path / "local" / name).read_text())
        b = json.loads((tmp_path / "ray" / name).read_text())
        assert [x["key"] for x in a] == [x["key"] for x in b]
        assert [x.get("report", {}).get("accuracy") for x in a] == [x.get("report", {}).get("accuracy") for x in b]
    cfg = json.loads((tmp_path / "ray" / "config.json").read_text())
    assert cfg["cluster"]["resource"] == "hwnas-target-tiny" and len(cfg["cluster"]["nodes"]) == 2
    target = [n for n in cfg["cluster"]["nodes"] if n["target"]]
    assert len(target) == 1 and target[0]["node_id"] == cluster.list_all_nodes()[1].node_id
    target_ip = target[0]["ip"]
    assert all(x["measured_on"] == target_ip and x["tpot_ms"] > 0 for x in remote)
    assert {x["host_fingerprint"] for x in remote} == {x["host_fingerprint"] for x in local} == {target[0]["fingerprint"]}
    # the accuracy actor runs on the node without the target resource
    assert [a["node_id"] for a in cfg["cluster"]["actors"]] == [cluster.head_node.node_id]
    summary = (tmp_path / "ray" / "summary.md").read_text()
    assert "## Where each figure was measured" in summary and target_ip in summary
    # a local --resume of the cluster's folder continues it (same identity, same host)
    r = CliRunner().invoke(main, args[:-4] + ["--evaluations", "5", "--population", "2", "--out", str(tmp_path / "ray"),
                                              "--resume", "--ray", cluster.address])
    assert r.exit_code == 0, r.output
    assert len(read_jsonl(tmp_path / "ray" / "candidates.jsonl")) == 5


def test_killed_actor_loses_nothing(tmp_path, cluster, setup):
    """The accuracy actor's process is killed after the first record: Ray restarts it and retries its calls;
    every candidate is recorded exactly once."""
    out = tmp_path / "s"
    args = setup + ["--evaluations", "4", "--population", "4", "--out", str(out), "--ray", cluster.address]
    result = {}
    th = threading.Thread(target=lambda: result.update(r=CliRunner().invoke(main, args)))
    th.start()
    cand, killed = out / "candidates.jsonl", None
    deadline = time.monotonic() + 240
    while th.is_alive() and time.monotonic() < deadline and killed is None:
        if cand.is_file() and read_jsonl(cand):
            pid = json.loads((out / "config.json").read_text())["cluster"]["actors"][0]["pid"]
            os.kill(pid, signal.SIGKILL)     # the actor this search started, by its id
            killed = (pid, len(read_jsonl(cand)))
        time.sleep(0.2)
    th.join(timeout=300)
    r = result["r"]
    assert r.exit_code == 0, r.output
    assert killed is not None and killed[1] < 4, killed
    recs = read_jsonl(cand)
    assert len(recs) == 4 and len({x["key"] for x in recs}) == 4
    assert sorted(x["index"] for x in recs) == [0, 1, 2, 3]


def test_missing_target_resource(tmp_path, cluster, setup):
    args = [a if a != setup[2] else "xeon" for a in setup]
    r = CliRunner().invoke(main, args + ["--out", str(tmp_path / "x"), "--ray", cluster.address])
    one_line_error(r, "hwnas-target-xeon", "hwnas-target-tiny")
    assert not (tmp_path / "x").exists()


def test_wrong_address(tmp_path, setup):
    for addr, needle in (("127.0.0.1:1", "no Ray cluster answers"), ("nonsense", "not a Ray address")):
        r = CliRunner().invoke(main, setup + ["--out", str(tmp_path / "x"), "--ray", addr])
        one_line_error(r, addr, needle)
    assert not (tmp_path / "x").exists()


def test_stopped_cluster(tmp_path, setup):
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 80 * MB,
                                                      "include_dashboard": False,
                                                      "resources": {"hwnas-target-tiny": 1}})
    address = c.address
    c.shutdown()
    t0 = time.monotonic()
    r = CliRunner().invoke(main, setup + ["--out", str(tmp_path / "x"), "--ray", address])
    one_line_error(r, address)
    assert time.monotonic() - t0 < 30          # checked before any model is loaded


def test_without_ray_nothing_imports_it(tmp_path, setup):
    code = ("import sys; from click.testing import CliRunner; from hwnas.cli import main; "
            f"r = CliRunner().invoke(main, {setup + ['--evaluations', '2', '--population', '2', '--out', str(tmp_path / 'l')]!r}); "
            "assert r.exit_code == 0, r.output; "
            "h = CliRunner().invoke(main, ['search', '--help']); assert '--ray' in h.output; "
            "print('ray' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=os.environ)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == "False"


def test_profile_on_a_target_node(tmp_path, cluster, setup, tiny_model_dir):
    """`hwnas profile --ray`: the profile is measured in one task on the target node; profile.json lands here."""
    from hwnas.hardware.profile import load_profile

    target = setup[2]
    out = tmp_path / "p"
    r = CliRunner().invoke(main, ["profile", "--target", target, "--model", str(tiny_model_dir), "--samples", "3",
                                  "--out", str(out), "--ray", cluster.address, "--quiet"])
    assert r.exit_code == 0, r.output
    prof = load_profile(out)
    assert len(prof.measurements) == 4 and all(m.tpot_ms > 0 for m in prof.measurements)
    assert "measured on node" in r.output and prof.host.fingerprint in r.output
    r = CliRunner().invoke(main, ["profile", "--target", "xeon", "--model", str(tiny_model_dir), "--samples", "2",
                                  "--out", str(tmp_path / "q"), "--ray", cluster.address, "--quiet"])
    one_line_error(r, "hwnas-target-xeon")
    assert not (tmp_path / "q").exists()


def test_deployment_genes_on_the_cluster(tmp_path, cluster, setup):
    """--quant auto: actors score the fake-quantized slices, the target node builds each integer IR from the float
    IR that travelled and times it with the candidate's runtime settings."""
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"deploy": {"runtime": {"KV_CACHE_PRECISION": ["u8", "f32"],
                                                        "DYNAMIC_QUANTIZATION_GROUP_SIZE": [0],
                                                        "INFERENCE_PRECISION_HINT": []}}}))
    out = tmp_path / "q"
    r = CliRunner().invoke(main, setup + ["--quant", "auto", "--space", str(space), "--evaluations", "2",
                                          "--population", "2", "--report-limit", "0", "--out", str(out),
                                          "--ray", cluster.address])
    assert r.exit_code == 0, r.output
    recs = read_jsonl(out / "candidates.jsonl")
    assert len(recs) == 2
    for x in recs:
        runtime = x["subnet"]["runtime"]
        assert x["subnet"]["weight_formats"] and x["tpot_ms"] > 0 and x["measured_on"]
        assert x["timed_properties"] == {"DYNAMIC_QUANTIZATION_GROUP_SIZE": 0,
                                         "KV_CACHE_PRECISION": runtime["KV_CACHE_PRECISION"]}
        assert 0 < x["weight_bytes"] < 4 * x["n_params"]     # the shipped integer bytes, not the float IR's
