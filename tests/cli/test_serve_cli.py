"""`hwnas serve` refuses to start, with one line, on a bundle that fails verification or a bad option."""
from __future__ import annotations

import shutil
import socket

import pytest
from click.testing import CliRunner

from hwnas.cli import main
from tests.conftest import one_line_error


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    from hwnas.deploy.export import export_bundle
    from hwnas.deploy.quantize import make_recipe
    from tests.conftest import TINY_TARGET, make_tiny_llama, make_tiny_tokenizer

    root = tmp_path_factory.mktemp("serve-cli")
    make_tiny_llama().save_pretrained(root / "m")
    make_tiny_tokenizer().save_pretrained(root / "m")
    (root / "tiny.toml").write_text(TINY_TARGET)
    return export_bundle(str(root / "m"), root / "b", recipe=make_recipe("int8"), target=str(root / "tiny.toml"),
                         measure=False, generation_check=False).path  # random weights: nothing to check


def test_tampered_bundle_refuses_to_start(tiny_bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    p = b / "openvino_model.bin"
    data = bytearray(p.read_bytes())
    data[len(data) // 3] ^= 0x01
    p.write_bytes(bytes(data))
    r = CliRunner().invoke(main, ["serve", str(b), "--port", "1"])
    one_line_error(r, f"bundle {b} failed verification, not serving it",
                   "openvino_model.bin checksum mismatch")


def test_extra_file_refuses_to_start(tiny_bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    (b / "evil.py").write_text("print(1)")
    r = CliRunner().invoke(main, ["serve", str(b)])
    one_line_error(r, "unexpected file evil.py")


def test_missing_bundle_and_unknown_target(tmp_path, tiny_bundle):
    one_line_error(CliRunner().invoke(main, ["serve", str(tmp_path / "nope")]), "nope is not a folder")
    one_line_error(CliRunner().invoke(main, ["serve", str(tiny_bundle), "--target", "nosuch"]), "nosuch")


def test_port_in_use_is_one_line(tiny_bundle):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = CliRunner().invoke(main, ["serve", str(tiny_bundle), "--port", str(port)])
    one_line_error(r, f"cannot listen on 127.0.0.1:{port}", "choose another --port")
