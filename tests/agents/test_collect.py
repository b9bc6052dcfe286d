"""``agents.collect``: syslog framing (RFC 6587) and a real UDP/TCP receive on loopback."""

from __future__ import annotations

import socket
import threading

import pytest

from agents.collect import MAX_MESSAGE, SyslogCollector, split_tcp


def test_octet_counting_and_lf_framing_mix():
    a = b"<134>1 2024-06-10T06:13:20Z h app - - - hello\nworld"  # LF inside a counted frame
    buf = str(len(a)).encode() + b" " + a + b"<14>Jun 11 08:03:09 vsr x\r\n" + b"12 partial"
    msgs, rest = split_tcp(buf)
    assert msgs == [a, b"<14>Jun 11 08:03:09 vsr x"]
    assert rest == b"12 partial"


def test_incomplete_line_waits_and_oversized_frame_raises():
    assert split_tcp(b"<14>no newline yet") == ([], b"<14>no newline yet")
    with pytest.raises(ValueError):
        split_tcp(str(MAX_MESSAGE + 1).encode() + b" x")


def test_udp_and_tcp_messages_reach_the_sink():
    got = []
    col = SyslogCollector("127.0.0.1", 0, lambda m, peer, ms: got.append((m, peer)))
    host, port = col.address
    t = threading.Thread(target=col.serve, kwargs={"max_messages": 3, "duration_s": 20})
    t.start()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(b"<134>udp one\n", (host, port))
    u.close()
    c = socket.create_connection((host, port))
    c.sendall(b"5 hello<134>tcp line\n")
    c.close()
    t.join(25)
    assert not t.is_alive()
    assert sorted(m for m, _ in got) == [b"<134>tcp line", b"<134>udp one", b"hello"]
    assert {p for _, p in got} == {"127.0.0.1"}
    assert col.stats.udp == 1 and col.stats.tcp == 2
