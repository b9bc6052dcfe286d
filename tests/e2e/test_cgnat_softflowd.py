"""A real IPFIX exporter: Debian's softflowd reads a pcap written here and exports IPFIX over
loopback UDP to ``agents.collect.IpfixCollector``.  softflowd exports flow records, not NAT
events, so this checks the decoder against someone else's encoder (its templates, options
template and data layout) and that a non-NAT record is refused with a reason, never misread.
Skipped where softflowd is not installed (``apt-get install softflowd``)."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import threading

import pytest

from agents.collect import IpfixCollector
from stream.errors import Rejected
from stream.parse import get_format
from stream.parse.ipfix import decode

pytestmark = pytest.mark.skipif(shutil.which("softflowd") is None, reason="softflowd is not installed")

FLOWS = [("100.64.0.7", 5555, "192.0.2.1", 53), ("100.64.0.8", 6666, "192.0.2.2", 123)]


def udp_frame(src: str, sport: int, dst: str, dport: int, payload: bytes = b"x" * 20) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    s = sum(struct.unpack("!10H", ip))
    s = (s & 0xFFFF) + (s >> 16)
    ip = ip[:10] + struct.pack("!H", ~((s & 0xFFFF) + (s >> 16)) & 0xFFFF) + ip[12:]
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + udp


def test_softflowd_ipfix_decodes_as_exported_and_non_nat_records_are_refused(tmp_path):
    pcap = tmp_path / "flows.pcap"
    with open(pcap, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, flow in enumerate(FLOWS + FLOWS[:1]):
            frame = udp_frame(*flow)
            f.write(struct.pack("<IIII", 1718000000 + i, 0, len(frame), len(frame)) + frame)
    out: list[bytes] = []
    col = IpfixCollector("127.0.0.1", 0, lambda msg, peer, ms: out.append(msg))
    t = threading.Thread(target=col.serve, kwargs={"max_messages": 1, "duration_s": 30})
    t.start()
    rc = subprocess.run(["softflowd", "-r", str(pcap), "-n", f"127.0.0.1:{col.address[1]}", "-v", "10", "-d",
                         "-A", "milli", "-p", "sf.pid", "-c", "sf.ctl"],  # relative: a long control-socket
                        cwd=tmp_path, capture_output=True, text=True, timeout=60)  # path makes softflowd hang
    t.join(40)
    assert rc.returncode == 0, rc.stderr
    assert col.stats.udp == 1 and col.malformed == 0
    assert col.splitter.stats.templates >= 1 and col.splitter.stats.unknown_sets == 0
    flows = set()
    for msg in out:
        (rec,) = decode(msg)
        flows.add((rec["sourceIPv4Address"], rec["sourceTransportPort"], rec["destinationIPv4Address"],
                   rec["destinationTransportPort"]))
        assert rec["protocolIdentifier"] == 17
        with pytest.raises(Rejected) as e:
            get_format("ipfix").parse(msg, operator="op")
        assert e.value.reason == "missing-attribute"  # a flow record has no natEvent
    assert flows == set(FLOWS)
