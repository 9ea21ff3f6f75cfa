"""`hwnas profile --ray`: the whole profile measured on one node that advertises the target.

A profile is one interleaved measuring session (`hwnas.hardware.measure.measure_many`), so it cannot be
split across nodes without mixing sessions: the profile runs as one Ray task that needs one unit of
``hwnas-target-<name>`` (so it never overlaps another measurement on that node). The task loads the
model from the same spec (a path every node can read), exports the IRs into that node's IR cache,
measures, fits, and returns the profile folder's files; the driver writes them to --out. profile.json's
host is the measuring node's.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hwnas.errors import ClusterError


def profile_task(model_spec: str, target: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Runs on a target node: load the model, run_profile into a temporary folder, return its files."""
    import tempfile

    import ray

    from hwnas.hardware.host import detect_host
    from hwnas.hardware.profile import run_profile
    from hwnas.model.loading import load_model

    t0 = time.perf_counter()
    host = detect_host()
    with tempfile.TemporaryDirectory(prefix="hwnas-profile-") as tmp:
        out = Path(tmp) / "profile"
        run_profile(load_model(model_spec), target, out_dir=out, host=host, **kwargs)
        files = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}
    return {"files": files, "host": host.to_dict(), "ip": ray.util.get_node_ip_address(),
            "seconds": round(time.perf_counter() - t0, 3)}


def profile_on_cluster(cluster: Any, model_spec: str, target: Any, out: str | Path, *, force: bool = False,
                       **kwargs: Any) -> dict[str, Any]:
    """Run `profile_task` on a target node of `cluster` and write its files to `out` atomically."""
    import ray

    from hwnas.io import atomic_dir

    task = ray.remote(num_cpus=0, max_retries=1)(profile_task)
    ref = task.options(resources={cluster.resource: 1}).remote(model_spec, target, kwargs)
    try:
        res = ray.get(ref)
    except Exception as e:  # noqa: BLE001 - one line, the node's cause kept
        cause = getattr(e, "cause", None) or e
        lines = [ln for ln in str(cause).strip().splitlines() if ln.strip()]
        raise ClusterError(f"profiling on a {target.name} node failed: {type(cause).__name__}: "
                           f"{lines[-1] if lines else ''}"[:300]) from None
    with atomic_dir(out, force=force) as tmp:
        for name, data in res["files"].items():
            (Path(tmp) / name).write_bytes(data)
    return res
