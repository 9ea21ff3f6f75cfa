"""`hwnas serve`: an OpenAI-compatible HTTP server for a bundle."""
from __future__ import annotations

import click


def register(main: click.Group) -> None:
    main.add_command(serve)


@click.command()
@click.argument("bundle", type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 exposes it to the network).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--api-key", default=None, envvar="HWNAS_API_KEY", show_envvar=True,
              help="Require 'Authorization: Bearer KEY' on every route but /health.")
@click.option("--model-name", default=None, help="Model id clients use (default: the bundle's name).")
@click.option("--target", default=None, help="OpenVINO properties from this target (default: the bundle's).")
@click.option("--max-active", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Requests decoded together in the continuous batch.")
@click.option("--max-queue", type=click.IntRange(0, 4096), default=8, show_default=True,
              help="Requests waiting beyond --max-active; more get 503 with Retry-After.")
@click.option("--max-body-bytes", type=click.IntRange(1024), default=1 << 20, show_default=True,
              help="Larger request bodies get 413.")
@click.option("--graceful-timeout", type=float, default=60.0, show_default=True,
              help="Seconds in-flight requests get to finish after SIGTERM/SIGINT.")
@click.option("--no-verify", is_flag=True, help="Skip verifying the bundle before serving (not recommended).")
def serve(bundle, host, port, api_key, model_name, target, max_active, max_queue, max_body_bytes, graceful_timeout, no_verify):
    """Serve BUNDLE over HTTP with an OpenAI-compatible API (/v1/completions, /v1/chat/completions,
    /v1/models, /health), streaming with server-sent events.

    The bundle is verified (checksums, manifest, IR load, smoke generation) before any traffic is
    accepted; a bundle that fails refuses to start. Speculative bundles decode with their draft.
    """
    from hwnas.deploy.serving.server import prepare, run_server
    from hwnas.hardware.targets import load_target

    if target:
        load_target(target)  # an unknown target fails before the bundle is checked
    from hwnas.model.memory import check_bundle

    check_bundle(bundle)  # a bundle that cannot fit in memory is refused before it is compiled
    prep = prepare(bundle, target=target, model_id=model_name, verify=not no_verify)

    def ready(url: str) -> None:
        click.echo(f"serving {prep.model_id} at {url}/v1 (health: {url}/health)"
                   + (f", speculative with {prep.num_assistant_tokens} draft tokens" if prep.draft else ""), err=True)

    run_server(prep, host=host, port=port, api_key=api_key, max_active=max_active, max_queue=max_queue,
               max_body_bytes=max_body_bytes, graceful_timeout_s=graceful_timeout, on_ready=ready)
    click.echo("server stopped", err=True)
