"""`ipanon parse` on hostile lease times: a clean rejection with a reason, never ValueError or a
traceback; lease lifetimes bounded by what DHCP can carry (32-bit seconds) and by 2100."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agents.cli import main
from stream.errors import Rejected
from stream.parse import get_format
from tests.conftest import REPO

PREFIX = b"2018-01-06 01:02:03 UTC Address: 192.2.1.100 has been assigned for "
SUFFIX = b" to a device with hardware address: hwtype=1 08:00:2b:02:3f:4e"


def legal(duration: bytes) -> bytes:
    return PREFIX + duration + SUFFIX


AT_MS = 1515200523000  # 2018-01-06 01:02:03 UTC


@pytest.mark.parametrize("duration", [
    b"9" * 4400 + b" hrs 52 mins 15 secs",              # int() of 4 300+ digits raises ValueError
    b"1 hrs " + b"7" * 5000 + b" mins 15 secs",
    b"99999999999999999999999 hrs 0 mins 0 secs",        # 3.6e29 ms
    b"1193046 hrs 28 mins 16 secs",                      # 2**32 s: more than DHCP's 32-bit field
    b"1000000 hrs 0 mins 0 secs",                        # fits 32 bits, but ends after 2100
])
def test_absurd_lease_times_are_rejected_with_a_reason(duration):
    with pytest.raises(Rejected) as e:
        get_format("kea-legal").parse(legal(duration), operator="op")
    assert e.value.reason == "bad-lifetime"


@pytest.mark.parametrize("hrs,mins,secs", [(1, 52, 15), (0, 0, 0), (8760, 0, 0), (700_000, 0, 0)])
def test_real_lease_times_still_parse_exactly(hrs, mins, secs):
    (b,) = get_format("kea-legal").parse(legal(f"{hrs} hrs {mins} mins {secs} secs".encode()), operator="op")
    assert b.until_ms == AT_MS + (hrs * 3600 + mins * 60 + secs) * 1000


def test_ipanon_parse_reports_them_without_a_traceback(tmp_path):
    f = tmp_path / "legal.log"
    f.write_bytes(b"\n".join([legal(b"9" * 4400 + b" hrs 52 mins 15 secs"),
                              legal(b"99999999999999999999999 hrs 0 mins 0 secs"),
                              legal(b"1 hrs 52 mins 15 secs")]) + b"\n")
    p = subprocess.run([sys.executable, "-m", "agents.cli", "parse", "--format", "kea-legal", str(f)],
                       capture_output=True, cwd=REPO, timeout=60)
    err = p.stderr.decode()
    assert p.returncode == 0 and "Traceback" not in err
    assert len(p.stdout.decode().splitlines()) == 1
    rejects = [json.loads(line) for line in err.splitlines()[:-1]]
    assert [r["reason"] for r in rejects] == ["bad-lifetime", "bad-lifetime"]
    assert err.splitlines()[-1] == "ipanon: 3 records, 1 bindings, 2 rejected (bad-lifetime ×2)"


def test_a_parser_bug_is_a_reject_line_not_a_traceback(tmp_path, capsys, monkeypatch):
    import dataclasses

    from stream import parse as P

    fmt = get_format("kea-legal")

    def broken(record, **kw):
        raise ValueError("a bug")

    monkeypatch.setitem(P.FORMATS, "kea-legal", dataclasses.replace(fmt, parse=broken))
    f = tmp_path / "legal.log"
    f.write_bytes(legal(b"1 hrs 52 mins 15 secs") + b"\n")
    assert main(["parse", "--format", "kea-legal", str(f)]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    (reject,) = [json.loads(line) for line in err.splitlines()[:-1]]
    assert (reject["reason"], reject["detail"]) == ("internal-error", "ValueError")
