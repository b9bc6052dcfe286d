"""Deterministic NAT (RFC 7422): public address + port → inside address, computed from
configuration, with no log line at all.

A profile lists the *versions* of the CGN's deterministic configuration (``[[deterministic_nat]]``)::

    [[deterministic_nat]]
    version = 1
    valid_from = "2026-01-01T00:00:00Z"
    valid_to = "2026-07-01T00:00:00Z"      # absent: still in force
    inside = "100.64.0.0/22"               # RFC 6598 space behind the CGN
    outside = "198.51.100.0/28"            # the public pool
    ratio = 64                             # inside addresses per public address
    ports_per_host = 1000
    first_port = 1024                      # default 1024
    realm = "bng-north"                    # optional: the routing realm of the inside range

The mapping (RFC 7422 §2, REFERENCE.md §5), with ``k = in − inside_base``::

    out_ip  = outside_base + k // ratio
    lo_port = first_port + ports_per_host · (k mod ratio),   hi_port = lo_port + ports_per_host − 1

and its inverse for a lookup.  Load-time checks refuse a configuration that would make a public
port mean two things: the port range must fit (``first_port + ratio·ports_per_host − 1 ≤
65535``), the public pool must cover the inside range (``|inside| ≤ |outside|·ratio``), version
numbers are unique, and two versions whose validity overlaps must not share a public address.

Retention: a version's mappings end at ``valid_to``; like logged mappings they may be answered
only until ``valid_to + keep_ms`` (the operator's lawful-access promise).  After that the
version is *expired*: ``lookup`` ignores it and ``expired_versions`` names it so the profile
can drop it.  A version still in force never expires.  Pure: the caller passes ``now_ms``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Optional

from .errors import ConfigError
from .parse._time import iso_to_ms

_KEYS = {"version", "valid_from", "valid_to", "inside", "outside", "ratio", "ports_per_host", "first_port",
         "realm"}


@dataclass(frozen=True)
class DetNatVersion:
    version: int
    valid_from_ms: int
    valid_to_ms: Optional[int]  # None: still in force
    inside: ipaddress.IPv4Network
    outside: ipaddress.IPv4Network
    ratio: int
    ports_per_host: int
    first_port: int = 1024
    realm: Optional[str] = None

    def valid_at(self, at_ms: int) -> bool:
        return self.valid_from_ms <= at_ms and (self.valid_to_ms is None or at_ms < self.valid_to_ms)

    def expired(self, now_ms: int, keep_ms: int) -> bool:
        return self.valid_to_ms is not None and now_ms >= self.valid_to_ms + keep_ms

    def public_for(self, inside: str) -> Optional[tuple[str, int, int]]:
        """(public address, first port, last port) of an inside address, or None if outside the range."""
        a = ipaddress.ip_address(inside)
        if a not in self.inside:
            return None
        k = int(a) - int(self.inside.network_address)
        out = ipaddress.IPv4Address(int(self.outside.network_address) + k // self.ratio)
        lo = self.first_port + self.ports_per_host * (k % self.ratio)
        return str(out), lo, lo + self.ports_per_host - 1

    def inside_for(self, public: str, port: int) -> Optional[tuple[str, int, int]]:
        """(inside address, block first port, block last port) owning ``public:port``, or None."""
        a = ipaddress.ip_address(public)
        if a.version != 4 or a not in self.outside:
            return None
        j, rem = divmod(port - self.first_port, self.ports_per_host)
        if port < self.first_port or j >= self.ratio:
            return None
        k = (int(a) - int(self.outside.network_address)) * self.ratio + j
        if k >= self.inside.num_addresses:
            return None
        lo = port - rem
        return str(ipaddress.IPv4Address(int(self.inside.network_address) + k)), lo, lo + self.ports_per_host - 1


@dataclass(frozen=True)
class Match:
    version: int
    inside_ip: str
    port_first: int
    port_last: int
    from_ms: int           # the version's validity, clipped by nothing: the caller clips to its query
    to_ms: Optional[int]
    realm: Optional[str]


def _err(file: str, i: int, key: str, msg: str) -> ConfigError:
    return ConfigError(f"{file}: deterministic_nat[{i}].{key}: {msg}")


def _int(t: dict, file: str, i: int, key: str, default: Optional[int] = None) -> int:
    v = t.get(key, default)
    if v is None:
        raise _err(file, i, key, "missing")
    if not isinstance(v, int) or isinstance(v, bool):
        raise _err(file, i, key, "expected an integer")
    return v


def _time(t: dict, file: str, i: int, key: str) -> int:
    v = t.get(key)
    if not isinstance(v, str):
        raise _err(file, i, key, "expected an ISO 8601 time with a zone, e.g. 2026-01-01T00:00:00Z")
    from .errors import Rejected

    try:
        return iso_to_ms(v)
    except Rejected as e:
        raise _err(file, i, key, e.detail) from None


def _net(t: dict, file: str, i: int, key: str) -> ipaddress.IPv4Network:
    v = t.get(key)
    try:
        net = ipaddress.IPv4Network(v, strict=True) if isinstance(v, str) else None
    except ValueError as e:
        raise _err(file, i, key, str(e)) from None
    if net is None:
        raise _err(file, i, key, "expected an IPv4 prefix such as 100.64.0.0/22")
    return net


def parse_versions(raw: Any, *, file: str) -> tuple[DetNatVersion, ...]:
    """The profile's ``[[deterministic_nat]]`` array → checked versions (ConfigError names file and field)."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise ConfigError(f"{file}: deterministic_nat: expected an array of tables ([[deterministic_nat]])")
    out: list[DetNatVersion] = []
    for i, t in enumerate(raw):
        unknown = sorted(set(t) - _KEYS)
        if unknown:
            raise _err(file, i, unknown[0], f"unknown key (allowed: {', '.join(sorted(_KEYS))})")
        v = DetNatVersion(
            version=_int(t, file, i, "version"),
            valid_from_ms=_time(t, file, i, "valid_from"),
            valid_to_ms=_time(t, file, i, "valid_to") if "valid_to" in t else None,
            inside=_net(t, file, i, "inside"), outside=_net(t, file, i, "outside"),
            ratio=_int(t, file, i, "ratio"), ports_per_host=_int(t, file, i, "ports_per_host"),
            first_port=_int(t, file, i, "first_port", 1024),
            realm=t.get("realm"))
        if v.realm is not None and not isinstance(v.realm, str):
            raise _err(file, i, "realm", "expected a string")
        if v.valid_to_ms is not None and v.valid_to_ms <= v.valid_from_ms:
            raise _err(file, i, "valid_to", "must be after valid_from")
        if v.ratio < 1 or v.ports_per_host < 1 or not 0 < v.first_port <= 65535:
            raise _err(file, i, "ratio", "ratio, ports_per_host and first_port must be positive")
        if v.first_port + v.ratio * v.ports_per_host - 1 > 65535:
            raise _err(file, i, "ports_per_host", f"{v.ratio} hosts × {v.ports_per_host} ports from port "
                                                  f"{v.first_port} run past 65535")
        if v.inside.num_addresses > v.outside.num_addresses * v.ratio:
            raise _err(file, i, "outside", f"{v.outside} × ratio {v.ratio} cannot cover {v.inside}")
        for j, o in enumerate(out):
            if o.version == v.version:
                raise _err(file, i, "version", f"version {v.version} is listed twice")
            overlap_t = (o.valid_to_ms is None or v.valid_from_ms < o.valid_to_ms) and \
                        (v.valid_to_ms is None or o.valid_from_ms < v.valid_to_ms)
            if overlap_t and o.outside.overlaps(v.outside):
                raise _err(file, i, "outside", f"overlaps deterministic_nat[{j}] (version {o.version}) "
                                               f"while both are valid: a public port would map to two insides")
        out.append(v)
    return tuple(out)


def lookup(versions: tuple[DetNatVersion, ...], public: str, port: Optional[int], from_ms: int, to_ms: int,
           *, now_ms: int, keep_ms: int) -> list[Match]:
    """Every version valid during ``[from_ms, to_ms)`` (and not expired at ``now_ms``) that maps
    ``public:port`` to an inside address.  ``port`` None matches nothing: a public address alone
    is ambiguous under deterministic NAT as under any CGNAT (RFC 6302) — the caller says so."""
    if port is None:
        return []
    out = []
    for v in versions:
        if v.expired(now_ms, keep_ms):
            continue
        if v.valid_to_ms is not None and v.valid_to_ms <= from_ms or to_ms <= v.valid_from_ms:
            continue
        m = v.inside_for(public, port)
        if m is not None:
            out.append(Match(v.version, m[0], m[1], m[2], v.valid_from_ms, v.valid_to_ms, v.realm))
    return out


def covers(versions: tuple[DetNatVersion, ...], public: str, from_ms: int, to_ms: int, *, now_ms: int,
           keep_ms: int) -> bool:
    """Is ``public`` in a deterministic pool during the interval (so a port-less lookup is ambiguous)?"""
    a = ipaddress.ip_address(public)
    return any(a.version == 4 and a in v.outside and not v.expired(now_ms, keep_ms)
               and not (v.valid_to_ms is not None and v.valid_to_ms <= from_ms or to_ms <= v.valid_from_ms)
               for v in versions)


def expired_versions(versions: tuple[DetNatVersion, ...], *, now_ms: int, keep_ms: int) -> list[int]:
    """Version numbers whose mappings are past their retention: drop them from the profile."""
    return [v.version for v in versions if v.expired(now_ms, keep_ms)]
