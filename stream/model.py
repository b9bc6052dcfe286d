"""The canonical model: one ``Binding`` per "this address (or prefix, or port block) belongs to
this subscriber from this instant" fact, whatever format it arrived in.

Conventions (DESIGN.md): integer milliseconds named ``*_ms``; addresses are ``ipaddress``
objects inside the core and text only at the edges; instances are frozen and slotted.

``ip`` is always an ``IPv4Network``/``IPv6Network``: a single address is a /32 or /128.  Its
text form (``ip_text``) is the compressed canonical address for a full-length network
(``100.64.12.34``) and ``addr/len`` for a prefix (``2001:db8:200:ab00::/56``).  For NAT
bindings ``ip`` is the *public* address and ``inside_ip`` the private one.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import ipaddress
import json
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Callable, Optional, Union

from .errors import Rejected

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

KINDS = ("radius", "dhcp", "nat")
ACTIONS = ("start", "update", "stop", "reset")

#: Bumped whenever the JSON form of a Binding changes incompatibly.
BINDING_SCHEMA_VERSION = 1


_AF_INET = socket.AF_INET
_pton = socket.inet_pton
_ntop = socket.inet_ntop
_new = object.__new__


def address_text(addr: IPAddress) -> str:
    """``str(addr)``, without ``ipaddress``'s Python-level formatting for IPv4."""
    if type(addr) is IPv4Address:
        return _ntop(_AF_INET, addr._ip.to_bytes(4, "big"))
    return str(addr)


def is_single(net: IPNetwork) -> bool:
    """``net.prefixlen == net.max_prefixlen`` (a single address), without two property calls."""
    return net._prefixlen == net._max_prefixlen


def ip_text(net: IPNetwork) -> str:
    """Compressed canonical text: the bare address for /32 and /128, ``addr/len`` otherwise."""
    if type(net) is IPv4Network and net._prefixlen == 32:  # the common case, without ipaddress's str()
        return _ntop(_AF_INET, net.network_address._ip.to_bytes(4, "big"))
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return net.with_prefixlen


def parse_network(text: str, *, field: str = "address") -> IPNetwork:
    """Parse an address or prefix into a network; reject host bits and odd notations.

    Documented rules: leading/trailing whitespace is stripped; zone ids (``fe80::1%eth0``) are
    rejected (``bad-address``) since a zone is meaningless off-link; an IPv4-mapped IPv6
    address (``::ffff:192.0.2.1``) is kept as IPv6 (it is what the device reported); IPv4
    octets with leading zeros are rejected by Python's ``ipaddress`` (ambiguous octal).
    A prefix with host bits set (``2001:db8::1/64``) is rejected, not silently masked.
    """
    if not isinstance(text, str):
        raise Rejected("bad-address", f"{field} is not an IP address or prefix")
    s = text.strip()
    if not s or "%" in s:
        raise Rejected("bad-address", f"{field} is not an IP address or prefix")
    try:
        if "/" in s:
            return ipaddress.ip_network(s, strict=True)
        addr = ipaddress.ip_address(s)
        return ipaddress.ip_network(addr)
    except ValueError:
        raise Rejected("bad-address", f"{field} is not an IP address or prefix") from None


# -- fast path for the common case: a dotted quad ---------------------------------------------
#
# ``ipaddress`` text parsing and ``IPv4Network.__init__`` were the largest single cost of the
# parsers (benchmarks/bench_parsers.py, docs/benchmarks.md).  glibc's
# ``inet_pton`` accepts exactly the dotted quads ``ipaddress`` accepts (four decimal octets, no
# leading zeros, no whitespace), and a /32 ``IPv4Network`` is four instance attributes, so plain
# IPv4 text builds them directly.  The result is checked against ``IPv4Network`` at import time
# (any difference → the normal constructor is used).  Everything else — IPv6, prefixes, odd
# input — goes through ``parse_network`` unchanged.

_MASK32 = IPv4Network._make_netmask(32)[0]  # ipaddress's cached /32 netmask object


def _v4_host_fast(n: int) -> IPv4Network:
    a = _new(IPv4Address)
    a._ip = n
    net = _new(IPv4Network)
    net.__dict__ = {"network_address": a, "netmask": _MASK32, "_prefixlen": 32,
                    "hosts": lambda: [IPv4Address(n)]}
    return net


def _v4_host_slow(n: int) -> IPv4Network:
    return IPv4Network(n)


def _fast_v4_is_exact() -> bool:
    try:
        for n in (0, 1, 0x64400102, 0xFFFFFFFF):
            fast, slow = _v4_host_fast(n), IPv4Network(n)
            if (fast != slow or hash(fast) != hash(slow) or str(fast) != str(slow)
                    or vars(fast).keys() != vars(slow).keys() or fast.hosts() != slow.hosts()
                    or fast.netmask is not slow.netmask or fast.prefixlen != 32
                    or fast.broadcast_address != slow.broadcast_address):
                return False
        return True
    except Exception:  # a future ipaddress with another layout
        return False


_v4_host = _v4_host_fast if _fast_v4_is_exact() else _v4_host_slow

#: text → network; bounded, simply cleared when full (addresses repeat: every interim update
#: and lease renewal names the same address again).  Networks are immutable: sharing is safe.
_NET_CACHE: dict[str, IPNetwork] = {}
_NET_CACHE_MAX = 1 << 16


def network(text: str, *, field: str = "address") -> IPNetwork:
    """``parse_network`` (same rules, same rejections), cached, with a fast path for IPv4."""
    if type(text) is not str:
        return parse_network(text, field=field)
    net = _NET_CACHE.get(text)
    if net is not None:
        return net
    if 7 <= len(text) <= 15 and ":" not in text and "/" not in text:
        try:
            net = _v4_host(int.from_bytes(_pton(_AF_INET, text), "big"))
        except (OSError, ValueError):
            net = parse_network(text, field=field)  # stripped text, or the proper rejection
    else:
        net = parse_network(text, field=field)
    if len(_NET_CACHE) >= _NET_CACHE_MAX:
        _NET_CACHE.clear()
    _NET_CACHE[text] = net
    return net


@dataclass(frozen=True, slots=True, init=False)
class Binding:
    """One fact about who holds an address, normalised from any input format.

    Frozen and slotted; ``__init__`` (generated below from these fields, keyword or positional,
    same defaults) validates every instance the same way, whoever builds it.
    """

    kind: str
    action: str
    operator: str
    ip: Optional[IPNetwork]  # None only for a RADIUS reset (Accounting-On/Off) of a whole NAS
    subscriber: Optional[str]
    session: Optional[str]
    nas: Optional[str]
    at_ms: int
    until_ms: Optional[int] = None
    hwaddr: Optional[str] = None
    client_id: Optional[str] = None
    duid: Optional[str] = None
    circuit_id: Optional[str] = None
    remote_id: Optional[str] = None
    inside_ip: Optional[ipaddress.IPv4Address | ipaddress.IPv6Address] = None
    port_first: Optional[int] = None
    port_last: Optional[int] = None
    octets_in: Optional[int] = None
    octets_out: Optional[int] = None
    session_time_s: Optional[int] = None
    vrf: Optional[str] = None  # NAT: the VRF / routing instance the CGN logged (realm selection)
    #: NAT: the IANA protocol number (6 TCP, 17 UDP …) the block or session was allocated for;
    #: None = every protocol (the box allocates one block for all, or logs none)
    proto: Optional[int] = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise Rejected("bad-kind", f"kind must be one of {KINDS}")
        if self.action not in ACTIONS:
            raise Rejected("bad-action", f"action must be one of {ACTIONS}")
        if self.ip is None and self.action != "reset":
            raise Rejected("missing-address", "only a reset binding may lack an address")
        if not isinstance(self.at_ms, int) or isinstance(self.at_ms, bool):
            raise Rejected("bad-timestamp", "at_ms must be an integer")
        for v in (self.kind, self.action, self.operator, self.subscriber, self.session, self.nas, self.hwaddr,
                  self.client_id, self.duid, self.circuit_id, self.remote_id, self.vrf):  # = TEXT_FIELDS, unrolled
            if v is not None and (type(v) is not str or not v.isascii()):
                for name in TEXT_FIELDS:  # the rare case: find the field and the reason
                    _check_text(getattr(self, name), name)
                break
        p = self.proto
        if p is not None and (type(p) is not int or not 0 <= p <= 255):
            raise Rejected("bad-binding", "proto must be an IANA protocol number 0..255")
        if self.kind == "nat" and self.action != "reset":
            if self.inside_ip is None:
                raise Rejected("missing-attribute", "NAT binding without inside address")
            if (self.port_first is None) != (self.port_last is None):
                raise Rejected("bad-port-range", "NAT port range needs both ends")
            if self.port_first is not None and not (
                0 <= self.port_first <= self.port_last <= 65535  # type: ignore[operator]
            ):
                raise Rejected("bad-port-range", "NAT port range out of order or > 65535")

    # -- text edges ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON contract of ``ipanon parse`` (and of the bindings topic before
        ``stream.binding_wire``, still read from it): every field, in declaration order; ``ip``
        and ``inside_ip`` as text.  ``proto`` is the one exception: present only when set, so a
        binding without it keeps the JSON (and the stats record id, docs/statistics.md) it had
        before the field existed."""
        return _to_dict(self)

    def to_json(self) -> bytes:
        return _to_json(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Binding":
        try:
            values = [d.get(name) for name in FIELDS]  # positional: cheaper than 20 keywords
            if values[_IP] is not None:
                values[_IP] = network(values[_IP], field="ip")
            if values[_INSIDE_IP] is not None:
                values[_INSIDE_IP] = _address(values[_INSIDE_IP])
            return cls(*values)
        except (TypeError, ValueError) as e:
            raise Rejected("bad-binding", type(e).__name__) from None

    @classmethod
    def from_json(cls, raw: bytes) -> "Binding":
        d = loads_json(raw, "binding is not JSON", "binding is not JSON")
        if not isinstance(d, dict):
            raise Rejected("bad-binding", "binding is not a JSON object")
        return cls.from_dict(d)

    def __repr__(self) -> str:  # never print raw identifiers by accident (logs, tracebacks)
        return f"Binding(kind={self.kind!r}, action={self.action!r}, operator={self.operator!r}, at_ms={self.at_ms})"


#: Field names in declaration order (the key order of ``to_dict``).
FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Binding))
#: Fields ``to_dict`` writes only when set (see ``Binding.to_dict``).
SPARSE_FIELDS = ("proto",)
#: Fields that hold text taken from the input record.
TEXT_FIELDS = ("kind", "action", "operator", "subscriber", "session", "nas", "hwaddr", "client_id", "duid",
               "circuit_id", "remote_id", "vrf")


def _check_text(v: Any, name: str) -> None:
    """Text must be valid Unicode: Python's JSON decoder lets a lone surrogate through (``"\\udca0"``,
    or the UTF-8-encoded surrogate bytes ED A0 80 it decodes with ``surrogatepass``), and such a
    string cannot be encoded again — it would fail the first later stage that does."""
    if type(v) is not str:
        if v is not None:
            raise Rejected("bad-binding", f"{name} must be text")
        return
    if not v.isascii():
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise Rejected("bad-encoding", f"{name} is not valid Unicode text (lone surrogate)") from None
_IP, _INSIDE_IP = FIELDS.index("ip"), FIELDS.index("inside_ip")
_DENSE = tuple(n for n in FIELDS if n not in SPARSE_FIELDS)


def _generate() -> None:
    """``Binding.__init__`` and ``_to_dict``, generated from the fields.

    The ``__init__`` that ``dataclass(frozen=True)`` writes stores each of the 20 fields through
    ``object.__setattr__`` (a slot-wrapper call with an argument tuple each); Binding
    construction is on every parser's hot path, and those calls were a large part of it.  This ``__init__``
    lends the instance, for the duration of the stores, to ``_BindingInit``: a plain class with
    the very same slots (so ``__class__`` assignment is allowed and the memory layout is
    identical), whose attribute stores are ordinary slot stores; then the instance is a
    ``Binding`` again and is validated by ``__post_init__`` exactly as before.  Nothing else can
    see the instance in between.  Same signature, same defaults, same validation.  Subclasses
    (other layouts), and any interpreter where the swap is refused, use per-field descriptor
    stores instead (checked once at import).

    ``_to_dict`` is a dict display instead of a loop over ``dataclasses.fields()``.
    """
    fields = dataclasses.fields(Binding)
    params = ", ".join(f.name if f.default is dataclasses.MISSING else f"{f.name}={f.default!r}"
                       for f in fields)
    ns: dict[str, Any] = {"ip_text": ip_text, "Binding": Binding, "_osa": object.__setattr__,
                          "_BindingInit": _BindingInit}
    slow = [f"def _init_slow(self, {params}):"]
    fast = [f"def _init_fast(self, {params}):",
            "    if type(self) is not Binding:",
            f"        return _init_slow(self, {', '.join(f.name for f in fields)})",
            "    _osa(self, '__class__', _BindingInit)"]
    for f in fields:
        ns[f"_set_{f.name}"] = getattr(Binding, f.name).__set__
        slow.append(f"    _set_{f.name}(self, {f.name})")
        fast.append(f"    self.{f.name} = {f.name}")
    slow.append("    self.__post_init__()")
    fast += ["    self.__class__ = Binding", "    self.__post_init__()"]
    items = []
    for f in fields:
        if f.name in SPARSE_FIELDS:
            continue
        if f.name == "ip":
            items.append("'ip': None if b.ip is None else ip_text(b.ip)")
        elif f.name == "inside_ip":
            items.append("'inside_ip': None if b.inside_ip is None else str(b.inside_ip)")
        else:
            items.append(f"{f.name!r}: b.{f.name}")
    to_dict = ("def _to_dict(b):\n    d = {" + ", ".join(items) + "}\n"
               + "".join(f"    if b.{n} is not None:\n        d[{n!r}] = b.{n}\n" for n in SPARSE_FIELDS)
               + "    return d")
    exec("\n".join(slow) + "\n\n" + "\n".join(fast) + "\n\n" + to_dict, ns)  # noqa: S102 - our field names
    globals()["_to_dict"] = ns["_to_dict"]
    for name in ("_init_fast", "_init_slow"):
        init_fn = ns[name]
        init_fn.__qualname__ = "Binding.__init__"
        Binding.__init__ = init_fn  # type: ignore[method-assign]
        try:  # the fast one must build exactly what the slow one builds, and stay frozen
            probe = Binding("nat", "reset", "op", None, None, None, None, 1, inside_ip=1, port_first=2, port_last=3)
            if type(probe) is Binding and _to_dict(probe) == {**dict.fromkeys(_DENSE), "kind": "nat",
                    "action": "reset", "operator": "op", "at_ms": 1, "inside_ip": "1", "port_first": 2,
                    "port_last": 3}:
                _generate_factories(swap=name == "_init_fast")
                return
        except Exception:  # noqa: BLE001 - any refusal means: use the slow one
            pass
    raise RuntimeError("Binding.__init__ could not be generated")


def _native(cls: type) -> bool:
    """Is ``cls`` a native class compiled by mypyc?  mypyc gives each one ``__mypyc_attrs__``."""
    return "__mypyc_attrs__" in cls.__dict__


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


def freeze(cls: type) -> None:
    """Make the instances of a slotted class whose ``__init__`` declares its attributes ``Final``
    immutable when it runs interpreted.

    Compiled by mypyc, such a class is native and its ``Final`` attributes are read-only: nothing
    to do.  Interpreted, ``Final`` binds only the type checker, so assignment and deletion raise
    ``FrozenInstanceError`` as on a frozen dataclass, and ``__init__`` runs its stores on a mutable
    twin with the same slots (then the instance becomes a ``cls`` again)."""
    if _native(cls):
        return
    twin = type(f"_{cls.__name__}Init", (), {"__slots__": cls.__slots__})  # type: ignore[attr-defined]
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        object.__setattr__(self, "__class__", twin)
        init(self, *args, **kwargs)
        self.__class__ = cls

    type.__setattr__(cls, "__init__", __init__)
    type.__setattr__(cls, "__setattr__", _frozen_setattr)
    type.__setattr__(cls, "__delattr__", _frozen_delattr)


def slot_constructor(cls: type, probe: tuple) -> Callable[..., Any]:
    """``cls`` itself, or a function building exactly what ``cls(*args)`` builds, faster.

    For a frozen slotted class (a frozen dataclass, or one ``freeze`` made immutable), the
    constructor pays an ``object.__setattr__`` per field or a detour through ``__init__``.  The
    function returned stores the ``__init__`` parameters, which must be the slots in order, as
    plain slot stores on an instance of a mutable twin with the same slots, then makes it a
    ``cls`` (``Binding.__init__``'s way, above).  It lives here, in a module that stays
    interpreted: a native class compiled by mypyc is returned as is (its constructor is the fast
    one), as ``cls`` is when the result for ``probe`` differs from ``cls(*probe)`` or is not frozen.
    Same parameters, same defaults."""
    slots = cls.__dict__.get("__slots__")
    if _native(cls) or not slots:
        return cls
    params = list(inspect.signature(cls).parameters.values())
    if tuple(slots) != tuple(p.name for p in params):
        return cls
    twin = type(f"_{cls.__name__}Init", (), {"__slots__": tuple(slots)})
    ns: dict[str, Any] = {"_Twin": twin, "_Cls": cls}
    names = []
    for i, p in enumerate(params):
        if p.default is inspect.Parameter.empty:
            names.append(p.name)
        else:
            ns[f"_d{i}"] = p.default
            names.append(f"{p.name}=_d{i}")
    src = ([f"def _new({', '.join(names)}):", "    self = _Twin()"]
           + [f"    self.{p.name} = {p.name}" for p in params]
           + ["    self.__class__ = _Cls", "    return self"])
    try:
        exec("\n".join(src), ns)  # noqa: S102 - the class's own slot names
        fn = ns["_new"]
        a, b = fn(*probe), cls(*probe)
        if type(a) is cls and a == b and hash(a) == hash(b) and repr(a) == repr(b):
            try:
                setattr(a, params[0].name, getattr(a, params[0].name))
            except AttributeError:  # still frozen
                fn.__qualname__ = fn.__name__ = f"_new_{cls.__name__}"
                return fn
    except Exception:  # noqa: BLE001 - an interpreter refusing the swap: the constructor
        pass
    return cls


#: The fields each kind's parsers set, in the order of the factory's (positional) parameters.
_FACTORIES = {
    "radius_binding": ("radius", ("action", "operator", "ip", "subscriber", "session", "nas", "at_ms",
                                  "octets_in", "octets_out", "session_time_s")),
    "dhcp_binding": ("dhcp", ("action", "operator", "ip", "subscriber", "at_ms", "until_ms", "hwaddr",
                              "client_id", "duid", "circuit_id", "remote_id")),
    "nat_binding": ("nat", ("action", "operator", "ip", "nas", "at_ms", "inside_ip", "port_first",
                            "port_last", "vrf", "proto")),
}


_OPTIONAL_PARAMS = frozenset({"vrf", "proto"})


def _generate_factories(*, swap: bool) -> None:
    """``radius_binding(...)``, ``dhcp_binding(...)``, ``nat_binding(...)``: the parsers' way to
    build a Binding of one kind, with positional parameters (matching 10+ keyword arguments
    against 20 parameters costs more than the stores) and the other fields ``None``.  Same
    instance, same validation as ``Binding(...)``: values that certainly pass
    ``__post_init__``'s checks skip the call, anything else goes through it."""
    ns: dict[str, Any] = {"Binding": Binding, "_BindingInit": _BindingInit, "_ACTIONS": frozenset(ACTIONS)}
    src = []
    for fname, (kind, params) in _FACTORIES.items():
        # trailing optional fields (``vrf``, ``proto``) default to None: callers that do not log one omit it
        src.append(f"def {fname}({', '.join(p + '=None' if p in _OPTIONAL_PARAMS else p for p in params)}):")
        values = {f: (repr(kind) if f == "kind" else f if f in params else "None") for f in FIELDS}
        if swap:
            src.append("    self = _BindingInit()")
            src += [f"    self.{f} = {v}" for f, v in values.items()]
            src.append("    self.__class__ = Binding")
            # certainly valid → done; anything else → __post_init__ decides (and names the reason)
            ok = "action in _ACTIONS and (ip is not None or action == 'reset') and type(at_ms) is int"
            # absent or plain ASCII text is certainly valid
            ok += "".join(f" and ({f} is None or (type({f}) is str and {f}.isascii()))"
                          for f in params if f in TEXT_FIELDS)
            if "proto" in params:
                ok += " and (proto is None or (type(proto) is int and 0 <= proto <= 255))"
            if kind == "nat":
                ok += (" and (action == 'reset' or (inside_ip is not None and ((port_first is None and port_last"
                       " is None) or (type(port_first) is int and type(port_last) is int"
                       " and 0 <= port_first <= port_last <= 65535))))")
            src += [f"    if not ({ok}):", "        self.__post_init__()", "    return self", ""]
        else:
            src.append(f"    return Binding({', '.join(values.values())})")
            src.append("")
    exec("\n".join(src), ns)  # noqa: S102 - our own field names only
    for fname in _FACTORIES:
        globals()[fname] = ns[fname]


def _unset(*_a: Any) -> Binding:
    raise RuntimeError("stream.model factories not generated")


radius_binding: Any = _unset
dhcp_binding: Any = _unset
nat_binding: Any = _unset


#: A plain class with exactly Binding's slots: see ``_generate``.
_BindingInit = type("_BindingInit", (), {"__slots__": Binding.__slots__})
_to_dict: Any = None
_generate()

#: ``json.dumps(d, separators=(",", ":"))`` builds a new encoder per call; this is that encoder.
_dumps = json.JSONEncoder(separators=(",", ":")).encode
_scan_once = json.JSONDecoder().scan_once  # what JSONDecoder.decode runs, minus two regex calls


def _to_json_slow(b: Binding) -> bytes:
    return _dumps(_to_dict(b)).encode()


class _NotPlain(Exception):
    pass


def _plain_int(v: Any) -> str:
    if type(v) is int:
        return int.__repr__(v)  # what json writes for an int
    raise _NotPlain


def _generate_to_json() -> Any:
    """``Binding.to_json`` as one string concatenation: every field is text, an int or None in
    practice, which JSON writes as ``encode_basestring_ascii(text)``, ``int.__repr__`` and
    ``null``; anything else (a float or bool counter from an old JSON record) takes the
    encoder.  The bytes are the stats record id's input (docs/statistics.md), so the result must
    be exactly ``json.dumps(b.to_dict(), separators=(",", ":"))``: checked at import on probes
    (else the encoder is used) and by ``tests/unit/test_core_fastpaths.py``; the encoder's
    ``dict`` → ``str`` pass was ~3x this."""
    parts = []
    for i, name in enumerate(_DENSE):
        head = ("{" if i == 0 else ",") + json.dumps(name) + ":"
        if name == "ip":
            val = "('null' if b.ip is None else _esc(ip_text(b.ip)))"
        elif name == "inside_ip":
            val = "('null' if b.inside_ip is None else _esc(str(b.inside_ip)))"
        elif name in TEXT_FIELDS:
            val = (f"(_esc(b.{name}) if type(b.{name}) is str else 'null' if b.{name} is None "
                   f"else _not_plain())")
        else:
            val = f"('null' if b.{name} is None else _int(b.{name}))"
        parts.append(repr(head) + " + " + val)
    for name in SPARSE_FIELDS:  # only when set (Binding.to_dict)
        parts.append(f"('' if b.{name} is None else {','+json.dumps(name)+':'!r} + _int(b.{name}))")
    src = ("def _to_json(b):\n    try:\n        return (" + "\n            + ".join(parts)
           + " + '}').encode()\n    except _NotPlain:\n        return _slow(b)\n")
    def not_plain() -> str:
        raise _NotPlain
    ns: dict[str, Any] = {"_esc": json.encoder.encode_basestring_ascii, "ip_text": ip_text, "_int": _plain_int,
                          "_not_plain": not_plain, "_NotPlain": _NotPlain, "_slow": _to_json_slow}
    exec(src, ns)  # noqa: S102 - our own field names only
    fast = ns["_to_json"]
    try:
        probes = [Binding("nat", "reset", "op", None, None, None, None, 1, inside_ip=1, port_first=2, port_last=3),
                  Binding("radius", "stop", "op\u00e9\"\\", network("100.64.0.1"), "k\u2603\n", "n/S-1", "n", -5,
                          octets_in=2**70, octets_out=0, session_time_s=3600, vrf="7"),
                  Binding("dhcp", "start", "op", parse_network("2001:db8::/56"), "s", None, None, 3, until_ms=9,
                          hwaddr="aa:bb", client_id="01:aa", duid="x", circuit_id="c", remote_id="r",
                          octets_in=1.5, octets_out=True),
                  Binding("nat", "start", "op", network("192.0.2.1"), None, None, "cgn", 4,
                          inside_ip=IPv4Address("100.64.0.1"), port_first=1024, port_last=2047, vrf="7", proto=17)]
        if all(fast(p) == _to_json_slow(p) for p in probes):
            return fast
    except Exception:  # noqa: BLE001 - anything odd: the encoder
        pass
    return _to_json_slow


_to_json = _generate_to_json()
_JSON_WS = " \t\n\r"


def loads_json(raw: bytes, what: str, too_deep: str) -> Any:
    """``json.loads(raw)`` with the rejections of the JSON edges (``bad-json``).

    ``json.loads`` on bytes sniffs the encoding (UTF-16/32 by NUL bytes, UTF-8 BOM) and decodes
    with ``surrogatepass``; a record that starts with ``{`` followed by a non-NUL byte is UTF-8
    by that sniffing, so it is decoded here directly and everything else goes through
    ``json.loads`` itself — same result, same errors, without the sniffing on every record.
    ``what``/``too_deep``: the details of the two rejections.
    """
    try:
        if raw[:1] == b"{" and raw[1:2] != b"\x00" and type(raw) is bytes:
            s = raw.decode("utf-8", "surrogatepass")
            try:
                obj, end = _scan_once(s, 0)
            except StopIteration:
                raise ValueError("not JSON") from None
            if end != len(s) and s[end:].lstrip(_JSON_WS):
                raise ValueError("extra data")
            return obj
        return json.loads(raw)
    except RecursionError:
        raise Rejected("bad-json", too_deep) from None
    except (ValueError, UnicodeDecodeError):
        raise Rejected("bad-json", what) from None


def _address(v: Any) -> IPAddress:
    """``ipaddress.ip_address(v)``, through the network cache for address text."""
    if type(v) is str and "/" not in v and v.strip() == v and "%" not in v:
        try:
            net = network(v, field="inside_ip")
        except Rejected:
            raise ValueError("not an address") from None
        return net.network_address
    return ipaddress.ip_address(v)
