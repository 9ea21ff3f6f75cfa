"""hwnas.cache and `hwnas cache`: sizes by kind, clear, LRU prune, the automatic cap."""
from __future__ import annotations

import os
import time

import pytest
from click.testing import CliRunner

from hwnas import cache
from hwnas.cli import main
from hwnas.cli.cache_cmd import KIND_NAMES


def _entry(root, kind, name, nbytes, age_s):
    d = root / kind / name
    d.mkdir(parents=True)
    (d / "blob.bin").write_bytes(b"x" * nbytes)
    t = time.time() - age_s
    os.utime(d, (t, t))
    return d


@pytest.fixture
def root(tmp_path, monkeypatch):
    r = tmp_path / "cache"
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(r))
    _entry(r, "ir", "old", 3000, 3600)
    _entry(r, "ir", "mid", 2000, 1800)
    _entry(r, "models", "new", 1000, 60)
    (r / "ir" / ".x.partial").mkdir()  # a write in progress: never counted or deleted
    (r / "hashes.json").write_text("{}")  # bookkeeping at the top: not an entry
    return r


def test_kind_names_match_the_library():
    assert KIND_NAMES == tuple(cache.KINDS)


def test_cache_root_is_the_models_cache_dir(root):
    from hwnas.model.loading import cache_dir

    assert cache.cache_root() == cache_dir() == root


def test_usage_by_kind(root):
    u = cache.usage()
    assert u["ir"] == (2, 5000) and u["models"] == (1, 1000) and u["supernets"] == (0, 0)
    assert [e.path.name for e in cache.entries()] == ["old", "mid", "new"]  # least recently used first


def test_prune_evicts_least_recently_used_first(root):
    gone = cache.prune(3500)
    assert [e.path.name for e in gone] == ["old"]  # 6000 -> 3000 <= 3500
    assert not (root / "ir" / "old").exists() and (root / "ir" / "mid").exists()
    assert (root / "ir" / ".x.partial").exists() and (root / "hashes.json").exists()
    assert [e.path.name for e in cache.prune(0)] == ["mid", "new"]


def test_touch_moves_an_entry_to_the_back(root):
    cache.touch(root / "ir" / "old")
    assert [e.path.name for e in cache.prune(3500)] == ["mid", "new"]  # 'old' (3000) was just used


def test_grace_period_protects_recent_entries(root):
    gone = cache.prune(0, grace_s=600)
    assert [e.path.name for e in gone] == ["old", "mid"]  # 'new' was used a minute ago


@pytest.mark.parametrize("value, cap", [("", int(cache.DEFAULT_MAX_GB * 1e9)), ("0", None), ("off", None),
                                        ("1.5", 1_500_000_000)])
def test_cap_from_env(monkeypatch, value, cap):
    monkeypatch.setenv("HWNAS_CACHE_MAX_GB", value)
    assert cache.max_bytes() == cap


def test_automatic_cap_after_a_command(root, monkeypatch):
    monkeypatch.setenv("HWNAS_CACHE_MAX_GB", "0.0000045")  # 4500 bytes
    r = CliRunner().invoke(main, ["verify", str(root / "nothing")])
    assert r.exit_code == 2 and (root / "ir" / "old").exists()  # a failed command leaves the cache alone
    r = CliRunner().invoke(main, ["cache", "show"])
    assert (root / "ir" / "old").exists()  # `hwnas cache` itself never evicts
    from hwnas.cli import _enforce_cache_cap  # what runs after every successful command

    class Ctx:
        invoked_subcommand = "eval"

    _enforce_cache_cap(Ctx())
    assert not (root / "ir" / "old").exists() and (root / "ir" / "mid").exists() and (root / "models" / "new").exists()


def test_cli_show_clear_prune(root):
    r = CliRunner().invoke(main, ["cache"])
    assert r.exit_code == 0, r.output
    line = next(ln for ln in r.output.splitlines() if ln.startswith("ir "))
    assert line.split()[:2] == ["ir", "2"] and "0.0 MB" in line
    assert str(root) in r.output and "20.00 GB" in r.output
    r = CliRunner().invoke(main, ["cache", "prune", "--max-gb", "0.0000035"])
    assert r.exit_code == 0 and "deleted 1 least recently used entries" in r.output and "ir/old" in r.output
    r = CliRunner().invoke(main, ["cache", "clear", "--kind", "models"])
    assert r.exit_code == 0 and "deleted 1 entries" in r.output
    assert [e.path.name for e in cache.entries()] == ["mid"]
    r = CliRunner().invoke(main, ["cache", "clear", "--kind", "modles"])
    assert r.exit_code == 2 and "did you mean 'models'" in r.output
    r = CliRunner().invoke(main, ["cache", "prune", "--max-gb", "-1"])
    assert r.exit_code == 2 and "'--max-gb'" in r.output
    assert CliRunner().invoke(main, ["cache", "clear"]).exit_code == 0 and cache.entries() == []


NOBODY = 65534


def _clear_as(uid, root) -> tuple[int, int]:
    """cache.clear(["test-models"]) run as `uid` in a forked child (its result through a pipe), or here when None.

    Forked, not a new interpreter: the interpreter may live where `nobody` cannot read it (/root)."""
    if uid is None:
        return cache.clear(["test-models"], root=root)
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgid(uid)
            os.setuid(uid)
            os.write(wr, repr(cache.clear(["test-models"], root=root)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(wr)
    out = os.read(rd, 1000).decode()
    os.close(rd)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and out, "clear failed in the child"
    return eval(out)  # noqa: S307 - a tuple of two ints from our own child


def test_read_only_entries_are_deletable(tmp_path):
    """A read-only entry (the tests' shared model folder) is deleted whole, trash included.

    Permission bits do not bind root, and CI runs as root: there the clear runs in a child process as
    user nobody, owner of the entry, for whom a read-only folder's files cannot be unlinked until
    `cache.remove` makes the folder writable again."""
    import shutil
    import tempfile
    from pathlib import Path

    as_root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="hwnas-ro-cache-")) if as_root else tmp_path  # tmp_path is root-only
    try:
        r = base / "cache"
        d = _entry(r, "test-models", "ro", 10, 0)
        (d / "sub").mkdir()
        (d / "sub" / "more.bin").write_bytes(b"y")
        if as_root:
            for p in [base, *base.rglob("*")]:
                os.chown(p, NOBODY, NOBODY)
        for f in d.rglob("*.bin"):
            f.chmod(0o444)
        (d / "sub").chmod(0o555)
        d.chmod(0o555)
        assert _clear_as(NOBODY if as_root else None, r) == (1, 11)
        assert list((r / "test-models").iterdir()) == []  # no entry, and no `.deleting-*` trash left behind
    finally:
        if as_root:
            shutil.rmtree(base, ignore_errors=True)
