"""``ipanon crypt``: its contract (docs/pseudonymisation.md), through ``agents.cli.main`` as the
shell calls it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from agents.cli import main

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "unit" / "vectors" / "ipcrypt.json").read_text())
PFX_KEY = "0123456789abcdeffedcba98765432101032547698badcfeefcdab8967452301"
CPAN_KEY = bytes([21, 34, 23, 141, 51, 164, 207, 128, 19, 10, 91, 22, 73, 144, 125, 16, 216, 152, 143,
                  131, 121, 121, 101, 39, 98, 87, 76, 45, 42, 132, 34, 2]).hex()


def _run(capsys, monkeypatch, argv, stdin=None):
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("scheme,rows", [("ipcrypt-det", VECTORS["det"]), ("ipcrypt-pfx", VECTORS["pfx"])])
def test_vectors_through_the_cli_both_directions(capsys, monkeypatch, scheme, rows):
    for key, plain, cipher in rows:
        rc, out, err = _run(capsys, monkeypatch, ["crypt", "encrypt", "--scheme", scheme, "--key", key, plain])
        assert (rc, out, err) == (0, cipher + "\n", "")
        rc, out, err = _run(capsys, monkeypatch, ["crypt", "decrypt", "--scheme", scheme, "--key", key, cipher])
        assert (rc, out, err) == (0, plain + "\n", "")


def test_stdin_one_per_line_in_order_blank_lines_skipped(capsys, monkeypatch):
    rc, out, err = _run(capsys, monkeypatch,
                        ["crypt", "encrypt", "--scheme", "cryptopan", "--key", CPAN_KEY],
                        stdin="128.11.68.132\n\n  64.39.15.238  \n2001:db8::1\n")
    assert rc == 0 and err == ""
    assert out.splitlines() == ["135.242.180.132", "0.219.7.41", "4401:2bc:603f:d91d:27f:ff8e:e6f1:dc1e"]
    rc, out2, _ = _run(capsys, monkeypatch, ["crypt", "decrypt", "--scheme", "cryptopan", "--key", CPAN_KEY],
                       stdin=out)
    assert out2.splitlines() == ["128.11.68.132", "64.39.15.238", "2001:db8::1"]


def test_several_arguments_keep_their_order(capsys, monkeypatch):
    rc, out, _ = _run(capsys, monkeypatch, ["crypt", "encrypt", "--scheme", "ipcrypt-pfx", "--key", PFX_KEY,
                                            "192.0.2.1", "0.0.0.0", "2001:db8::1"])
    assert rc == 0
    assert out.splitlines() == ["100.115.72.131", "151.82.155.134", "c180:5dd4:2587:3524:30ab:fa65:6ab6:f88"]


@pytest.mark.parametrize("argv,needle", [
    (["--scheme", "ipcrypt-det", "--key", PFX_KEY], "16 bytes"),
    (["--scheme", "ipcrypt-pfx", "--key", PFX_KEY[:32]], "32 bytes"),
    (["--scheme", "cryptopan", "--key", "abc"], "hexadecimal"),
    (["--scheme", "ipcrypt-pfx", "--key", PFX_KEY[:32] * 2], "halves must differ"),
])
def test_bad_keys_are_one_line_exit_2(capsys, monkeypatch, argv, needle):
    rc, out, err = _run(capsys, monkeypatch, ["crypt", "encrypt", *argv, "192.0.2.1"])
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and needle in err
    assert PFX_KEY[:16] not in err


def test_bad_address_argument_is_one_line_exit_2_without_echo(capsys, monkeypatch):
    rc, out, err = _run(capsys, monkeypatch, ["crypt", "encrypt", "--scheme", "ipcrypt-pfx", "--key", PFX_KEY,
                                              "192.0.2.1", "192.0.2.999", "fe80::1%eth0"])
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "argument 2" in err and "192.0.2.999" not in err


def test_bad_stdin_line_prints_what_came_before_then_fails(capsys, monkeypatch):
    rc, out, err = _run(capsys, monkeypatch, ["crypt", "encrypt", "--scheme", "ipcrypt-pfx", "--key", PFX_KEY],
                        stdin="0.0.0.0\n\n255.255.255.255\nsubscriber-7\n192.0.2.1\n")
    assert rc == 2
    assert out.splitlines() == ["151.82.155.134", "94.185.169.89"]
    assert err.count("\n") == 1 and "stdin line 4" in err and "subscriber-7" not in err


def test_help_has_an_example(capsys):
    with pytest.raises(SystemExit) as e:
        main(["crypt", "--help"])
    assert e.value.code == 0
    assert "example:" in capsys.readouterr().out
