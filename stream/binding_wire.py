"""The bindings topic's record format: a compact, versioned binary form of a ``Binding``.

Ingest writes every binding to ``<prefix>-bindings`` with ``encode``; the mapping agent and the
stats stage read it back with ``decode``.  Pure: no I/O, no clock.

Byte layout, version 1.  Every integer after the fixed header (text lengths, times, ports,
counters) is a *prefix varint*: a value 0..127 is its own single byte; a larger one is a head
byte ``0x80 + k`` (k = 1..9) followed by the value in k big-endian bytes, no leading zero byte
(one value, one encoding; like CBOR's head, the length is known from the first byte, so the
reader takes the value with one ``int.from_bytes`` instead of a Python loop over 7-bit groups).
Signed values are *zigzag*-mapped first: ``n ≥ 0 → 2n``, ``n < 0 → −2n−1``, so |n| < 2**71::

    offset  size       field
    0       1          version = 0x01
    1       1          header: bits 0-1 kind    (0 radius, 1 dhcp, 2 nat; 3 → bad-kind)
                               bits 2-3 action  (0 start, 1 update, 2 stop, 3 reset)
                               bits 4-5 ip        (0 absent, 1 IPv4, 2 IPv6; 3 → bad-address)
                               bits 6-7 inside_ip (0 absent, 1 IPv4, 2 IPv6; 3 → bad-address)
    2       2          presence bitmap, little-endian: bit i set = optional field i follows
                       (table below); bit 15 is reserved and must be 0
    4       …          operator: text
    …       …          at_ms: signed prefix varint
    …       4|16 + 1   ip, if present: the network address (big-endian) + its prefix length
                       (0..32 / 0..128; host bits set → bad-address, as ``parse_network``)
    …       4|16       inside_ip, if present: the address (big-endian)
    …       …          the present optional fields, in bit order
    end                nothing may follow the last field

    text = prefix-varint byte length + that many bytes of UTF-8

    bit  field           bit  field           bit  field
    0    subscriber  txt  5    client_id  txt  10   port_last      int
    1    session     txt  6    duid       txt  11   octets_in      int
    2    nas         txt  7    circuit_id txt  12   octets_out     int
    3    until_ms    int  8    remote_id  txt  13   session_time_s int
    4    hwaddr      txt  9    port_first int  14   vrf            txt

    (int = zigzag signed prefix varint)

A RADIUS Start on an IPv4 address with a 21-character subscriber, a 10-character session and
a NAS takes 67 bytes against 390 for its JSON; a NAT port block with VRF 42 against 365
(``benchmarks/bench_binding_wire.py``, docs/benchmarks.md).

Byte layout, version 2: a binding with a ``proto`` (the IANA protocol number of a per-protocol
NAT port block or session) is written as version 2, which is version 1 with the version byte
0x02 and one byte more at the very end::

    offset  size       field
    0       1          version = 0x02
    1       …          exactly the version-1 layout from its offset 1 (header, presence bitmap,
                       operator, at_ms, ip, inside_ip, optional fields)
    end-1   1          proto: 0..255 (u8)
    end                nothing may follow

A binding without ``proto`` (every RADIUS and DHCP binding, and a NAT block a box allocated for
all protocols) is still written as version 1, byte for byte as before.  A version-1 reader
refuses a version-2 record as ``unknown-binding-version``, never misreads it as a block of every
protocol; version 2 is rolled out readers first (below).

Validation is the model's: the decoded values go through ``Binding``'s own constructor, so
kind, action, missing address, NAT port range and text rules are checked exactly as for any
other Binding (same reasons).  Text must be strict UTF-8: bytes that are not (including the
UTF-8-encoded surrogates ED A0 80 that Python's JSON decoder lets through) are rejected
``bad-encoding``, the reason ``Binding`` gives a lone surrogate.  A record cut short, with bytes
after its last field, or with a reserved bit set is ``bad-binding``.  Never a traceback.

Versions.  A record whose first byte is not a version this reader knows is rejected
``unknown-binding-version`` (the consumers dead-letter it with that reason, bytes kept).  So a
new version is rolled out readers first: every worker must run a release that reads it before
any worker writes it.  Version 2 is written from the release that reads it, so an upgrade from
a version-1-only release stops the old workers before the new ones start (docs/operations.md);
a version-2 record an old worker did meet is in its dead letters with its bytes.

The old JSON form (``Binding.to_json``, what releases before this one wrote) is still read:
``to_json`` always starts with ``{`` (0x7B), which is not a version byte, so ``decode`` sends
such records to ``Binding.from_json``.  This matters only during an upgrade, for the bindings
topic's own retention: records written by the old release and not yet consumed (or re-read after
a crash, before their offsets were committed) must still become mappings, not dead letters.  The
table's changelog is not affected — it holds sealed interval values, never bindings — so once
the bindings topic's retention (its budget in the retention plan) has passed after the upgrade
no JSON binding is left to read, and JSON reading could be dropped in a later release.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from operator import attrgetter
from typing import Any, Optional

from .errors import Rejected
from .model import ACTIONS, KINDS, Binding, _v4_host

VERSION = 1
VERSIONS = (1, 2)
_V1 = b"\x01"
_V2 = 2
_JSON_START = 0x7B  # "{"

#: Optional fields, in bitmap order; True = text, False = signed integer.
OPTIONAL: tuple[tuple[str, bool], ...] = (
    ("subscriber", True), ("session", True), ("nas", True), ("until_ms", False),
    ("hwaddr", True), ("client_id", True), ("duid", True), ("circuit_id", True),
    ("remote_id", True), ("port_first", False), ("port_last", False), ("octets_in", False),
    ("octets_out", False), ("session_time_s", False), ("vrf", True),
)
_OPT_NAMES = tuple(n for n, _ in OPTIONAL)
_OPT_TEXT = tuple(t for _, t in OPTIONAL)
_RESERVED = 0xFFFF ^ ((1 << len(OPTIONAL)) - 1)
_optional_values = attrgetter(*_OPT_NAMES)  # one C call for the 15 fields
#: where each field sits among Binding's positional parameters
_N_FIELDS = len(Binding.__dataclass_fields__)  # type: ignore[attr-defined]
_FIELD_POS = {name: i for i, name in enumerate(Binding.__dataclass_fields__)}  # type: ignore[attr-defined]
_OPT_POS = tuple(_FIELD_POS[n] for n in _OPT_NAMES)
_KIND_CODE = {k: i for i, k in enumerate(KINDS)}
_ACTION_CODE = {a: i for i, a in enumerate(ACTIONS)}
_MAX_VARINT = 9  # bytes after an integer's head byte
_LIMIT = 1 << 71  # zigzag of |n| < 2**71 fits 9 bytes


class _Truncated(Exception):
    pass


# -- encoding -------------------------------------------------------------------------------

def _uint_out(n: int, out: bytearray) -> None:
    if n < 0x80:
        out.append(n)
    else:
        k = (n.bit_length() + 7) >> 3
        out.append(0x80 + k)
        out += n.to_bytes(k, "big")


def _svarint(v: Any, name: str, out: bytearray) -> None:
    if type(v) is not int:  # bool included: JSON would write true, the wire has no such thing
        raise Rejected("bad-binding", f"{name} must be an integer")
    if not -_LIMIT <= v < _LIMIT:
        raise Rejected("bad-binding", f"{name} is out of the encodable range (±2**71)")
    n = v << 1 if v >= 0 else ((-v) << 1) - 1
    if n < 0x80:
        out.append(n)
    else:
        _uint_out(n, out)


def _text(v: Any, name: str, out: bytearray) -> None:
    if type(v) is not str:
        raise Rejected("bad-binding", f"{name} must be text")
    try:
        data = v.encode("utf-8")
    except UnicodeEncodeError:
        raise Rejected("bad-encoding", f"{name} is not valid Unicode text (lone surrogate)") from None
    n = len(data)
    if n < 0x80:
        out.append(n)
    else:
        _uint_out(n, out)
    out += data


def encode(b: Binding) -> bytes:
    """``b`` in the version-1 layout, or version 2 when it has a ``proto`` (module docstring).  ``Rejected('bad-binding')`` for values
    the layout cannot carry (a non-integer counter, an ``ip`` that is not a network, an integer
    beyond ±2**71) — ``Binding`` itself does not type-check those fields."""
    raw: Any = b  # untyped: the types are checked here (compiled code would check the annotations first)
    ip = raw.ip
    inside = raw.inside_ip
    if ip is None:
        ipf = 0
    elif type(ip) is IPv4Network:
        ipf = 1
    elif type(ip) is IPv6Network:
        ipf = 2
    else:
        raise Rejected("bad-binding", "ip must be an IPv4 or IPv6 network")
    if inside is None:
        inf = 0
    elif type(inside) is IPv4Address:
        inf = 1
    elif type(inside) is IPv6Address:
        inf = 2
    else:
        raise Rejected("bad-binding", "inside_ip must be an IPv4 or IPv6 address")
    present = 0
    values = []
    for i, v in enumerate(_optional_values(b)):
        if v is not None:
            present |= 1 << i
            values.append((_OPT_NAMES[i], v, _OPT_TEXT[i]))
    out = bytearray(_V1)
    proto = raw.proto
    if proto is not None:
        if type(proto) is not int or not 0 <= proto <= 255:
            raise Rejected("bad-binding", "proto must be an IANA protocol number 0..255")
        out[0] = _V2
    out.append(_KIND_CODE[raw.kind] | _ACTION_CODE[raw.action] << 2 | ipf << 4 | inf << 6)
    out.append(present & 0xFF)
    out.append(present >> 8)
    _text(raw.operator, "operator", out)
    _svarint(raw.at_ms, "at_ms", out)
    if ipf:
        out += ip.network_address.packed  # type: ignore[union-attr]
        out.append(ip._prefixlen)  # type: ignore[union-attr]
    if inf:
        out += inside.packed  # type: ignore[union-attr]
    for name, v, is_text in values:
        if is_text:
            _text(v, name, out)
        else:
            _svarint(v, name, out)
    if proto is not None:
        out.append(proto)
    return bytes(out)


# -- decoding -------------------------------------------------------------------------------

#: packed ip + prefix length → network: addresses repeat (every interim update names the same
#: one again); networks are immutable, so sharing is safe.  Bounded, cleared when full.
_NET_CACHE: dict[bytes, Any] = {}
_NET_CACHE_MAX = 1 << 16


def _network(raw: bytes, pos: int, v6: bool) -> Any:
    size = 16 if v6 else 4
    end = pos + size + 1
    if end > len(raw):
        raise _Truncated("ip")
    key = raw[pos:end]
    net = _NET_CACHE.get(key)
    if net is not None:
        return net
    plen = key[size]
    n = int.from_bytes(key[:size], "big")
    try:
        if not v6 and plen == 32:
            net = _v4_host(n)
        elif v6:
            net = IPv6Network((n, plen))
        else:
            net = IPv4Network((n, plen))
    except ValueError:  # prefix length out of range, or host bits set
        raise Rejected("bad-address", "ip is not an IP address or prefix") from None
    if len(_NET_CACHE) >= _NET_CACHE_MAX:
        _NET_CACHE.clear()
    _NET_CACHE[key] = net
    return net


def _uint(raw: bytes, pos: int, name: str) -> tuple[int, int]:
    """The prefix varint at ``pos`` → (value, next position)."""
    c = raw[pos]  # IndexError → truncated (caught in decode)
    if c < 0x80:
        return c, pos + 1
    k = c - 0x80
    if not 1 <= k <= _MAX_VARINT:
        raise Rejected("bad-binding", f"{name}: integer head 0x{c:02x} is not 0x00..0x{0x80 + _MAX_VARINT:02x}")
    end = pos + 1 + k
    if end > len(raw):
        raise _Truncated(name)
    if raw[pos + 1] == 0:
        raise Rejected("bad-binding", f"{name}: integer with a redundant leading zero byte")
    n = int.from_bytes(raw[pos + 1:end], "big")
    if n < 0x80:
        raise Rejected("bad-binding", f"{name}: integer below 128 not in its one-byte form")
    return n, end


def decode(raw: Any) -> Binding:
    """A bindings-topic record → its ``Binding``: the version-1 or version-2 layout, or the old
    JSON form (first byte ``{``; see the module docstring).  Every failure is ``Rejected`` with a reason:
    ``unknown-binding-version``, ``bad-binding`` (empty, truncated, trailing bytes, reserved
    bit, bad integer), ``bad-encoding`` (text not UTF-8), ``bad-address``, or the model's own."""
    if type(raw) is not bytes:
        if isinstance(raw, (bytearray, memoryview)):
            raw = bytes(raw)
        else:
            raise Rejected("bad-binding", "binding record is not bytes")
    if not raw:
        raise Rejected("bad-binding", "empty binding record")
    v = raw[0]
    if v != VERSION:
        if v == _JSON_START:
            return Binding.from_json(raw)
        if v == _V2:
            return _decode_v2(raw)
        raise Rejected("unknown-binding-version",
                       f"binding record version {v} (first byte 0x{v:02x}); this worker reads "
                       f"versions {', '.join(map(str, VERSIONS))} and JSON")
    try:
        return _decode_v1(raw)
    except _Truncated as e:
        raise Rejected("bad-binding", f"binding record truncated (in {e.args[0]})") from None
    except IndexError:
        raise Rejected("bad-binding", "binding record truncated") from None


#: presence bitmap → the present optional fields as (Binding position, is text, name): at most
#: 2**15 plans, in practice one per kind of record
_PLANS: dict[int, tuple[tuple[int, bool, str], ...]] = {}


def _plan(present: int) -> tuple[tuple[int, bool, str], ...]:
    plan = tuple((_OPT_POS[i], _OPT_TEXT[i], _OPT_NAMES[i]) for i in range(len(OPTIONAL)) if present >> i & 1)
    _PLANS[present] = plan
    return plan


def _decode_v2(raw: bytes) -> Binding:
    """Version 2: the version-1 body, then the ``proto`` byte (the module docstring)."""
    if len(raw) < 5:
        raise Rejected("bad-binding", "binding record truncated (in header)")
    try:
        values = _decode_v1(raw[:-1], values_only=True)
    except _Truncated as e:
        raise Rejected("bad-binding", f"binding record truncated (in {e.args[0]})") from None
    except IndexError:
        raise Rejected("bad-binding", "binding record truncated") from None
    values[_PROTO] = raw[-1]
    return Binding(*values)


def _decode_v1(raw: bytes, values_only: bool = False) -> Any:
    L = len(raw)
    if L < 4:
        raise _Truncated("header")
    h = raw[1]
    kind_c, ipf, inf = h & 3, (h >> 4) & 3, h >> 6
    if kind_c == 3:
        raise Rejected("bad-kind", f"kind code 3 is not one of {KINDS}")
    if ipf == 3 or inf == 3:
        raise Rejected("bad-address", "address family code 3 is not IPv4 or IPv6")
    present = raw[2] | raw[3] << 8
    if present & _RESERVED:
        raise Rejected("bad-binding", "reserved presence bit set")
    values: list[Any] = [None] * _N_FIELDS
    values[0] = KINDS[kind_c]
    values[1] = ACTIONS[(h >> 2) & 3]
    # operator
    n = raw[4]
    pos = 5
    if n >= 0x80:
        n, pos = _uint(raw, 4, "operator")
    end = pos + n
    if end > L:
        raise _Truncated("operator")
    try:
        values[2] = raw[pos:end].decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected("bad-encoding", "operator is not valid UTF-8") from None
    # at_ms
    n, pos = _uint(raw, end, "at_ms")
    values[7] = n >> 1 if not n & 1 else -((n + 1) >> 1)
    if ipf:
        values[3] = _network(raw, pos, ipf == 2)
        pos += 17 if ipf == 2 else 5
    if inf:
        end = pos + (16 if inf == 2 else 4)
        if end > L:
            raise _Truncated("inside_ip")
        values[_INSIDE] = (IPv6Address if inf == 2 else IPv4Address)(raw[pos:end])
        pos = end
    if present:
        for at, is_text, name in _PLANS.get(present) or _plan(present):
            n = raw[pos]
            if n < 0x80:
                pos += 1
            else:
                n, pos = _uint(raw, pos, name)
            if is_text:
                end = pos + n
                if end > L:
                    raise _Truncated(name)
                try:
                    values[at] = raw[pos:end].decode("utf-8")
                except UnicodeDecodeError:
                    raise Rejected("bad-encoding", f"{name} is not valid UTF-8") from None
                pos = end
            else:
                values[at] = n >> 1 if not n & 1 else -((n + 1) >> 1)
    if pos != L:
        raise Rejected("bad-binding", f"{L - pos} bytes after the last field")
    if values_only:
        return values
    if ipf and kind_c != _NAT:
        # kind and action come from their code tables, at_ms is an int and every text was
        # decoded as strict UTF-8, so of __post_init__'s checks only the address's and NAT's
        # could fail: neither applies here
        return _unchecked(values)
    return Binding(*values)


_INSIDE = _FIELD_POS["inside_ip"]
_PROTO = _FIELD_POS["proto"]
_NAT = KINDS.index("nat")


def _generate_unchecked() -> Any:
    """``Binding(*values)`` without ``__post_init__`` (see ``_decode_v1``): the model's own
    slot-store construction (``stream.model._BindingInit``), checked at import to build what
    ``Binding`` builds, else ``Binding`` itself."""
    from .model import _BindingInit, parse_network

    names = list(Binding.__dataclass_fields__)  # type: ignore[attr-defined]
    src = (["def _unchecked(v):", "    self = _BindingInit()"]
           + [f"    self.{n} = v[{i}]" for i, n in enumerate(names)]
           + ["    self.__class__ = Binding", "    return self"])
    ns: dict[str, Any] = {"_BindingInit": _BindingInit, "Binding": Binding}
    try:
        exec("\n".join(src), ns)  # noqa: S102 - Binding's own field names
        fn = ns["_unchecked"]
        probe = ["radius", "stop", "op", parse_network("100.64.0.1"), "s", "n/1", "n", 5] + [None] * (len(names) - 8)
        probe[_FIELD_POS["octets_in"]] = 7
        a, b = fn(probe), Binding(*probe)
        if type(a) is Binding and a == b and hash(a) == hash(b) and a.to_json() == b.to_json():
            return fn
    except Exception:  # noqa: BLE001 - an interpreter refusing the swap: construct and validate
        pass
    return lambda v: Binding(*v)


_unchecked = _generate_unchecked()
assert (_FIELD_POS["kind"], _FIELD_POS["action"], _FIELD_POS["operator"], _FIELD_POS["ip"],
        _FIELD_POS["at_ms"]) == (0, 1, 2, 3, 7), "Binding's field order changed: update decode"


def is_json(raw: Optional[bytes]) -> bool:
    """Whether a bindings record is in the old JSON form (its stats record id is taken over
    these very bytes; for a binary record, over ``Binding.to_json()``)."""
    return bool(raw) and raw[0] == _JSON_START  # type: ignore[index]


__all__ = ["VERSION", "VERSIONS", "OPTIONAL", "encode", "decode", "is_json"]
