"""`hwnas search --ray ADDRESS`: the same search with accuracy in Ray actors and latency on target nodes.

The driver (this process) joins the cluster, checks it before any model is loaded (address, target
nodes, one host fingerprint), starts the accuracy actors (each loads the model the local search would
load, from the same spec: a path every node can read), and runs the same `run_search` loop with a
`RayValidator`. It alone writes --out. See docs/cluster.md.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import click

log = logging.getLogger(__name__)


def worker_status(msg: str) -> None:
    """Status lines of the actors' validators go to their logs (the driver draws its own display)."""
    log.debug("%s", msg)


def actor_validation(setup: dict[str, Any], space_file: str | None, report_limit: int, seed: int, *,
                     recovery: bool, quant: str, generation_check: bool = True) -> tuple:
    """Runs in each accuracy actor: check the model spec resolves to the driver's file on this node, then
    build exactly what the local search builds (`build_validation`)."""
    import socket

    from hwnas.cli.search_parts import build_validation
    from hwnas.errors import ClusterError
    from hwnas.model.loading import resolve_model

    sha = resolve_model(setup["source"].spec).sha256()
    if sha != setup["identity"]["model_sha256"]:
        raise ClusterError(f"on node {socket.gethostname()} the model {setup['source'].spec!r} is a different file "
                           f"(sha256 {sha[:12]}, the driver's is {setup['identity']['model_sha256'][:12]}); "
                           "give every node the same model at the same path")
    return build_validation(setup, space_file, report_limit, seed, worker_status, recovery=recovery, quant=quant,
                            generation_check=generation_check)


def shared_paths(setup: dict[str, Any], space_file: str | None) -> tuple[dict[str, Any], str | None]:
    """The model, --data-dir and --space as absolute paths: every node resolves the same spec (a shared path
    or the same layout on each node); a relative path would be relative to each worker's own directory."""
    import dataclasses

    src = setup["source"]
    if src.kind != "default":
        src = dataclasses.replace(src, spec=str(Path(src.path).resolve()))
    setup = {**setup, "source": src, "data_dir": Path(setup["data_dir"]).resolve()}
    return setup, (str(Path(space_file).resolve()) if space_file else None)


def run_search_on_cluster(address: str, actors: int | None, setup: dict[str, Any], config: Any,
                          identity: dict[str, Any], out: str, resume: bool, space_file: str | None, report_limit: int,
                          seed: int, recovery: bool, quant: str, quiet: bool, generation_check: bool = True) -> None:
    """Connect, check, start the actors, search, and say in summary.md where each figure was measured."""
    from hwnas.cli.search_parts import LiveDisplay, print_result
    from hwnas.hardware.cluster import check_fingerprints, connect, shutdown
    from hwnas.io import read_jsonl
    from hwnas.model.space import SearchSpace, SubnetConfig
    from hwnas.search.cluster import RayValidator, append_where_section
    from hwnas.search.loop import run_search

    setup, space_file = shared_paths(setup, space_file)
    predicted = setup["profile"] is not None
    cluster = connect(address, setup["target"].name, need_target=not predicted)
    validator = None
    try:
        cand = Path(out) / "candidates.jsonl"
        if resume and cand.is_file() and not predicted:
            check_fingerprints(read_jsonl(cand), cluster.fingerprint, f"--resume: {out}")
        display = LiveDisplay(config, enabled=not quiet)
        with display:
            display.status(f"joined {address}: {len(cluster.nodes)} node(s), {len(cluster.target_nodes)} with "
                           f"{cluster.resource or 'no target resource (latency predicted)'}")
            factory = functools.partial(actor_validation, setup, space_file, report_limit, seed,
                                        recovery=recovery, quant=quant, generation_check=generation_check)
            validator = RayValidator(cluster, factory, setup["target"], seed=seed, actors=actors, predicted=predicted,
                                     status=display.status)
            display.cluster = validator.status_line
            space = SearchSpace.from_dict(validator.info["space"])
            run_info = dict(validator.info["run_info"])
            if cluster.target_host:
                run_info["host"] = cluster.target_host        # where latency is measured
            run_info["cluster"] = {**cluster.to_dict(), "actors": validator.actor_where}
            seeds = [SubnetConfig.from_dict(d) for d in (run_info.get("seeds") or [])]
            result = run_search(space, validator, config, out=out, resume=resume, identity=identity, run_info=run_info,
                                report=validator.report_fn() if report_limit else None, progress=display.progress,
                                on_update=display.update, remeasure=validator.remeasure, seeds=seeds,
                                screen=validator.screen_fn() if report_limit and generation_check else None)
        append_where_section(Path(out), result, cluster, validator)
    finally:
        if validator is not None:
            validator.close()
        shutdown()
    print_result(result)
    click.echo(f"wrote {out}/ (candidates.jsonl, pareto.json, history.jsonl, pareto.png, summary.md, config.json); "
               f"accuracy on {len(validator.actors)} actor(s), latency on {len(cluster.target_nodes)} "
               f"{setup['target'].name} node(s) of {address}")
