"""``ipanon query submit --proto``: the flow's protocol is signed into the request body (IANA
number; names as vendors write them), and a request without it is the body it always was."""

from __future__ import annotations

import json
import os

import pytest

from agents.cli import main
from tests.conftest import REPO


@pytest.fixture
def base(tmp_path):
    # a copy at 0600: a fresh clone's demo keys carry the umask's mode, which the CLI refuses
    key = tmp_path / "se-police-demo.sign.pem"
    key.write_bytes((REPO / "config" / "keys" / "demo" / "se-police-demo.sign.pem").read_bytes())
    os.chmod(key, 0o600)
    return ["query", "submit", "--authority", "se-police-demo", "--key", str(key), "--basis", "lek-law-enforcement",
            "--case", "AM-1-26", "--address", "198.51.100.7", "--port", "1300", "--from", "1780000000000",
            "--to", "1780000600000", "--number", "7", "--nonce", "ab" * 16, "--issued-ms", "1780000700000",
            "--dry-run"]


def _body(capsys, base, *extra):
    assert main([*base, *extra]) == 0
    return json.loads(capsys.readouterr().out)["body"]


@pytest.mark.parametrize("given,want", [("udp", 17), ("TCP", 6), ("17", 17), ("132", 132)])
def test_proto_is_signed_into_the_body(capsys, base, given, want):
    assert _body(capsys, base, "--proto", given)["proto"] == want


def test_without_proto_the_body_has_no_such_field(capsys, base):
    assert "proto" not in _body(capsys, base)


def test_an_unknown_protocol_is_refused(capsys, base):
    assert main([*base, "--proto", "bogus"]) != 0
    assert "not a protocol number" in capsys.readouterr().err
