"""The bindings topic's binary record (``stream.binding_wire``): round trip for any valid
Binding, a golden vector written byte by byte from the module docstring's layout (not produced
by the encoder), and a reason for every broken record — every truncation, every unknown version
byte, bad UTF-8, reserved bits, trailing bytes — never a traceback."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream import binding_wire as wire
from stream.errors import Rejected
from stream.model import ACTIONS, Binding, network

T0 = 1_718_000_000_000

# -- strategies -----------------------------------------------------------------------------

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)  # any Unicode but surrogates
opt_text = st.none() | text
i64 = st.integers(-(1 << 63), (1 << 63) - 1)
opt_int = st.none() | i64


@st.composite
def networks(draw):
    if draw(st.booleans()):
        plen = draw(st.integers(0, 32))
        n = draw(st.integers(0, (1 << 32) - 1)) >> (32 - plen) << (32 - plen) if plen else 0
        return ipaddress.IPv4Network((n, plen))
    plen = draw(st.integers(0, 128))
    n = draw(st.integers(0, (1 << 128) - 1)) >> (128 - plen) << (128 - plen) if plen else 0
    return ipaddress.IPv6Network((n, plen))


addresses = (st.integers(0, (1 << 32) - 1).map(ipaddress.IPv4Address)
             | st.integers(0, (1 << 128) - 1).map(ipaddress.IPv6Address))


@st.composite
def bindings(draw):
    kind = draw(st.sampled_from(("radius", "dhcp", "nat")))
    action = draw(st.sampled_from(ACTIONS))
    ip = draw(networks() if action != "reset" else st.none() | networks())
    inside = draw(addresses if kind == "nat" and action != "reset" else st.none() | addresses)
    if draw(st.booleans()):
        lo = draw(st.integers(0, 65535))
        ports = (lo, draw(st.integers(lo, 65535)))
    else:
        ports = (None, None)
    return Binding(kind=kind, action=action, operator=draw(text), ip=ip, subscriber=draw(opt_text),
                   session=draw(opt_text), nas=draw(opt_text), at_ms=draw(i64), until_ms=draw(opt_int),
                   hwaddr=draw(opt_text), client_id=draw(opt_text), duid=draw(opt_text),
                   circuit_id=draw(opt_text), remote_id=draw(opt_text), inside_ip=inside,
                   port_first=ports[0], port_last=ports[1], octets_in=draw(opt_int),
                   octets_out=draw(opt_int), session_time_s=draw(opt_int), vrf=draw(opt_text))


def _fields(b: Binding) -> tuple:
    return tuple(getattr(b, f) for f in Binding.__dataclass_fields__)


@settings(max_examples=400, deadline=None)
@given(bindings())
def test_round_trip(b):
    raw = wire.encode(b)
    back = wire.decode(raw)
    assert back == b and _fields(back) == _fields(b)
    assert type(back.ip) is type(b.ip) and type(back.inside_ip) is type(b.inside_ip)
    assert wire.encode(back) == raw  # canonical: one binding, one byte string


@settings(max_examples=60, deadline=None)
@given(bindings())
def test_every_truncation_is_rejected_with_a_reason(b):
    raw = wire.encode(b)
    for n in range(len(raw)):
        with pytest.raises(Rejected) as e:
            wire.decode(raw[:n])
        assert e.value.reason == "bad-binding", (n, e.value)
    with pytest.raises(Rejected) as e:
        wire.decode(raw + b"\x00")
    assert e.value.reason == "bad-binding" and "after the last field" in e.value.detail


@pytest.mark.parametrize("v", [v for v in range(256) if v not in (1, 2, ord("{"))])
def test_every_unknown_version_byte_is_rejected(v):
    good = wire.encode(Binding("radius", "start", "op", network("100.64.0.1"), "u", "s", None, T0))
    with pytest.raises(Rejected) as e:
        wire.decode(bytes([v]) + good[1:])
    assert e.value.reason == "unknown-binding-version" and str(v) in e.value.detail


# -- golden vector: written from the docstring's layout, byte by byte -----------------------

NAT = Binding(kind="nat", action="start", operator="acme", ip=network("2001:db8:200:ab00::/56"),
              subscriber=None, session=None, nas="cgn1", at_ms=T0, inside_ip=ipaddress.ip_address("10.0.0.1"),
              port_first=1024, port_last=2047, vrf="7")
GOLDEN = bytes.fromhex(
    "01"                                  # version 1
    "62"                                  # header: kind nat=2 | action start=0<<2 | ip v6=2<<4 | inside v4=1<<6
    "0446"                                # presence LE 0x4604: nas(2), port_first(9), port_last(10), vrf(14)
    "04" + b"acme".hex() +                # operator
    "86" "0320018f3800"                   # at_ms: zigzag 2*T0 = 0x0320018f3800, 6 bytes follow
    "20010db80200ab000000000000000000" "38"  # ip: network address + /56
    "0a000001"                            # inside_ip 10.0.0.1
    "04" + b"cgn1".hex() +                # nas
    "82" "0800"                           # port_first 1024: zigzag 2048 = 0x800, 2 bytes follow
    "82" "0ffe"                           # port_last 2047: zigzag 4094 = 0xffe
    "01" + b"7".hex()                     # vrf
)


def test_golden_vector():
    assert wire.encode(NAT) == GOLDEN
    assert wire.decode(GOLDEN) == NAT and wire.decode(GOLDEN).vrf == "7"


#: the same NAT block allocated for UDP only: version 2 = version 2's byte, version 1's body, proto
GOLDEN_V2 = bytes.fromhex(
    "02"                                  # version 2
    + GOLDEN[1:].hex() +                  # the version-1 layout from its offset 1, unchanged
    "11"                                  # proto 17 (UDP), one byte
)


def test_golden_vector_version_2():
    udp = dataclasses.replace(NAT, proto=17)
    assert wire.encode(udp) == GOLDEN_V2
    assert wire.decode(GOLDEN_V2) == udp and wire.decode(GOLDEN_V2).proto == 17
    for p in (0, 6, 255):
        assert wire.decode(wire.encode(dataclasses.replace(NAT, proto=p))).proto == p
    # a block for every protocol stays version 1, byte for byte
    assert wire.encode(dataclasses.replace(udp, proto=None)) == GOLDEN
    # version 2 cut anywhere, or with a byte more, is refused, never read as another binding
    for n in range(1, len(GOLDEN_V2)):
        with pytest.raises(Rejected) as e:
            wire.decode(GOLDEN_V2[:n])
        assert e.value.reason in ("bad-binding", "bad-address", "bad-encoding"), n
    with pytest.raises(Rejected) as e:
        wire.decode(GOLDEN_V2 + b"\x06")
    assert e.value.reason == "bad-binding"


def test_negative_and_large_integers():
    b = Binding("radius", "stop", "op", network("100.64.0.1"), "u", "s", None, -1,
                octets_in=(1 << 64) - 1, session_time_s=0)
    raw = wire.encode(b)
    assert raw[4:4 + 3] == b"\x02op" and raw[7] == 0x01  # at_ms −1 → zigzag 1
    assert raw.endswith(b"\x00") and bytes.fromhex("89" "01fffffffffffffffe") in raw  # 2**64−1 → zigzag 2**65−2
    assert wire.decode(raw) == b


# -- bad bytes get the model's reasons --------------------------------------------------------

def _radius(**kw) -> Binding:
    d = dict(kind="radius", action="start", operator="op", ip=network("100.64.0.1"), subscriber="sub",
             session="s", nas=None, at_ms=T0)
    d.update(kw)
    return Binding(**d)


@pytest.mark.parametrize("bad", [b"\xed\xa0\x80", b"\xff", b"\xc3", b"\xe2\x82"])
def test_text_that_is_not_utf8_is_bad_encoding(bad):
    raw = wire.encode(_radius(subscriber="sub"))
    forged = raw.replace(b"\x03sub", bytes([len(bad)]) + bad)
    assert forged != raw
    with pytest.raises(Rejected) as e:
        wire.decode(forged)
    assert e.value.reason == "bad-encoding" and "subscriber" in e.value.detail
    # the JSON path rejects the same surrogate bytes with the same reason
    if bad == b"\xed\xa0\x80":
        j = _radius(subscriber="sub").to_json().replace(b'"sub"', b'"' + bad + b'"')
        with pytest.raises(Rejected) as e2:
            Binding.from_json(j)
        assert e2.value.reason == "bad-encoding"


def test_model_rules_apply_to_decoded_records():
    raw = bytearray(wire.encode(_radius()))
    raw[1] = 0x13  # kind code 3
    with pytest.raises(Rejected) as e:
        wire.decode(bytes(raw))
    assert e.value.reason == "bad-kind"
    raw[1] = 0x00  # radius start without an address → the model's reason
    with pytest.raises(Rejected) as e:
        i = raw.index(bytes([100, 64, 0, 1, 32]))
        wire.decode(bytes(raw[:i]) + bytes(raw[i + 5:]))  # drop the 5 address bytes too
    assert e.value.reason == "missing-address"
    n = wire.encode(NAT)
    pf = n.index(bytes.fromhex("820800820ffe"))
    with pytest.raises(Rejected) as e:  # ports reversed: 2047..1024
        wire.decode(n[:pf] + bytes.fromhex("820ffe820800") + n[pf + 6:])
    assert e.value.reason == "bad-port-range"


def test_host_bits_reserved_bits_and_bad_varints():
    raw = wire.encode(_radius(ip=network("100.64.0.0/24")))
    i = raw.index(bytes([100, 64, 0, 0, 24]))
    with pytest.raises(Rejected) as e:  # 100.64.0.1/24: host bits set
        wire.decode(raw[:i + 3] + b"\x01" + raw[i + 4:])
    assert e.value.reason == "bad-address"
    with pytest.raises(Rejected) as e:  # /33
        wire.decode(raw[:i + 4] + b"\x21" + raw[i + 5:])
    assert e.value.reason == "bad-address"
    with pytest.raises(Rejected) as e:
        wire.decode(raw[:3] + bytes([raw[3] | 0x80]) + raw[4:])
    assert e.value.reason == "bad-binding" and "reserved" in e.value.detail
    with pytest.raises(Rejected) as e:  # ip family code 3
        wire.decode(raw[:1] + bytes([raw[1] | 0x30]) + raw[2:])
    assert e.value.reason == "bad-address"
    j = raw.index(b"\x02op") + 3  # at_ms starts here
    with pytest.raises(Rejected) as e:  # operator length 2 in a two-byte form: not canonical
        wire.decode(raw[:4] + b"\x81\x02" + raw[5:])
    assert e.value.reason == "bad-binding" and "one-byte form" in e.value.detail
    with pytest.raises(Rejected) as e:  # a leading zero byte
        wire.decode(raw[:j] + b"\x87\x00" + raw[j + 1:])
    assert e.value.reason == "bad-binding" and "leading zero" in e.value.detail
    with pytest.raises(Rejected) as e:  # head 0x8a: 10 bytes would follow
        wire.decode(raw[:j] + b"\x8a" + b"\x01" * 10)
    assert e.value.reason == "bad-binding" and "head" in e.value.detail


@pytest.mark.parametrize("raw", [b"", None, "text", 5])
def test_empty_or_not_bytes(raw):
    with pytest.raises(Rejected) as e:
        wire.decode(raw)
    assert e.value.reason == "bad-binding"


def test_unencodable_values_are_rejected_not_raised():
    with pytest.raises(Rejected) as e:
        wire.encode(_radius(octets_in="5"))   # Binding does not type-check counters
    assert e.value.reason == "bad-binding" and "octets_in" in e.value.detail
    with pytest.raises(Rejected) as e:
        wire.encode(_radius(octets_in=1 << 71))
    assert e.value.reason == "bad-binding"
    with pytest.raises(Rejected) as e:
        wire.encode(_radius(octets_in=True))
    assert e.value.reason == "bad-binding"


# -- the upgrade: JSON records written by the previous release are still read ---------------

def test_old_json_records_are_still_read():
    b = NAT
    assert wire.is_json(b.to_json()) and not wire.is_json(wire.encode(b))
    assert wire.decode(b.to_json()) == b
    with pytest.raises(Rejected) as e:
        wire.decode(b"{not json")
    assert e.value.reason == "bad-json"
    with pytest.raises(Rejected) as e:  # JSON with leading whitespace was never written: a version byte
        wire.decode(b" " + b.to_json())
    assert e.value.reason == "unknown-binding-version"
