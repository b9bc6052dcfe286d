"""``ipanon produce`` and ``ipanon collect syslog`` against the project's real local broker."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from agents.cli import main
from agents.topics import H_FORMAT, H_OPERATOR, H_RECEIVED_MS, H_SOURCE

pytestmark = pytest.mark.broker


def consume(bootstrap: str, topic: str, n: int, timeout_s: float = 30.0) -> list:
    from kafka import KafkaConsumer

    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                      consumer_timeout_ms=2000, enable_auto_commit=False)
    out = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < n and time.monotonic() < deadline:
            out.extend(c)
    finally:
        c.close()
    return out


def radius_line(i: int) -> bytes:
    return json.dumps({"User-Name": f"u{i}", "Acct-Status-Type": "Start", "Acct-Session-Id": f"s{i}",
                       "NAS-IP-Address": "192.0.2.1", "Framed-IP-Address": f"100.64.{i // 256}.{i % 256}",
                       "Event-Timestamp": 1718000000 + i}).encode() + b"\n"


def test_produce_radius_json_the_spine_cli(tmp_path, bootstrap, unique, capsys):
    f = tmp_path / "radius.jsonl"
    f.write_bytes(b"".join(radius_line(i) for i in range(500)))
    topic = f"t-produce-{unique}"
    assert main(["produce", "--format", "radius-json", "--topic", topic, "--operator", "junet",
                 "--bootstrap", bootstrap, str(f)]) == 0
    assert "produced 500 records" in capsys.readouterr().err
    msgs = consume(bootstrap, topic, 500)
    assert sorted(m.value for m in msgs) == sorted(radius_line(i).rstrip(b"\n") for i in range(500))
    h = dict(msgs[0].headers)
    assert h[H_FORMAT] == b"radius-json" and h[H_OPERATOR] == b"junet"
    assert h[H_SOURCE].endswith(str(f).encode()) and msgs[0].key == h[H_SOURCE]
    assert len({m.partition for m in msgs}) == 1  # one source, one partition, in order
    assert [m.value for m in sorted(msgs, key=lambda m: m.offset)] == [radius_line(i).rstrip(b"\n") for i in range(500)]


def test_produce_kea_csv_records_parse_alone(bootstrap, unique):
    from stream.parse import get_format


    topic = f"t-kea-{unique}"
    data = __import__("pathlib").Path(__file__).resolve().parents[1] / "data" / "kea" / "kea-leases4.csv"
    rows = data.read_bytes().count(b"\n") - 1
    assert main(["produce", "-f", "kea-csv", "-t", topic, "-b", bootstrap, str(data)]) == 0
    msgs = consume(bootstrap, topic, rows)
    assert len(msgs) == rows
    assert all(len(get_format("kea-csv").parse(m.value, operator="op")) == 1 for m in msgs)


def test_follow_restart_neither_skips_nor_resends(tmp_path, bootstrap, unique):
    log = tmp_path / "nat.log"
    state = tmp_path / "state.json"
    topic = f"t-follow-{unique}"
    line = ('Jun 11 08:03:{:02d} vsr fp-cgnat[1]: USER 100.64.0.{} (matching rule 1): NEW BLOCK '
            '(pool "p", ip public 192.0.2.33, proto 6, port 1 - 512)\n')
    log.write_text("".join(line.format(i, i) for i in range(5)))
    args = ["produce", "-f", "sixwind", "-t", topic, "-b", bootstrap, "--follow", "--state", str(state),
            "--idle-exit", "1", "--commit-interval", "0.1", str(log)]
    assert main(args) == 0
    with open(log, "a") as fh:
        fh.write("".join(line.format(i, i) for i in range(5, 8)))
    (tmp_path / "nat.log").rename(tmp_path / "nat.log.1")
    log.write_text(line.format(8, 8))
    assert main(args) == 0
    msgs = consume(bootstrap, topic, 9)
    values = [m.value.decode() for m in sorted(msgs, key=lambda m: m.offset)]
    assert values == [line.format(i, i).rstrip("\n") for i in range(9)]
    assert all(H_RECEIVED_MS in dict(m.headers) for m in msgs)


def test_collect_syslog_publishes_raw_lines(bootstrap, unique):
    topic = f"t-collect-{unique}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents.cli", "collect", "syslog", "--listen", f"127.0.0.1:{port}",
         "--topic", topic, "--bootstrap", bootstrap, "--max-messages", "2", "--duration", "60"],
        stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(5):  # a "created topic" warning may come first
            if "collecting syslog" in proc.stderr.readline():
                break
        else:
            pytest.fail("collector did not report that it is listening")
        udp = b'<134>Jun 11 08:03:09 vsr fp-cgnat[4269]: USER 100.64.0.1 (matching rule 1): NEW BLOCK (pool "p", ip public 192.0.2.33, proto 6, port 1 - 512)'
        tcp = b"<14>1 2022-04-04T14:45:38Z srx RT_NAT - RT_SRC_NAT_PBA_ALLOC [internal-ip=\"10.0.10.10\"]"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.sendto(udp + b"\n", ("127.0.0.1", port))
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(str(len(tcp)).encode() + b" " + tcp)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    msgs = consume(bootstrap, topic, 2)
    assert sorted(m.value for m in msgs) == sorted([udp, tcp])
    for m in msgs:
        h = dict(m.headers)
        assert h[H_FORMAT] == b"auto" and h[H_SOURCE] == b"syslog:127.0.0.1"
        assert int(h[H_RECEIVED_MS]) > 1_700_000_000_000
