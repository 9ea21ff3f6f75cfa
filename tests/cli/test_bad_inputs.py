"""What a user meets on bad input, for every command: exit code 2, one line on stderr starting
`Error: ` that names the option (or the bad value) and what to do, no traceback, nothing written.

Each case must fail before any model is loaded (the whole table runs in seconds). Placeholders:
{model} a tiny model folder, {tmp} the test's empty folder, {data} a data folder, {garbage} a
file that is not an archive, {search} a finished-looking search folder.
"""
from __future__ import annotations

import json
import os
import shlex

import pytest
from click.testing import CliRunner

from hwnas.cli import main

BAD = '{"layers": [0, 99], "mlp_widths": [64, 64]}'
CASES = [
    # extract
    ("extract --model {model} --layers 2", "Missing option '--out'"),
    ("extract --model {model} --out {tmp}/o", "--subnet SPEC or --layers N"),
    ("extract --model /nonexistent/model --layers 2 --out {tmp}/o", "'/nonexistent/model' does not exist"),
    ("extract --model {model} --layers 2 --out /proc/x", "--out /proc/x is not writable"),
    ("extract --model {model} --layers 0 --out {tmp}/o", "--layers must be >= 1"),
    ("extract --model {model} --layers 99 --out {tmp}/o", "--layers 99 is more than the model's 4 layers"),
    ("extract --model {model} --layers 2 --mlp-width 100 --out {tmp}/o", "--mlp-width 100 is not an allowed width"),
    ("extract --model {model} --mlp-width 64 --out {tmp}/o", "--mlp-width needs --layers N"),
    ("extract --model {model} --subnet '" + BAD + "' --out {tmp}/o", "layer 99"),
    ("extract --model {model} --subnet '{\"layers\": [0' --out {tmp}/o", "not valid JSON"),
    ("extract --model {model} --layers 2 --dtype float8 --out {tmp}/o", "'--dtype'"),
    # eval
    ("eval --model {model} --tasks arc_easy,squad --data-dir {data}", "unknown task 'squad'"),
    ("eval --model {model} --split train --data-dir {data}", "'--split'"),
    ("eval --model {model} --limit 0 --data-dir {data}", "'--limit'"),
    ("eval --model {model} --precision fp16 --data-dir {data}", "'--precision'"),
    ("eval --model {model} --tasks boolq --data-dir {data} --out /proc/x.json", "--out /proc/x.json is not writable"),
    ("eval --model {model} --tasks boolq --data-dir {data} --out {tmp}", "is a folder"),
    ("eval --model {model} --tasks boolq --data-dir {data} --subnet '" + BAD + "'", "layer 99"),
    ("eval --model {model} --tasks boolq --data-dir {tmp}/nodata", "data directory not found"),
    ("eval --model {model} --shots -1 --data-dir {data}", "'--shots'"),
    ("eval --model {model} --window 1 --data-dir {data}", "'--window'"),
    # profile
    ("profile --model {model}", "Missing option '--target'"),
    ("profile --target nosuchtarget --model {model}", "nosuchtarget"),
    ("profile --target {target} --samples 0 --model {model}", "--samples must be >= 1"),
    ("profile --target {target} --probe-layers 1 --model {model}", "--probe-layers must be 0"),
    ("profile --target {target} --model {model} --out /proc/x", "--out /proc/x is not writable"),
    ("profile --target {target} --latency-form cubic --model {model}", "'--latency-form'"),
    # search
    ("search --model {model} --strategy lnas --out {tmp}/s", "did you mean 'linas'"),
    ("search --model {model} --metric accnorm --out {tmp}/s", "did you mean 'acc_norm'"),
    ("search --model {model} --metric top1 --out {tmp}/s",
     "'top1' is not one of 'acc_norm', 'acc', 'choice_kl', 'token_kl'"),
    ("search --model {model} --objectives accuracy,tpot_sm --out {tmp}/s", "did you mean 'tpot_ms'"),
    ("search --model {model} --min-accuracy 145 --out {tmp}/s", "'--min-accuracy'"),
    ("search --model {model} --max-tpot-ms -1 --out {tmp}/s", "--max-tpot-ms must be > 0"),
    ("search --model {model} --limit 0 --out {tmp}/s", "'--limit'"),
    ("search --model {model} --report-limit -1 --out {tmp}/s", "'--report-limit'"),
    ("search --model {model} --target {target} --tasks boolq --data-dir {data} --resume --out {tmp}/missing",
     "--resume: {tmp}/missing holds no search to continue"),
    ("search --model {model} --target {target} --tasks boolq --data-dir {data} --resume --out {tmp}",
     "--resume: {tmp} holds no search to continue"),
    ("search --model {model} --target nosuchtarget --out {tmp}/s", "nosuchtarget"),
    ("search --model {model} --quant int4 --out {tmp}/s", "'--quant'"),
    ("search --model {model} --target {target} --tasks boolq --data-dir {data} --space {deployspace} --out {tmp}/s",
     "has a deploy table (deployment genes); it applies with --quant auto only"),
    ("search --model {model} --target {target} --tasks boolq --data-dir {data} --quant auto --space {badformat} "
     "--out {tmp}/s", "unknown weight format 'int3'"),
    ("search --model {model} --target {target} --tasks boolq --data-dir {data} --quant auto --space {badruntime} "
     "--out {tmp}/s", "KV_CACHE_PRECISION='u4' is not accepted"),
    # export
    ("export --model {model} --quant int3 --out {tmp}/b", "did you mean 'int8'"),
    ("export --model {model} --head int4 --out {tmp}/b", "'--head'"),
    ("export --model {model} --out /sys/x", "--out /sys/x is not writable"),
    ("export --model {model} --layers 0 --out {tmp}/b", "--layers must be >= 1"),
    ("export --model {model} --subnet '" + BAD + "' --out {tmp}/b", "layer 99"),
    ("export --model {model} --from {search} --out {tmp}/b", "--from SEARCH_DIR and --pick go together"),
    ("export --model {model} --calibration {tmp}/c.jsonl --out {tmp}/b", "calibration file"),
    ("export --model {model} --target nosuchtarget --out {tmp}/b", "nosuchtarget"),
    ("export --model {model} --limit -1 --out {tmp}/b", "'--limit'"),
    # verify
    ("verify {tmp}/nothing", "does not exist"),
    ("verify {garbage}", "is not a readable .tar.gz/.tar archive"),
    ("verify {tmp} --tolerance 0", "'--tolerance'"),
    # run
    ("run {tmp} -p hi --max-new-tokens -1", "'--max-new-tokens'"),
    ("run {tmp} -p ''", "'--prompt'"),
    ("run {tmp}/nothing -p hi", "'BUNDLE'"),
    # bench
    ("bench {tmp}/nothing", "'BUNDLES...'"),
    ("bench {tmp} --out {tmp}", "'--out'"),
    # train
    ("train --model {model} --data {tmp}/missing.jsonl --steps 1 --out {tmp}/t", "missing.jsonl"),
    ("train --model {model} --data {garbage} --steps 1 --strategy sandwhich --out {tmp}/t", "did you mean 'sandwich'"),
    ("train --model {model} --data {garbage} --out {tmp}/t", "Missing option '--steps'"),
    ("train --model {model} --data {garbage} --steps 0 --out {tmp}/t", "steps"),
    # heal
    ("heal --model {model} --layers 2", "Missing option '--out'"),
    ("heal --model {model} --out {tmp}/h", "give the subnet"),
    ("heal --model {model} --layers 2 --train some --out {tmp}/h", "'--train'"),
    ("heal --model {model} --layers 2 --steps 0 --out {tmp}/h", "'--steps'"),
    ("heal --model {model} --layers 9 --out {tmp}/h", "--layers 9 is more than the model's 4 layers"),
    ("heal --model {model} --from {search} --out {tmp}/h", "--from SEARCH_DIR and --pick go together"),
    ("heal --model {model} --layers 2 --resume --out {tmp}/missing", "--resume: {tmp}/missing holds no heal run"),
    ("heal --model {model} --layers 2 --data {tmp}/missing.jsonl --out {tmp}/h", "missing.jsonl"),
    ("export --model {model} --heal {tmp} --out {tmp}/b", "is not a heal folder"),
    ("eval --model {model} --tasks boolq --data-dir {data} --heal {tmp}", "is not a heal folder"),
    # top level
    ("nosuchcommand", "No such command 'nosuchcommand'"),
]


@pytest.fixture
def places(tmp_path, tiny_model_dir):
    work = tmp_path / "work"
    work.mkdir()
    data = tmp_path / "data"
    (data / "boolq").mkdir(parents=True)
    (data / "boolq" / "val.jsonl").write_text(json.dumps({"question": "q", "passage": "p", "idx": 0, "label": True}) + "\n")
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"this is not an archive\n")
    search = tmp_path / "search"
    search.mkdir()
    (search / "pareto.json").write_text("[]")
    target = tmp_path / "tiny.toml"
    from tests.conftest import TINY_TARGET

    target.write_text(TINY_TARGET)
    spaces = {}
    for name, deploy in (("deployspace", {"formats": ["int8"]}), ("badformat", {"mlp_formats": ["int8", "int3"]}),
                         ("badruntime", {"runtime": {"KV_CACHE_PRECISION": ["u8", "u4"]}})):
        spaces[name] = tmp_path / f"{name}.json"
        spaces[name].write_text(json.dumps({"deploy": deploy}))
    return {"model": str(tiny_model_dir), "tmp": str(work), "data": str(data), "garbage": str(garbage),
            "search": str(search), "target": str(target), **{k: str(v) for k, v in spaces.items()}}


def _forbid_heavy_work(monkeypatch):
    """Bad input must fail before a model is loaded or any stage starts: those entry points raise here."""
    import hwnas.cli.search_cmd
    import hwnas.deploy.export
    import hwnas.model.loading
    import hwnas.model.supernet
    import hwnas.train.heal
    import hwnas.train.instatune

    def heavy(*a, **k):
        raise RuntimeError("heavy work started before the input was checked")

    for mod, name in ((hwnas.model.loading, "load_model"), (hwnas.model.supernet, "load_supernet"),
                      (hwnas.deploy.export, "export_bundle"), (hwnas.cli.search_cmd, "build_validation"),
                      (hwnas.train.instatune, "train"), (hwnas.train.heal, "heal")):
        monkeypatch.setattr(mod, name, heavy)


def _fill(text, places):
    for k, v in places.items():
        text = text.replace("{" + k + "}", v)
    return text


def _listing(*folders):
    return sorted(os.path.join(root, f) for d in folders for root, dirs, files in os.walk(d) for f in files + dirs)


def test_the_table_is_large_enough():
    assert len(CASES) >= 40
    assert {c.split()[0] for c, _ in CASES} >= {"extract", "eval", "profile", "search", "export", "verify", "run",
                                                 "bench", "train", "heal"}


@pytest.mark.parametrize("command, needle", CASES, ids=[c for c, _ in CASES])
def test_bad_input(places, tmp_path, monkeypatch, command, needle):
    monkeypatch.chdir(places["tmp"])
    _forbid_heavy_work(monkeypatch)
    argv = [_fill(a, places) for a in shlex.split(command)]
    needle = _fill(needle, places)
    before = _listing(tmp_path)
    r = CliRunner().invoke(main, argv)
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert r.stdout == "", r.stdout
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in r.stderr
    assert _listing(tmp_path) == before, "a failed command left files behind"


def test_chat_prompt_applies_the_template(tmp_path):
    """`run --chat` wraps the prompt in the bundle tokenizer's chat template (ChatML for SmolLM2)."""
    from hwnas.cli.export_cmd import _chat_prompt
    from tests.conftest import make_tiny_tokenizer

    tok = make_tiny_tokenizer()
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    tok.save_pretrained(tmp_path)
    assert _chat_prompt(str(tmp_path), "Hi") == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_closed_sets_match_the_library():
    from hwnas.cli import common
    from hwnas.deploy.quantize import HEAD_PRECISIONS, QUANT_METHODS
    from hwnas.search.config import STRATEGIES
    from hwnas.search.objectives import SEARCH_METRICS, SEARCH_OBJECTIVES

    # 'mixed' names what a subnet's per-layer weight formats produce; it is recorded, not chosen with --quant
    assert set(common.QUANT_CHOICES) == set(QUANT_METHODS) - {"mixed"} and set(common.HEAD_CHOICES) == set(HEAD_PRECISIONS)
    assert set(common.STRATEGY_CHOICES) == set(STRATEGIES) and common.METRIC_CHOICES == SEARCH_METRICS
    assert set(common.OBJECTIVE_CHOICES) == set(SEARCH_OBJECTIVES)
    from hwnas.cli.train_cmd import TRAIN_PRECISIONS, TRAIN_STRATEGIES
    from hwnas.train.instatune import PRECISIONS, STRATEGIES

    assert set(TRAIN_PRECISIONS) == set(PRECISIONS) and set(TRAIN_STRATEGIES) == set(STRATEGIES)


def test_help_is_instant():
    """`hwnas --help` imports no stage package that pulls in numpy/torch (measured in a fresh process)."""
    import subprocess
    import sys

    code = "import sys, hwnas.cli; print(sorted(m for m in ('numpy', 'torch', 'hwnas.train', 'hwnas.search') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out


def test_one_vocabulary():
    """One flag per concept: -p is the prompt, -q/--quiet silences progress, --limit counts items per task."""
    from hwnas.cli import main

    opts = {name: {o for p in cmd.params for o in p.opts + p.secondary_opts} for name, cmd in main.commands.items()}
    assert "-p" in opts["run"] and "-p" not in opts["search"] and "-n" not in opts["search"] | opts["profile"]
    for name in ("eval", "search", "profile", "export", "bench", "train", "heal"):
        assert {"-q", "--quiet"} <= opts[name], name
    assert "--limit" in opts["export"] and "--limit" in opts["eval"] and "--limit" in opts["search"]
    assert "--json" in opts["verify"] and "--out" in opts["bench"]
    # README: which commands take --seed
    assert {n for n, o in opts.items() if "--seed" in o} == {"eval", "profile", "search", "train", "heal", "export", "bench"}


def test_repeated_warnings_show_once():
    import logging

    from hwnas.cli import OncePerMessage

    f = OncePerMessage()

    def rec(msg, *args, level=logging.WARNING, name="hwnas.hardware.measure"):
        return logging.LogRecord(name, level, __file__, 1, msg, args, None)

    noisy = "%s @%d: timings stayed noisy (TPOT CV %.2f)"
    first = rec(noisy, "a", 1, 0.3)
    assert f.filter(first) and first.getMessage() == "a @1: timings stayed noisy (TPOT CV 0.30) (shown once; -v shows every one)"
    assert not f.filter(rec(noisy, "b", 1, 0.4))
    assert f.filter(rec("another warning"))
    assert f.filter(rec(noisy, "c", 1, 0.5, level=logging.ERROR))  # errors always pass


def test_quiet_third_party_without_verbose(monkeypatch):
    import os

    from hwnas.cli import main

    for var in ("TRANSFORMERS_VERBOSITY", "LOGLEVEL", "COLUMNS"):
        monkeypatch.delenv(var, raising=False)
    assert CliRunner().invoke(main, ["cache", "show"]).exit_code == 0
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "error" and os.environ["LOGLEVEL"] == "ERROR"
    assert os.environ["COLUMNS"] == "400"  # not a terminal: full-width tables
    for var in ("TRANSFORMERS_VERBOSITY", "LOGLEVEL"):
        monkeypatch.delenv(var)
    assert CliRunner().invoke(main, ["-v", "cache", "show"]).exit_code == 0
    assert "TRANSFORMERS_VERBOSITY" not in os.environ and "LOGLEVEL" not in os.environ


def test_tables_are_full_width_when_not_a_terminal(monkeypatch):
    """A rich table wider than 80 columns is printed whole into a pipe (CliRunner is not a terminal)."""
    import click
    from rich.console import Console
    from rich.table import Table

    from hwnas.cli import main

    @main.command("wide-table-probe", hidden=True)
    def probe():
        t = Table(title="a title that stays on its own line")
        for i in range(8):
            t.add_column(f"column number {i}")
        t.add_row(*[f"value-{i}-" + "x" * 12 for i in range(8)])
        Console().print(t)
        click.echo("done")

    try:
        r = CliRunner().invoke(main, ["wide-table-probe"])
    finally:
        main.commands.pop("wide-table-probe")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].strip() == "a title that stays on its own line"
    assert all(f"value-{i}-" + "x" * 12 in r.output for i in range(8))  # nothing cut or wrapped
    assert max(len(ln) for ln in lines) > 150
