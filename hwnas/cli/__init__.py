"""The `hwnas` command line: a thin click layer over the library.

Each command lives in its own module and registers itself on `main`; any HwnasError becomes a
one-line message and exit code 2, without a traceback.
"""
from __future__ import annotations

import importlib
import logging
import sys

import click

from hwnas.errors import HwnasError

COMMAND_MODULES = ("extract_cmd", "eval_cmd", "profile_cmd", "search_cmd", "export_cmd", "train_cmd", "serve_cmd", "heal_cmd",
                   "cache_cmd")


NOISY_LOGGERS = ("torchao", "torch.utils._pytree", "nncf", "neural_compressor", "transformers", "optimum")


class HwnasGroup(click.Group):
    """Every user error is one line on stderr, `Error: ...`, exit code 2, without a traceback.

    HwnasError from the library and click's own usage errors (a bad option value, a missing
    option, a typo in a choice) alike; click's usage block is left out, `-h` shows it.
    """

    def invoke(self, ctx: click.Context):
        try:
            from hwnas.cache import max_bytes

            max_bytes()  # a bad $HWNAS_CACHE_MAX_GB fails now, not after the command's work
            result = super().invoke(ctx)
            _enforce_cache_cap(ctx)
            return result
        except HwnasError as e:
            raise click.ClickException(_one_line(str(e))) from None
        except click.UsageError as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # `hwnas CMD` alone shows its help
                raise
            name = e.ctx.command_path if e.ctx is not None else "hwnas"
            raise click.ClickException(_one_line(f"{e.format_message()} (see `{name} -h`)")) from None


def _enforce_cache_cap(ctx: click.Context) -> None:
    """After a successful command, evict least recently used cache entries down to the cap."""
    if ctx.invoked_subcommand == "cache":
        return  # `hwnas cache` manages the cache itself
    from hwnas.cache import enforce_cap

    gone = enforce_cap()
    if gone:
        logging.getLogger("hwnas.cache").warning(
            "cache over its cap: deleted %d least recently used entries (%.2f GB); see `hwnas cache`",
            len(gone), sum(e.nbytes for e in gone) / 1e9)


def _one_line(msg: str) -> str:
    return " ".join(msg.split())


@click.group(cls=HwnasGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.version_option(package_name="hwnas")
def main(verbose: int) -> None:
    """Hardware-aware NAS for LLaMA-family models on Intel CPUs (LLaMA-NAS).

    Find faster subnets of a model that keep its accuracy, measured with OpenVINO on the
    target CPU, and ship the chosen one as a quantized OpenVINO IR bundle.
    """
    setup_output(verbose)


def setup_output(verbose: int) -> None:
    """What reaches the terminal: our warnings once each, third-party chatter only with -v.

    Without -v no third-party library talks to the console below ERROR: Neural Compressor and NNCF
    print through handlers of their own and reset their levels when first imported (inside the
    commands), so besides their levels and environment switches each of their loggers gets a filter
    that lets errors only through (a filter stays when a library clears its handlers or sets its
    level). transformers logs errors only, Python warnings raised outside hwnas (deprecations,
    setuptools' license table) are hidden, and a warning hwnas logs repeatedly (e.g. a noisy timing
    per subnet) appears once, with a note that -v shows every one. -v shows them all. When output
    is not a terminal (logs, CI) rich tables get the full width instead of 80 columns.
    """
    import os
    import warnings

    level = logging.WARNING - 10 * verbose
    had = list(logging.getLogger().handlers)
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")
    ours = [h for h in logging.getLogger().handlers if h not in had]  # never filter a host's handlers (pytest)
    if not sys.stdout.isatty():
        os.environ.setdefault("COLUMNS", str(WIDE_COLUMNS))  # rich reads it: full-width tables in logs
    if verbose == 0:
        # These libraries set their own levels when first imported (inside commands); their env switches win.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("LOGLEVEL", "ERROR")  # Neural Compressor's logger
        for name in NOISY_LOGGERS:
            lg = _third_party_logger(name)
            lg.setLevel(logging.ERROR)
            if not any(isinstance(f, ErrorsOnly) for f in lg.filters):
                lg.addFilter(ErrorsOnly())
        warnings.filterwarnings("ignore", module=r"(?!hwnas)")  # third-party Python warnings
        for handler in ours:
            handler.addFilter(OncePerMessage())
    else:
        for name in NOISY_LOGGERS:  # a CliRunner test may have quietened them earlier in this process
            lg = _third_party_logger(name)
            lg.filters = [f for f in lg.filters if not isinstance(f, ErrorsOnly)]
            lg.setLevel(logging.NOTSET)


class ErrorsOnly(logging.Filter):
    """Lets a third-party logger's errors through, nothing below (attached without -v)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


class _OnceLogger(logging.Logger):
    """NNCF's logger class's extra methods (it calls `nncf_logger.info_once`), for a logger made before NNCF is imported."""

    def _once(self, level: int, msg: str) -> None:
        seen = self.__dict__.setdefault("_hwnas_once", set())
        if (level, msg) not in seen:
            seen.add((level, msg))
            self.log(level, msg)

    def debug_once(self, msg: str) -> None:
        self._once(logging.DEBUG, msg)

    def info_once(self, msg: str) -> None:
        self._once(logging.INFO, msg)

    def warning_once(self, msg: str) -> None:
        self._once(logging.WARNING, msg)


def _third_party_logger(name: str) -> logging.Logger:
    """The named logger; made with NNCF's extra methods when it does not exist yet, since a library whose
    module later does `logging.getLogger(name)` gets this object, not one of its own logger class."""
    if name in logging.Logger.manager.loggerDict and isinstance(logging.Logger.manager.loggerDict[name], logging.Logger):
        return logging.getLogger(name)
    before = logging.getLoggerClass()
    logging.setLoggerClass(_OnceLogger)
    try:
        return logging.getLogger(name)
    finally:
        logging.setLoggerClass(before)


WIDE_COLUMNS = 400


class OncePerMessage(logging.Filter):
    """Pass each warning message template once (its first arguments shown); -v shows every one."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        key = (record.name, str(record.msg))
        if key in self.seen:
            return False
        self.seen.add(key)
        record.msg = f"{record.msg} (shown once; -v shows every one)"
        return True


click.ClickException.exit_code = 2


def _register() -> None:
    """Import every command module; a module that fails to import is a bug and must fail loudly."""
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(main)


_register()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
