"""The contract of ``ipanon parse`` (docs/ingest.md): bindings as JSON lines on stdout, rejects as JSON
on stderr, a one-line summary, exit 0 when read and 2 when unreadable or the format is unknown."""

from __future__ import annotations

import io
import json
import sys

from agents.cli import main

GOOD = (b'{"User-Name":"u1","Acct-Status-Type":"Start","Acct-Session-Id":"s1","NAS-IP-Address":"192.0.2.1",'
        b'"Framed-IP-Address":"100.64.0.1","Event-Timestamp":1718000000}\n')
BAD = b'{"User-Name":"u2","Acct-Status-Type":"Start"}\n'


def test_bindings_rejects_and_summary(tmp_path, capsys):
    f = tmp_path / "r.jsonl"
    f.write_bytes(GOOD + BAD + b"not json\n")
    assert main(["parse", "--format", "radius-json", "--operator", "junet", str(f)]) == 0
    out, err = capsys.readouterr()
    (line,) = out.splitlines()
    b = json.loads(line)
    assert (b["kind"], b["action"], b["operator"], b["ip"], b["subscriber"], b["session"], b["at_ms"]) == (
        "radius", "start", "junet", "100.64.0.1", "u1", "192.0.2.1/s1", 1718000000000)
    errs = err.splitlines()
    rejects = [json.loads(e) for e in errs[:-1]]
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (BAD.decode().strip(), "missing-timestamp"), ("not json", "bad-json")]
    assert errs[-1] == "ipanon: 3 records, 1 bindings, 2 rejected (missing-timestamp ×1, bad-json ×1)"


def test_stdin_and_auto_reports_its_choice(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(GOOD)))
    assert main(["parse", "--format", "auto", "-"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["ip"] == "100.64.0.1"
    assert "ipanon: auto: -: radius-json ×1" in err


def test_unreadable_file_and_unknown_format_exit_2(tmp_path, capsys):
    assert main(["parse", "--format", "radius-json", str(tmp_path / "missing")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["parse", "--format", "no-such-format", str(tmp_path)]) == 2
    assert "unknown-format" in capsys.readouterr().err
