"""Connecting to a Ray cluster and finding the nodes that may time a target.

A node may time target NAME when it advertises the Ray custom resource ``hwnas-target-NAME``
(``ray start --resources '{"hwnas-target-xeon": 1}'``). Every measurement task asks for one unit of
it, so a node started with 1 unit runs one measurement at a time and measurements never disturb each
other. Accuracy work goes to the other nodes when there are any.

Everything here imports Ray inside functions: without ``--ray`` nothing imports it. `connect`
checks what can fail before any model is loaded (address reachable, the cluster alive, a target
node present, all target nodes on the same host fingerprint) and raises `ClusterError` in one line.
"""
from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwnas.errors import ClusterError

log = logging.getLogger(__name__)

RESOURCE_PREFIX = "hwnas-target-"
CONNECT_TIMEOUT_S = 5.0
FORWARDED_ENV_PREFIX = "HWNAS_"   # the driver's HWNAS_* settings travel to every worker (runtime_env)


def target_resource(target_name: str) -> str:
    """The Ray custom resource a node advertises to time `target_name`."""
    return RESOURCE_PREFIX + target_name


@dataclass(frozen=True)
class NodeInfo:
    """One alive node of the cluster as hwnas sees it."""

    node_id: str
    ip: str
    cpus: float
    target: bool                  # advertises the target's resource
    fingerprint: str = ""         # host fingerprint (target nodes: probed at connect)

    def to_dict(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "ip": self.ip, "cpus": self.cpus, "target": self.target,
                "fingerprint": self.fingerprint}


@dataclass(frozen=True)
class ClusterInfo:
    """The cluster a search runs on: its address, nodes and the target resource."""

    address: str
    resource: str
    nodes: tuple[NodeInfo, ...]
    target_host: dict[str, Any] | None = None   # HostInfo.to_dict() of the target nodes (all the same)

    @property
    def target_nodes(self) -> tuple[NodeInfo, ...]:
        return tuple(n for n in self.nodes if n.target)

    @property
    def accuracy_nodes(self) -> tuple[NodeInfo, ...]:
        """Nodes for accuracy actors: those with a CPU and without the target resource (so measurements are not
        disturbed), or every node with a CPU when all advertise the target."""
        cpu = tuple(n for n in self.nodes if n.cpus >= 1)
        return tuple(n for n in cpu if not n.target) or cpu

    @property
    def fingerprint(self) -> str:
        return (self.target_host or {}).get("fingerprint", "")

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address, "resource": self.resource, "nodes": [n.to_dict() for n in self.nodes],
                "target_host": self.target_host}


# ---------------------------------------------------------------------------- connect
def check_address(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast on an address nothing listens at (Ray itself retries for a minute, printing C++ warnings)."""
    if address == "auto":
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ClusterError(f"--ray {address!r} is not a Ray address; give the head's HOST:PORT "
                           "(as `ray start --head` printed it, port 6379 by default) or 'auto'")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as e:
        raise ClusterError(f"--ray {address}: no Ray cluster answers there ({e.strerror or type(e).__name__}); "
                           "start one with `ray start --head` or check the address") from None


def connect(address: str, target_name: str | None, *, need_target: bool = True,
            timeout_s: float = CONNECT_TIMEOUT_S) -> ClusterInfo:
    """Join the cluster at `address` ('auto': the one running on this machine) as its driver.

    Checks, each a one-line `ClusterError`: the address answers; Ray connects; with `need_target`,
    some alive node advertises ``hwnas-target-<target_name>`` and all such nodes share one host
    fingerprint (their timings are comparable). The driver's HWNAS_* environment variables are
    forwarded to every worker through Ray's runtime_env.
    """
    check_address(address, timeout_s)
    try:
        import ray
    except ImportError:
        raise ClusterError("--ray needs Ray, an optional extra: pip install 'hwnas[ray]' (ray==2.60.0)") from None

    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIX)}
    if ray.is_initialized():
        ray.shutdown()
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False,
                 runtime_env={"env_vars": env} if env else None, namespace="hwnas")
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ClusterError(f"--ray {address}: cannot join the Ray cluster ({_first_line(e)})") from None
    try:
        resource = target_resource(target_name) if target_name else ""
        nodes = alive_nodes(resource)
        if not nodes:
            raise ClusterError(f"--ray {address}: the cluster has no alive node")
        host = None
        if need_target:
            if not any(n.target for n in nodes):
                have = sorted({r for n in ray.nodes() if n.get("Alive") for r in n.get("Resources", {})
                               if r.startswith(RESOURCE_PREFIX)})
                raise ClusterError(
                    f"--ray {address}: no node advertises the resource {resource!r} for target {target_name!r} "
                    f"(target resources present: {', '.join(have) or 'none'}); add one with `ray start --address "
                    f"{address} --resources '{{\"{resource}\": 1}}'`")
            nodes, host = _probe_targets(nodes, resource)
        info = ClusterInfo(address, resource, tuple(nodes), host)
    except BaseException:
        ray.shutdown()
        raise
    log.info("joined Ray cluster %s: %d nodes, %d with %s", address, len(info.nodes), len(info.target_nodes), resource)
    return info


def alive_nodes(resource: str) -> list[NodeInfo]:
    """The alive nodes, flagged when they advertise `resource`."""
    import ray

    out = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        res = n.get("Resources", {})
        out.append(NodeInfo(n["NodeID"], n.get("NodeManagerAddress", ""), float(res.get("CPU", 0)),
                            bool(resource) and res.get(resource, 0) > 0))
    return out


def node_options(node_id: str, soft: bool = False) -> dict[str, Any]:
    """Ray `.options(...)` that place a task or actor on one node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node_id, soft=soft)}


def _host_dict() -> dict[str, Any]:
    from hwnas.hardware.host import detect_host

    return detect_host(measure_bandwidth=False).to_dict()


def _probe_targets(nodes: list[NodeInfo], resource: str) -> tuple[list[NodeInfo], dict[str, Any]]:
    """Host fingerprint of every target node (a tiny task pinned to each); refuses mixed hosts."""
    import ray

    probe = ray.remote(num_cpus=0, max_retries=1)(_host_dict)
    targets = [n for n in nodes if n.target]
    refs = [probe.options(**node_options(n.node_id)).remote() for n in targets]
    try:
        hosts = ray.get(refs, timeout=120)
    except Exception as e:  # noqa: BLE001 - a node that cannot run a task is a cluster problem, said in one line
        raise ClusterError(f"a target node did not answer the host probe: {_first_line(e)}") from None
    fps = {n.node_id: h["fingerprint"] for n, h in zip(targets, hosts)}
    if len(set(fps.values())) > 1:
        listing = ", ".join(f"{n.ip} {fps[n.node_id]}" for n in targets)
        raise ClusterError(f"the nodes advertising {resource!r} are different machines ({listing}); latency from "
                           "different hosts is never mixed in one search: give the other kind its own target name")
    out = [NodeInfo(n.node_id, n.ip, n.cpus, n.target, fps.get(n.node_id, "")) for n in nodes]
    return out, hosts[0]


def check_fingerprints(records: list[dict[str, Any]], fingerprint: str, where: str) -> None:
    """Refuse to mix: every measured latency in `records` must come from a host with `fingerprint`."""
    other = sorted({r.get("host_fingerprint") for r in records
                    if r.get("latency_source") == "measured" and r.get("host_fingerprint")} - {fingerprint})
    if other:
        raise ClusterError(f"{where} holds latency measured on host {', '.join(other)}; the cluster's target nodes "
                           f"are host {fingerprint}: latency from different hosts is never mixed in one search")


def shutdown() -> None:
    """Leave the cluster (the cluster keeps running)."""
    import sys

    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


# ---------------------------------------------------------------------------- IRs that travel
def ir_payload(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """An IR cache folder as bytes, to travel through Ray's object store to the node that times it."""
    folder = Path(folder)
    return {"name": folder.name, "files": {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}}


def ir_on_this_node(payload: dict[str, Any]) -> tuple[Path, bool]:
    """The payload's IR in this node's IR cache (written atomically on a miss); (folder, was_cached)."""
    import shutil
    import tempfile

    from hwnas.hardware.irexport import ir_cache_root, is_complete

    dest = ir_cache_root() / payload["name"]
    if is_complete(dest):
        return dest, True
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        for name, data in payload["files"].items():
            (tmp / name).write_bytes(data)
        if dest.exists() and not is_complete(dest):
            shutil.rmtree(dest, ignore_errors=True)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not is_complete(dest):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest, False
