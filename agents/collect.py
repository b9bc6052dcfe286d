"""A small syslog receiver (UDP and TCP on one port) that hands every message, unparsed, to a sink.

Used by ``ipanon collect syslog``; the sink there publishes to the raw NAT topic.  Framing:

- UDP (RFC 5426 / RFC 3164 §4): one datagram is one message.
- TCP (RFC 6587): *octet counting* when a frame starts with a decimal length and a space
  (``"123 <134>1 2024-…"``, what RFC 5425/6587 senders such as rsyslog ``omfwd`` with
  ``TCP_Framing="octet-counted"`` use), else *non-transparent* framing: a message ends at LF
  (a CR before it and NUL trailers are dropped).  Both may alternate on one connection.
- Trailing CR/LF/NUL are stripped; empty messages are dropped.  A message longer than
  ``MAX_MESSAGE`` (64 KiB) closes the TCP connection (the stream cannot be re-synchronised
  reliably) and is counted in ``oversized``.

The message bytes are passed on exactly as received otherwise — including ``<PRI>`` and the
RFC 3164/5424 header, which the NAT parsers use for the time and the device name.

``IpfixCollector`` receives IPFIX (RFC 7011) over UDP for ``ipanon collect ipfix``: each
datagram is one IPFIX message, which ``stream.parse.ipfix.Splitter`` (templates per exporter and
observation domain, with a lifetime) turns into self-contained one-record messages for the sink.
A datagram that is not a well-formed IPFIX message is passed on as it came, so the worker
dead-letters it with its reason.

Single-threaded (``selectors``), bounded by ``max_messages`` and ``duration_s`` so tests and
one-shot runs end by themselves.
"""

from __future__ import annotations

import selectors
import socket
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

MAX_MESSAGE = 64 * 1024

#: sink(message, peer_ip, received_ms)
Sink = Callable[[bytes, str, int], None]


def split_tcp(buf: bytes) -> tuple[list[bytes], bytes]:
    """Cut complete messages off the front of a TCP buffer; return (messages, remainder).

    Raises ``ValueError`` when a frame announces or holds more than ``MAX_MESSAGE`` bytes.
    """
    out: list[bytes] = []
    i = 0
    n = len(buf)
    while i < n:
        # skip stray separators between frames
        while i < n and buf[i] in (0x0A, 0x0D, 0x00):
            i += 1
        if i >= n:
            break
        j = i
        while j < n and 0x30 <= buf[j] <= 0x39 and j - i < 6:
            j += 1
        if j > i and j < n and buf[j] == 0x20 and buf[i] != 0x30:
            length = int(buf[i:j])
            if length > MAX_MESSAGE:
                raise ValueError("octet count too large")
            if n - (j + 1) < length:
                break  # incomplete frame
            msg = buf[j + 1:j + 1 + length]
            i = j + 1 + length
        elif j == n and j > i:
            break  # only digits so far: wait for more
        else:
            k = buf.find(b"\n", i)
            if k < 0:
                if n - i > MAX_MESSAGE:
                    raise ValueError("line too long")
                break
            msg = buf[i:k]
            i = k + 1
        msg = msg.rstrip(b"\r\n\x00")
        if msg:
            out.append(msg)
    return out, buf[i:]


def clean_datagram(data: bytes) -> Optional[bytes]:
    msg = data.rstrip(b"\r\n\x00")
    return msg or None


@dataclass
class Stats:
    udp: int = 0
    tcp: int = 0
    oversized: int = 0
    connections: int = 0
    peers: set = field(default_factory=set)

    @property
    def total(self) -> int:
        return self.udp + self.tcp


class SyslogCollector:
    def __init__(self, host: str, port: int, sink: Sink, *, udp: bool = True, tcp: bool = True) -> None:
        self.sink = sink
        self.stats = Stats()
        self.sel = selectors.DefaultSelector()
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.udp_sock = self.tcp_sock = None
        if tcp:
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            s.listen(64)
            s.setblocking(False)
            port = s.getsockname()[1]
            self.sel.register(s, selectors.EVENT_READ, ("accept", None))
            self.tcp_sock = s
        if udp:
            u = socket.socket(fam, socket.SOCK_DGRAM)
            u.bind((host, port))
            u.setblocking(False)
            port = u.getsockname()[1]
            self.sel.register(u, selectors.EVENT_READ, ("udp", None))
            self.udp_sock = u
        self.address = (host, port)
        self._bufs: dict[socket.socket, bytearray] = {}

    def _emit(self, msg: bytes, peer: str, proto: str) -> None:
        self.stats.peers.add(peer)
        if proto == "udp":
            self.stats.udp += 1
        else:
            self.stats.tcp += 1
        self.sink(msg, peer, int(time.time() * 1000))

    def _close(self, conn: socket.socket) -> None:
        self.sel.unregister(conn)
        self._bufs.pop(conn, None)
        conn.close()

    def serve(self, *, max_messages: Optional[int] = None, duration_s: Optional[float] = None,
              on_tick: Callable[[], None] = lambda: None) -> Stats:
        deadline = None if duration_s is None else time.monotonic() + duration_s
        try:
            while max_messages is None or self.stats.total < max_messages:
                timeout = 0.5
                if deadline is not None:
                    timeout = min(timeout, deadline - time.monotonic())
                    if timeout <= 0:
                        break
                for key, _ in self.sel.select(timeout):
                    kind, peer = key.data
                    sock = key.fileobj
                    if kind == "accept":
                        conn, addr = sock.accept()
                        conn.setblocking(False)
                        self.stats.connections += 1
                        self._bufs[conn] = bytearray()
                        self.sel.register(conn, selectors.EVENT_READ, ("tcp", addr[0]))
                    elif kind == "udp":
                        while True:
                            try:
                                data, addr = sock.recvfrom(MAX_MESSAGE + 1)
                            except BlockingIOError:
                                break
                            if len(data) > MAX_MESSAGE:
                                self.stats.oversized += 1
                                continue
                            msg = clean_datagram(data)
                            if msg:
                                self._emit(msg, addr[0], "udp")
                    else:
                        try:
                            data = sock.recv(65536)
                        except (BlockingIOError, InterruptedError):
                            continue
                        except OSError:
                            data = b""
                        buf = self._bufs[sock]
                        if not data:  # peer closed: a last unterminated line is a message
                            tail = bytes(buf).rstrip(b"\r\n\x00")
                            if tail and not tail[:1].isdigit():
                                self._emit(tail, peer, "tcp")
                            self._close(sock)
                            continue
                        buf += data
                        try:
                            msgs, rest = split_tcp(bytes(buf))
                        except ValueError:
                            self.stats.oversized += 1
                            self._close(sock)
                            continue
                        self._bufs[sock] = bytearray(rest)
                        for m in msgs:
                            self._emit(m, peer, "tcp")
                on_tick()
        finally:
            for conn in list(self._bufs):
                self._close(conn)
            for s in (self.tcp_sock, self.udp_sock):
                if s is not None:
                    self.sel.unregister(s)
                    s.close()
            self.sel.close()
        return self.stats


class IpfixCollector:
    """IPFIX over UDP → self-contained messages (see the module docstring)."""

    def __init__(self, host: str, port: int, sink: Sink, *, template_lifetime_ms: Optional[int] = None) -> None:
        from stream.errors import Rejected
        from stream.parse.ipfix import DEFAULT_TEMPLATE_LIFETIME_MS, Splitter

        self._rejected = Rejected
        self.sink = sink
        self.splitter = Splitter(template_lifetime_ms or DEFAULT_TEMPLATE_LIFETIME_MS)
        self.stats = Stats()
        self.malformed = 0
        self.records_out = 0
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.address = (host, self.sock.getsockname()[1])

    def handle(self, data: bytes, peer: str, received_ms: int) -> None:
        self.stats.udp += 1
        self.stats.peers.add(peer)
        try:
            out = self.splitter.split(data, peer, received_ms)
        except self._rejected:
            self.malformed += 1
            out = [data]
        for msg in out:
            self.records_out += 1
            self.sink(msg, peer, received_ms)

    def serve(self, *, max_messages: Optional[int] = None, duration_s: Optional[float] = None) -> Stats:
        deadline = None if duration_s is None else time.monotonic() + duration_s
        try:
            while max_messages is None or self.stats.total < max_messages:
                timeout = 0.5
                if deadline is not None:
                    timeout = min(timeout, deadline - time.monotonic())
                    if timeout <= 0:
                        break
                self.sock.settimeout(timeout)
                try:
                    data, addr = self.sock.recvfrom(65535)
                except (socket.timeout, BlockingIOError, InterruptedError):
                    continue
                self.handle(data, addr[0], int(time.time() * 1000))
        finally:
            self.sock.close()
        return self.stats
