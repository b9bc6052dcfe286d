"""A fast, cached front for ``stream.model.parse_network`` (same rules, same rejections).

Profiling the parsers (benchmarks/bench_parsers.py) showed ``ipaddress`` text parsing as the
largest single cost: ~13 µs per IPv4 address on the shared benchmark machine, against ~3 µs for
``IPv4Network(socket.inet_pton(...))``.  glibc's ``inet_pton`` accepts exactly the dotted quads
``ipaddress`` accepts (four decimal octets, no leading zeros, no whitespace), so plain IPv4
text takes that path; everything else (IPv6, prefixes, odd input) goes through
``parse_network`` unchanged.  Results are cached (addresses repeat: every interim update and
lease renewal names the same address again); the cache is bounded and simply cleared when full.
Networks are immutable, so sharing them is safe.
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Network

from ..model import IPNetwork, parse_network

_CACHE: dict[str, IPNetwork] = {}
_MAX = 1 << 16
_AF_INET = socket.AF_INET
_pton = socket.inet_pton


def network(text: str, *, field: str = "address") -> IPNetwork:
    net = _CACHE.get(text)
    if net is not None:
        return net
    if ":" not in text and "/" not in text and 7 <= len(text) <= 15:
        try:
            net = IPv4Network(_pton(_AF_INET, text))
        except (OSError, ValueError):
            net = parse_network(text, field=field)  # stripped text, or the proper rejection
    else:
        net = parse_network(text, field=field)
    if len(_CACHE) >= _MAX:
        _CACHE.clear()
    _CACHE[text] = net
    return net


