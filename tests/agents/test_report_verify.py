"""Adversary: ``ipanon report verify`` against a report directory made by someone else.

The DPO's trust is in one key: the operator's report public key.  A report directory is
attacker-controlled input (it is mailed around, copied to shares).  Nothing in it may choose
which key is trusted, add content that passes as part of the report, or claim another operator
than the manifest that was signed."""

from __future__ import annotations

import json
import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agents.cli import main
from agents.commands.report import REPORT_PUB_SUFFIX, write_report
from stream.access import public_key_text

NOW = 1_796_100_000_500


def _report(name="connect2ip"):
    return {"operator": {"name": name, "display_name": "Connect2IP"}, "verdict": {"kept": True, "problems": []}}


@pytest.fixture
def render(monkeypatch):
    # the page's content is not the point here: any bytes signed alike
    from stream import compliance as C

    monkeypatch.setattr(C, "render_html", lambda r: "<html>" + json.dumps(r) + "</html>\n")


def _sign(out, key, report):
    return write_report(out, report, key, NOW)


def _pub(path, key):
    path.write_text(public_key_text(key.public_key()) + "\n")
    return path


def _verify(monkeypatch, keys, d, *extra):
    monkeypatch.setenv("IPANON_KEYS", str(keys))
    return main(["report", "verify", str(d), *extra])


def test_genuine_report_verifies_with_the_default_key(tmp_path, monkeypatch, render, capsys):
    keys = tmp_path / "keys"
    keys.mkdir()
    real = ed25519.Ed25519PrivateKey.generate()
    _pub(keys / f"connect2ip{REPORT_PUB_SUFFIX}", real)
    _sign(tmp_path / "r", real, _report())
    assert _verify(monkeypatch, keys, tmp_path / "r") == 0


@pytest.mark.parametrize("claimed", ["{dir}/connect2ip", "../r/connect2ip", "../../../../../../..{dir}/connect2ip"])  # path-guard
def test_the_manifest_cannot_choose_the_trusted_key(tmp_path, monkeypatch, render, capsys, claimed):
    """Attack: without --key, verify read ``<keys>/<manifest operator>.report.pub``.  A forger
    signs with their own key, ships the public key inside the report directory and names it as
    the operator (an absolute path, or ../ out of the keys directory): before, 'intact'."""
    keys = tmp_path / "keys"
    keys.mkdir()
    _pub(keys / f"connect2ip{REPORT_PUB_SUFFIX}", ed25519.Ed25519PrivateKey.generate())  # the real one
    d = tmp_path / "r"
    forger = ed25519.Ed25519PrivateKey.generate()
    _sign(d, forger, _report(claimed.format(dir=d)))
    _pub(d / f"connect2ip{REPORT_PUB_SUFFIX}", forger)
    rc = _verify(monkeypatch, keys, d)
    out = capsys.readouterr()
    assert rc != 0, out.out
    assert "intact" not in out.out


def test_an_added_file_is_a_change(tmp_path, monkeypatch, render, capsys):
    """The command promises 'exits 0 when the directory is exactly what was signed'.  Before,
    an added page (say an 'addendum.html' with other figures) passed as intact."""
    keys = tmp_path / "keys"
    keys.mkdir()
    real = ed25519.Ed25519PrivateKey.generate()
    pub = _pub(keys / f"connect2ip{REPORT_PUB_SUFFIX}", real)
    d = tmp_path / "r"
    _sign(d, real, _report())
    (d / "addendum.html").write_text("<html>every promise kept</html>")
    assert _verify(monkeypatch, keys, d, "--key", str(pub)) == 1
    assert "addendum.html" in capsys.readouterr().err
    (d / "addendum.html").unlink()
    assert _verify(monkeypatch, keys, d, "--key", str(pub)) == 0


def test_report_json_must_name_the_signed_operator(tmp_path, monkeypatch, render, capsys):
    """A report signed with junet's key whose report.json says connect2ip: verify said 'intact;
    signed by junet's report key' and the page said Connect2IP.  The two must agree."""
    keys = tmp_path / "keys"
    keys.mkdir()
    junet = ed25519.Ed25519PrivateKey.generate()
    _pub(keys / f"junet{REPORT_PUB_SUFFIX}", junet)
    from stream import compliance as C

    d = tmp_path / "r"
    body = (json.dumps(_report("connect2ip"), indent=2, sort_keys=True) + "\n").encode()
    page = C.render_html(_report("connect2ip")).encode()
    m = C.manifest({"report.json": body, "report.html": page}, operator="junet", signed_ms=NOW,
                   public_key=junet.public_key())
    mb, sig = C.sign(m, junet)
    d.mkdir()
    for n, b in (("report.json", body), ("report.html", page), (C.MANIFEST_FILE, mb), (C.SIGNATURE_FILE, sig)):
        (d / n).write_bytes(b)
    assert _verify(monkeypatch, keys, d) == 1
    assert "connect2ip" in capsys.readouterr().err


def test_writing_a_report_never_follows_a_planted_symlink(tmp_path, render):
    """Adversary (a hostile local user; the documented example writes to --out /tmp/junet): the
    directory already exists with report.json a symlink to a file of the operator's.  Before,
    write_report followed it and overwrote that file.  Now it refuses, and the file is intact."""
    from stream.errors import IpanonError

    victim = tmp_path / "authorized_keys"
    victim.write_text("ssh-ed25519 AAAA… operator\n")
    out = tmp_path / "tmp-junet"
    out.mkdir()
    (out / "report.json").symlink_to(victim)
    with pytest.raises(IpanonError, match="a symbolic link"):
        _sign(out, ed25519.Ed25519PrivateKey.generate(), _report())
    assert victim.read_text() == "ssh-ed25519 AAAA… operator\n"
    # a directory others may write is refused too (they could swap files in later)
    other = tmp_path / "open-to-all"
    other.mkdir()
    other.chmod(0o777)
    with pytest.raises(IpanonError, match="writable by others"):
        _sign(other, ed25519.Ed25519PrivateKey.generate(), _report())


def test_a_planted_fifo_does_not_hang_the_report(tmp_path, render):
    from stream.errors import IpanonError

    out = tmp_path / "r"
    out.mkdir()
    os.mkfifo(out / "report.html")
    with pytest.raises(IpanonError, match="not a regular file"):
        _sign(out, ed25519.Ed25519PrivateKey.generate(), _report())
