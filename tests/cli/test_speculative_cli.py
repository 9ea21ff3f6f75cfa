"""`hwnas export --speculative` option errors: one line, exit 2, nothing written, before any model is loaded."""
from __future__ import annotations

from click.testing import CliRunner

from hwnas.cli import main
from tests.conftest import one_line_error


def test_draft_needs_speculative(tmp_path):
    r = CliRunner().invoke(main, ["export", "--draft", '{"layers": [0], "mlp_widths": [8]}', "--out", str(tmp_path / "o")])
    one_line_error(r, "--draft and --draft-tokens go with --speculative")
    r = CliRunner().invoke(main, ["export", "--draft-tokens", "5", "--out", str(tmp_path / "o")])
    one_line_error(r, "--draft and --draft-tokens go with --speculative")
    assert not (tmp_path / "o").exists()


def test_speculative_bundle_is_the_whole_model(tmp_path):
    r = CliRunner().invoke(main, ["export", "--speculative", "--layers", "4", "--out", str(tmp_path / "o")])
    one_line_error(r, "with --speculative the bundle is the whole model", "--draft or --from/--pick")
    assert not (tmp_path / "o").exists()


def test_bad_draft_tokens(tmp_path):
    r = CliRunner().invoke(main, ["export", "--speculative", "--draft-tokens", "0", "--draft",
                                  '{"layers": [0], "mlp_widths": [8]}', "--model", "x", "--out", str(tmp_path / "o")])
    one_line_error(r, "--draft-tokens 0 is invalid; accepted: 1 to 16")
    assert not (tmp_path / "o").exists()
