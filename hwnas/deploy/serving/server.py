"""Starting `hwnas serve`: verify the bundle, open the engine, run uvicorn until SIGINT/SIGTERM.

uvicorn's own shutdown is graceful: on SIGTERM it stops accepting connections, lets in-flight
requests (streams included) finish within `graceful_timeout_s`, then the engine is closed.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from hwnas.errors import BundleError, HwnasError

log = logging.getLogger(__name__)

API_KEY_ENV = "HWNAS_API_KEY"
DEFAULT_CONTEXT = 2048


class ServeError(HwnasError):
    """The server cannot start (bundle, port or option)."""


@dataclass
class Prepared:
    folder: Path
    model_id: str
    context_length: int
    properties: dict
    draft: Path | None
    num_assistant_tokens: int
    info: dict
    vocab_size: int | None = None


def prepare(bundle: str | Path, *, target: str | None = None, properties: Mapping[str, Any] | None = None,
            model_id: str | None = None, verify: bool = True) -> Prepared:
    """Check the bundle (checksums, manifest, IR load, smoke generation) and gather what serving needs.

    OpenVINO properties: `properties` if given, else those of `target` (a name or .toml), else of the
    target recorded in the bundle's manifest (as `hwnas run` does).

    Raises BundleError (one line) when the bundle fails verification; nothing is served then.
    """
    from hwnas.deploy.manifest import read_manifest
    from hwnas.deploy.spec_bundle import draft_of, read_spec
    from hwnas.deploy.verify import verify_bundle

    folder = Path(bundle)
    if not folder.is_dir():
        raise BundleError(f"bundle {folder} is not a folder; give a bundle folder (unpack archives first)")
    if verify:
        rep = verify_bundle(folder, generate=True)
        if not rep.ok:
            raise BundleError(f"bundle {folder} failed verification, not serving it: {rep.problems[0]}"
                              + (f" (+{len(rep.problems) - 1} more)" if len(rep.problems) > 1 else ""))
    man = read_manifest(folder)
    cfg = json.loads((folder / "config.json").read_text())
    ctx = int(cfg.get("max_position_embeddings") or DEFAULT_CONTEXT)
    if not (folder / "openvino_tokenizer.xml").is_file():
        raise BundleError(f"bundle {folder} has no openvino_tokenizer.xml; serving needs the tokenizer IRs")
    draft, k = draft_of(folder, man)
    info = {"bundle": man.name, "subnet": (man.subnet or {}).get("key"), "quantization": man.recipe.describe(),
            "speculative": {"draft": read_spec(folder).get("draft", {}).get("key"), "num_assistant_tokens": k} if draft else None}
    props = dict(properties) if properties is not None else target_properties(man, target)
    vocab = cfg.get("vocab_size")
    return Prepared(folder, model_id or man.name, ctx, props, draft, k, info, int(vocab) if vocab else None)


def target_properties(manifest: Any, target: str | None = None) -> dict:
    """The runtime OpenVINO properties of `target`, or of the bundle's recorded target, on this host,
    with the bundle's runtime genes over them (`hwnas.deploy.settings`)."""
    from hwnas.deploy.settings import bundle_properties

    return bundle_properties(manifest, target)


def build_app(prep: Prepared, *, api_key: str | None = None, max_active: int = 8, max_queue: int = 8,
              max_body_bytes: int = 1 << 20, cache_size_gb: int = 1):
    """(app, engine) for a prepared bundle; the app closes the engine when it shuts down."""
    from hwnas.deploy.serving.api import ServeSettings, create_app
    from hwnas.deploy.serving.engine import Engine

    engine = Engine(prep.folder, properties=prep.properties, max_active=max_active, max_queue=max_queue,
                    cache_size_gb=cache_size_gb, draft=prep.draft, num_assistant_tokens=prep.num_assistant_tokens)
    settings = ServeSettings(model_id=prep.model_id, context_length=prep.context_length, api_key=api_key,
                             max_body_bytes=max_body_bytes, info=prep.info, vocab_size=prep.vocab_size)
    return create_app(engine, settings, on_shutdown=engine.close), engine


def _server_class():
    import uvicorn

    class _GracefulServer(uvicorn.Server):
        """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown (the process then dies of the
        signal); a server that shut down cleanly should exit 0 instead."""

        def handle_exit(self, sig, frame) -> None:
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

    return _GracefulServer


def run_server(prep: Prepared, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
               max_active: int = 8, max_queue: int = 8, max_body_bytes: int = 1 << 20, graceful_timeout_s: float = 60.0,
               on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM (blocking)."""
    import socket

    import uvicorn

    _Server = _server_class()
    api_key = api_key or os.environ.get(API_KEY_ENV) or None
    try:  # fail with one line before loading the model when the port is taken
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}; choose another --port or --host") from None
    app, _engine = build_app(prep, api_key=api_key, max_active=max_active, max_queue=max_queue,
                             max_body_bytes=max_body_bytes)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=graceful_timeout_s, lifespan="on")
    server = _Server(config)
    if on_ready is not None:
        orig = server.startup

        async def startup(sockets=None):
            await orig(sockets=sockets)
            on_ready(f"http://{host}:{port}")
        server.startup = startup
    server.run()
