"""The cluster's cheap checks without a cluster: addresses, host fingerprints, IRs that travel, summary section."""
from __future__ import annotations

import socket

import pytest

from hwnas.errors import ClusterError, HwnasError
from hwnas.hardware.cluster import (
    ClusterInfo,
    NodeInfo,
    check_address,
    check_fingerprints,
    ir_on_this_node,
    ir_payload,
    target_resource,
)


def test_addresses_checked_in_one_line():
    assert target_resource("xeon") == "hwnas-target-xeon"
    for bad in ("nonsense", "host:", ":6379", "host:port"):
        with pytest.raises(ClusterError, match="not a Ray address"):
            check_address(bad)
    with socket.socket() as s:   # a port nothing listens at: bound, never listened
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(ClusterError, match="no Ray cluster answers"):
            check_address(f"127.0.0.1:{port}", timeout_s=2)
    check_address("auto")   # resolved by Ray itself
    assert issubclass(ClusterError, HwnasError)


def test_latency_from_another_host_is_refused():
    recs = [{"latency_source": "measured", "host_fingerprint": "h-a"},
            {"latency_source": "predicted", "host_fingerprint": "h-b"}]
    check_fingerprints(recs, "h-a", "x")                       # predicted figures are not measurements
    with pytest.raises(ClusterError, match="h-a.*h-z|host h-a"):
        check_fingerprints(recs, "h-z", "--resume: out")
    from hwnas.search.cluster import _check_host

    _check_host({"host_fingerprint": "h-a"}, "h-a")
    with pytest.raises(ClusterError, match="h-b"):
        _check_host({"host_fingerprint": "h-b", "measured_on": "10.0.0.2"}, "h-a")


def test_ir_payload_lands_in_this_nodes_cache(tmp_path, monkeypatch):
    src = tmp_path / "a" / "m-abc-1234"
    src.mkdir(parents=True)
    for name, data in (("openvino_model.xml", b"<xml/>"), ("openvino_model.bin", b"\x00" * 10),
                       ("hwnas_ir.json", b"{}")):
        (src / name).write_bytes(data)
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path / "node2"))
    dest, cached = ir_on_this_node(ir_payload(src))
    assert not cached and dest.name == src.name and str(tmp_path / "node2") in str(dest)
    assert (dest / "openvino_model.bin").read_bytes() == b"\x00" * 10
    assert ir_on_this_node(ir_payload(src)) == (dest, True)


def test_accuracy_nodes_avoid_target_nodes():
    nodes = (NodeInfo("a", "10.0.0.1", 4, False), NodeInfo("b", "10.0.0.2", 2, True, "h-x"),
             NodeInfo("c", "10.0.0.3", 0, False))
    info = ClusterInfo("head:6379", "hwnas-target-xeon", nodes, {"fingerprint": "h-x"})
    assert [n.node_id for n in info.accuracy_nodes] == ["a"]
    assert [n.node_id for n in info.target_nodes] == ["b"] and info.fingerprint == "h-x"
    only_targets = ClusterInfo("h:1", "r", (NodeInfo("b", "ip", 2, True),))
    assert [n.node_id for n in only_targets.accuracy_nodes] == ["b"]
    from hwnas.search.cluster import where_markdown

    md = where_markdown([{"key": "l2-x", "index": 0, "scored_on": "10.0.0.1", "measured_on": "10.0.0.2",
                          "latency_source": "measured", "host_fingerprint": "h-x"}], info,
                        [{"ip": "10.0.0.1", "pid": 1, "node_id": "a"}])
    assert "| l2-x | 10.0.0.1 | 10.0.0.2 | h-x |" in md and "10.0.0.2 (host h-x)" in md


def test_live_display_shows_the_cluster():
    """The status line (nodes, busy actors, queued calls, latency tasks) and its place in the live display."""
    from rich.console import Console

    from hwnas.cli.search_parts import LiveDisplay
    from hwnas.hardware.targets import load_target
    from hwnas.search.cluster import RayValidator
    from hwnas.search.config import SearchConfig

    nodes = (NodeInfo("a", "10.0.0.1", 4, False), NodeInfo("b", "10.0.0.2", 2, True, "h-x"))
    rv = object.__new__(RayValidator)   # the bookkeeping alone, no cluster
    rv.cluster = ClusterInfo("head:6379", "hwnas-target-xeon", nodes, {"fingerprint": "h-x"})
    rv.target, rv.actors, rv.load, rv.latency_out, rv.done = load_target("xeon"), [1, 2], [3, 0], 4, 5
    line = rv.status_line()
    assert line == ("cluster head:6379: 2 node(s), 1 timing xeon; accuracy actors busy 1/2, queued 2; "
                    "latency tasks 1 running, 3 queued; 5 done")
    d = LiveDisplay(SearchConfig(evaluations=4, population=2), enabled=False)
    d.cluster = rv.status_line
    console = Console(width=200, record=True)
    console.print(d.render())
    assert "accuracy actors busy 1/2" in console.export_text()


def test_without_ray_installed_the_error_says_how_to_get_it(monkeypatch):
    import sys

    from hwnas.hardware.cluster import connect

    monkeypatch.setitem(sys.modules, "ray", None)   # `import ray` raises ImportError
    with pytest.raises(ClusterError, match=r"pip install 'hwnas\[ray\]'"):
        connect("auto", "xeon")
