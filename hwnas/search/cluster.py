"""The search's validation on a Ray cluster: accuracy in actors, latency on the target's nodes.

`RayValidator` is a drop-in validator for `run_search` with one more method, `submit(cfgs)`, which
the loop calls once per iteration with every subnet it will validate (`hwnas.search.loop`):

- **accuracy** (search split, select split, recovery fitting, runtime genes' effect, the search
  signal) runs in `AccuracyWorker` actors, one per accuracy node by default. Each builds the same
  validator the local search builds (the CLI's factory), so it loads the model once and keeps it;
  it also exports each candidate's float IR (its node's IR cache) and returns it as bytes;
- **latency** runs as a task that needs one unit of ``hwnas-target-<name>``, so only nodes that
  advertise the target time candidates, one at a time per unit. The task writes the IR into its own
  node's IR cache (a hit skips the write) and times it with `hwnas.search.validation.time_ir`, the
  function the local search uses; the record carries the measuring node's host fingerprint;
- the driver (the process that called `run_search`) stays the only writer of the search folder.

Failures: actors restart (`max_restarts`) and their calls are retried (`max_task_retries`), latency
tasks are retried (`max_retries`); a candidate whose work finally fails stops the search with one
line (its record is never written, so `--resume` validates it again). Records arrive in any order;
the loop numbers them by proposal order, so a cluster run records what a local run records.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from hwnas.errors import ClusterError, SearchError
from hwnas.model.space import SubnetConfig

log = logging.getLogger(__name__)

ACTOR_RESTARTS = 3      # an actor whose process dies is started again (the model is loaded again)
TASK_RETRIES = 3        # ... and its call is retried; latency tasks too
WHERE_KEYS = ("scored_on", "measured_on", "cluster_s")   # provenance a cluster run adds to each record


# ---------------------------------------------------------------------------- work on the nodes
class AccuracyWorker:
    """One Ray actor: the model, the task suites and a `SubnetValidator`, loaded once and kept."""

    def __init__(self, factory: Callable[[], tuple], measure_here: bool = False):
        import os

        import ray

        self.space, self.validator, self.report_fn, self.run_info = factory()
        ctx = ray.get_runtime_context()
        self.where = {"node_id": ctx.get_node_id(), "ip": ray.util.get_node_ip_address(), "pid": os.getpid()}
        self.measure_here = measure_here   # latency predicted by a profile: the actor gives the whole record

    def describe(self) -> dict[str, Any]:
        return {"space": self.space.to_dict(), "run_info": self.run_info, "where": self.where}

    def score(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """Accuracy and signal of one subnet (and its predicted latency when there is a profile)."""
        t0 = time.perf_counter()
        c = SubnetConfig.from_dict(cfg)
        out = self.validator(c) if self.measure_here else self.validator.score(c)
        out["scored_on"] = self.where["ip"]
        out["_seconds"] = time.perf_counter() - t0
        return out

    def export(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """`cfg`'s float IR (this node's cache; exported on a miss) as bytes, with what the timing needs."""
        from hwnas.hardware.cluster import ir_payload

        t0 = time.perf_counter()
        c = SubnetConfig.from_dict(cfg)
        ir, fresh = self.validator._ir(c)
        return {"payload": ir_payload(ir), "n_params": c.n_params(self.validator.supernet.config),
                "export_s": round(time.perf_counter() - t0, 3), "ir_cached": not fresh}

    def report(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """The select split's paired accuracy of one subnet (the pick rule's second look)."""
        return self.report_fn(SubnetConfig.from_dict(cfg))

    def screen(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """The generation check on one subnet's weights (before its report split, `evaluate_reports`)."""
        return self.validator.generation_screen(SubnetConfig.from_dict(cfg))

    def pid(self) -> int:
        return int(self.where["pid"])


def time_on_target(export: dict[str, Any], target: Any, cfg: dict[str, Any], seed: int,
                   timer: Callable[..., dict[str, Any]] | None = None) -> dict[str, Any]:
    """A Ray task on a target node: the IR into this node's cache, then timed as the local search times it."""
    import ray

    from hwnas.hardware.cluster import ir_on_this_node
    from hwnas.hardware.host import detect_host
    from hwnas.search.validation import time_ir

    t0 = time.perf_counter()
    ir, _ = ir_on_this_node(export["payload"])
    timer = timer or time_ir
    out = timer(ir, SubnetConfig.from_dict(cfg), target, host=detect_host(), seed=seed, n_params=export["n_params"])
    out.update({"export_s": round(export["export_s"] + out.pop("quantize_s", 0.0), 3), "ir_cached": export["ir_cached"],
                "measured_on": ray.util.get_node_ip_address(), "_seconds": time.perf_counter() - t0,
                "_actor_export_s": export["export_s"]})
    return out


def remeasure_on_target(target: Any, cfgs: list[dict[str, Any]], seed: int, full_key: str,
                        *exports: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A Ray task on a target node: the front and the full model timed again in one interleaved session
    (`exports` are positional so that Ray resolves them before the task takes the target resource)."""
    import ray

    from hwnas.hardware.cluster import ir_on_this_node
    from hwnas.hardware.host import detect_host
    from hwnas.search.validation import remeasure_irs

    irs = [(SubnetConfig.from_dict(c), ir_on_this_node(e["payload"])[0]) for c, e in zip(cfgs, exports)]
    out = remeasure_irs(irs, target, host=detect_host(), seed=seed, full_key=full_key,
                        n_params=[e["n_params"] for e in exports])
    for rec in out.values():
        rec["measured_on"] = ray.util.get_node_ip_address()
    return out


# ---------------------------------------------------------------------------- the driver's side
@dataclass
class _Pending:
    """One submitted candidate: its accuracy call and (unless predicted) its latency task."""

    index: int
    actor: int
    score: Any
    latency: Any = None
    t_submit: float = 0.0


class RayValidator:
    """`cfg -> record` over a Ray cluster (see the module docstring); also `submit`, `report`, `remeasure`."""

    def __init__(self, cluster: Any, factory: Callable[[], tuple], target: Any, *, seed: int = 0,
                 actors: int | None = None, predicted: bool = False, cpus_per_actor: float | None = None,
                 timer: Callable[..., dict[str, Any]] | None = None, status: Callable[[str], None] | None = None):
        import ray

        from hwnas.hardware.cluster import node_options

        self.cluster, self.target, self.seed, self.predicted, self.timer = cluster, target, seed, predicted, timer
        self.status = status or (lambda msg: None)
        nodes = cluster.accuracy_nodes
        n = actors or len(nodes)
        if n < 1:
            raise ClusterError(f"--ray-actors must be >= 1, got {n}")
        cls = ray.remote(AccuracyWorker)
        self.status(f"starting {n} accuracy actor(s) on {len(nodes)} node(s); each loads the model")
        placed = [nodes[i % len(nodes)] for i in range(n)]
        share = [max(1, int(nd.cpus // sum(1 for x in placed if x.node_id == nd.node_id))) if cpus_per_actor is None
                 else cpus_per_actor for nd in placed]   # default: the node's CPUs shared by its actors
        self.actors = [cls.options(num_cpus=share[i], max_restarts=ACTOR_RESTARTS, max_task_retries=TASK_RETRIES,
                                   name=f"hwnas-accuracy-{i}", lifetime=None,
                                   **node_options(placed[i].node_id, soft=True)).remote(factory, predicted)
                       for i in range(n)]
        try:
            infos = ray.get([a.describe.remote() for a in self.actors])
        except Exception as e:  # noqa: BLE001 - an actor that cannot load the model: one line, the cause kept
            self.close()
            raise ClusterError(f"an accuracy actor could not start: {_cause(e)}") from None
        spaces = {str(i["space"]) for i in infos}
        if len(spaces) > 1:
            self.close()
            raise ClusterError("the accuracy actors resolved different search spaces (the model spec or --space "
                               "file differs between nodes); give every node the same shared path")
        self.info = infos[0]
        self.actor_where = [i["where"] for i in infos]
        self._measure = ray.remote(num_cpus=0, max_retries=TASK_RETRIES)(time_on_target)
        self._remeasure = ray.remote(num_cpus=0, max_retries=TASK_RETRIES)(remeasure_on_target)
        self.load = [0] * n              # calls outstanding per actor
        self.latency_out = 0             # latency tasks outstanding
        self.done = 0
        self.overhead_s: list[float] = []  # per candidate: driver wall time minus the work the nodes did

    # ------------------------------------------------------------------ submit / collect
    def submit(self, cfgs: Sequence[SubnetConfig]) -> "RayBatch":
        """Start every candidate's accuracy call and latency task now; collect with `next_done()`."""
        pending = []
        for i, cfg in enumerate(cfgs):
            a = min(range(len(self.actors)), key=lambda k: (self.load[k], k))
            actor = self.actors[a]
            d = cfg.to_dict()
            p = _Pending(i, a, actor.score.remote(d), t_submit=time.monotonic())
            self.load[a] += 1
            if not self.predicted:
                exp = actor.export.remote(d)
                p.latency = self._measure.options(resources={self.cluster.resource: 1}).remote(
                    exp, self.target, d, self.seed, self.timer)
                self.latency_out += 1
            pending.append(p)
        return RayBatch(self, pending)

    def __call__(self, cfg: SubnetConfig) -> dict[str, Any]:
        _, rec, _ = self.submit([cfg]).next_done()
        return rec

    def status_line(self) -> str:
        """Nodes, busy actors and queued tasks, for the live display."""
        busy = sum(1 for x in self.load if x > 0)
        queued = sum(max(0, x - 1) for x in self.load)
        tn = len(self.cluster.target_nodes)
        return (f"cluster {self.cluster.address}: {len(self.cluster.nodes)} node(s), {tn} timing {self.target.name}; "
                f"accuracy actors busy {busy}/{len(self.actors)}, queued {queued}; "
                f"latency tasks {min(self.latency_out, tn)} running, {max(0, self.latency_out - tn)} queued; "
                f"{self.done} done")

    # ------------------------------------------------------------------ after the search
    def report_fn(self) -> Callable[[SubnetConfig], dict[str, Any]]:
        """The select split scored by the actors (round-robin)."""
        import ray

        turn = [0]

        def report(cfg: SubnetConfig) -> dict[str, Any]:
            a = turn[0] % len(self.actors)
            turn[0] += 1
            self.status(f"select split {cfg.describe()} (actor {a})")
            return _get(ray, self.actors[a].report.remote(cfg.to_dict()), f"select split of {cfg.key}")

        return report

    def screen_fn(self) -> Callable[[SubnetConfig], dict[str, Any]]:
        """The generation screen run by the first actor (it keeps the full model's reference once made)."""
        import ray

        def screen(cfg: SubnetConfig) -> dict[str, Any]:
            self.status(f"generation check {cfg.describe()} (actor 0)")
            return _get(ray, self.actors[0].screen.remote(cfg.to_dict()), f"generation check of {cfg.key}")

        return screen

    def remeasure(self, cfgs: list[SubnetConfig]) -> dict[str, dict[str, Any]]:
        """The front and the full model timed again in one interleaved session on one target node."""
        import ray

        if self.predicted or not cfgs:
            return {}
        self.status(f"re-measuring {len(cfgs)} subnets (interleaved) on a {self.target.name} node")
        exports = [self.actors[i % len(self.actors)].export.remote(c.to_dict()) for i, c in enumerate(cfgs)]
        space = self.info["space"]
        from hwnas.model.space import SearchSpace

        full_key = SearchSpace.from_dict(space).largest().key
        ref = self._remeasure.options(resources={self.cluster.resource: 1}).remote(
            self.target, [c.to_dict() for c in cfgs], self.seed, full_key, *exports)
        return _get(ray, ref, "re-measurement of the front")

    def close(self) -> None:
        import ray

        for a in getattr(self, "actors", []):
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001 - an actor already gone needs no killing
                pass


class RayBatch:
    """One iteration's submitted candidates; `next_done()` returns them as they finish."""

    def __init__(self, owner: RayValidator, pending: list[_Pending]):
        self.owner, self.pending = owner, {p.index: p for p in pending}
        self.results: dict[Any, Any] = {}

    def next_done(self) -> tuple[int, dict[str, Any], float]:
        """(index in the submitted list, measured objectives, seconds the nodes worked on it)."""
        import ray

        o = self.owner
        while True:
            for i, p in sorted(self.pending.items()):
                refs = [r for r in (p.score, p.latency) if r is not None]
                if all(r in self.results for r in refs):
                    del self.pending[i]
                    rec = dict(self.results.pop(p.score))
                    work, lat_s = rec.pop("_seconds", 0.0), 0.0
                    if p.latency is not None:
                        lat = dict(self.results.pop(p.latency))
                        lat_s = lat.pop("_seconds", 0.0)
                        work += lat_s + lat.pop("_actor_export_s", 0.0)   # the actor's IR export, then the timing
                        _check_host(lat, o.cluster.fingerprint)
                        rec.update(lat)
                    wall = time.monotonic() - p.t_submit
                    o.overhead_s.append(max(0.0, wall - work))
                    rec["cluster_s"] = {"accuracy_actor": round(work - lat_s, 3), "latency_task": round(lat_s, 3),
                                        "submitted_to_arrived": round(wall, 3)}
                    o.done += 1
                    o.status(f"candidate {i + 1} of this iteration recorded; {len(self.pending)} in flight")
                    return i, rec, round(work, 3)
            waiting = [r for p in self.pending.values() for r in (p.score, p.latency)
                       if r is not None and r not in self.results]
            if not waiting:
                raise SearchError("no candidate left to collect")
            ready, _ = ray.wait(waiting, num_returns=1)
            for r in ready:
                p = next(p for p in self.pending.values() if r in (p.score, p.latency))
                what = "accuracy" if r == p.score else "latency"
                self.results[r] = _get(ray, r, f"{what} of candidate {p.index}")
                if r == p.score:
                    o.load[p.actor] -= 1
                else:
                    o.latency_out -= 1


def _check_host(lat: dict[str, Any], fingerprint: str) -> None:
    """A latency from a node whose host differs from the target nodes' is refused, never mixed in."""
    got = lat.get("host_fingerprint")
    if fingerprint and got and got != fingerprint:
        raise ClusterError(f"node {lat.get('measured_on')} measured on host {got}, but the target nodes probed at the "
                           f"start are host {fingerprint}: latency from different hosts is never mixed in one search")


def where_markdown(records: Sequence[dict[str, Any]], cluster: Any, actors: Sequence[dict[str, Any]]) -> str:
    """summary.md's section that says on which node each figure was made."""
    lines = ["", f"## Where each figure was measured (Ray cluster {cluster.address})", ""]
    lines.append(f"- accuracy (search split, select split, recovery fitting, IR exports): {len(actors)} accuracy "
                 "actor(s) on " + ", ".join(sorted({a['ip'] for a in actors})))
    tn = cluster.target_nodes
    if tn:
        lines.append(f"- latency: nodes advertising `{cluster.resource}`, one measurement at a time each: "
                     + ", ".join(f"{n.ip} (host {n.fingerprint})" for n in tn))
    else:
        lines.append("- latency: predicted by the profile's latency model (no target node needed)")
    lines += ["", "| candidate | accuracy scored on | latency measured on | host fingerprint |", "|---|---|---|---|"]
    for r in sorted(records, key=lambda r: r.get("index", 0)):
        lines.append(f"| {r['key']} | {r.get('scored_on', 'this machine (local run)')} | "
                     f"{r.get('measured_on', 'this machine (local run)' if r.get('latency_source') == 'measured' else '-')} | "
                     f"{r.get('host_fingerprint', '-')} |")
    return "\n".join(lines) + "\n"


def append_where_section(out: Any, result: Any, cluster: Any, validator: RayValidator) -> None:
    """Add `where_markdown` to OUT/summary.md (atomic rewrite)."""
    from pathlib import Path

    from hwnas.io import write_text_atomic

    path = Path(out) / "summary.md"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    write_text_atomic(path, text + where_markdown(result.records, cluster, validator.actor_where))


def _get(ray: Any, ref: Any, what: str) -> Any:
    """ray.get with failures (after Ray's retries) as one line."""
    try:
        return ray.get(ref)
    except Exception as e:  # noqa: BLE001
        raise ClusterError(f"{what} failed on the cluster after retries: {_cause(e)}") from None


def _cause(e: BaseException) -> str:
    cause = getattr(e, "cause", None) or e
    lines = [ln for ln in str(cause).strip().splitlines() if ln.strip()]
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}"[:300]
