"""`hwnas cache`: what the cache holds (show), empty it (clear), shrink it (prune)."""
from __future__ import annotations

import click

from hwnas.cli.common import Choice

KIND_NAMES = ("ir", "models", "supernets", "baselines", "host", "test-models")  # hwnas.cache.KINDS (a test checks)


def register(main: click.Group) -> None:
    main.add_command(cache)


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


@click.group(invoke_without_command=True)
@click.pass_context
def cache(ctx: click.Context) -> None:
    """Show or shrink hwnas's cache ($HWNAS_CACHE_DIR, default ~/.cache/hwnas).

    It holds converted models, ordered supernets and OpenVINO IRs that later runs reuse; any of it
    can be deleted and is rebuilt on demand. After every command the least recently used entries
    are deleted down to $HWNAS_CACHE_MAX_GB (default 20; 0 or off = no cap).
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(show)


@cache.command()
def show() -> None:
    """Size of the cache by kind, its location and its cap."""
    from hwnas.cache import KINDS, cache_root, max_bytes, usage

    root = cache_root()
    got = usage(root)
    cap = max_bytes()
    click.echo(f"cache {root}  (cap {_gb(cap) if cap else 'none'}; set HWNAS_CACHE_MAX_GB to change)")
    click.echo(f"{'kind':<12} {'entries':>7} {'size':>10}  what")
    for kind, what in KINDS.items():
        n, b = got[kind]
        click.echo(f"{kind:<12} {n:>7} {_gb(b):>10}  {what}")
    click.echo(f"{'total':<12} {sum(n for n, _ in got.values()):>7} {_gb(sum(b for _, b in got.values())):>10}")


@cache.command()
@click.option("--kind", "kinds", multiple=True, type=Choice(KIND_NAMES), help="Only this kind (repeatable).")
def clear(kinds: tuple[str, ...]) -> None:
    """Delete every cache entry (or those of --kind)."""
    from hwnas.cache import clear as clear_cache

    n, b = clear_cache(list(kinds) or None)
    click.echo(f"deleted {n} entries, {_gb(b)}")


@cache.command()
@click.option("--max-gb", type=click.FloatRange(min=0), required=True,
              help="Delete least recently used entries until the cache holds at most this many GB.")
def prune(max_gb: float) -> None:
    """Shrink the cache to --max-gb, least recently used entries first."""
    from hwnas.cache import prune as prune_cache

    gone = prune_cache(int(max_gb * 1e9))
    click.echo(f"deleted {len(gone)} least recently used entries, {_gb(sum(e.nbytes for e in gone))}")
    for e in gone:
        click.echo(f"  {e.kind}/{e.path.name} ({_gb(e.nbytes)})")
