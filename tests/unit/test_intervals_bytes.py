"""stream.intervals' format-2 encoder writes the very bytes it wrote before its fast path
(inline varints, IPv4 holders packed without ``ipaddress``): a digest over the values of a
seeded corpus of every shape, pinned from the encoder before that change; and texts that only
look like dotted quads (leading zeros, signs, other scripts' digits, ``_``) stay UTF-8 text, so
they read back exactly as written."""

from __future__ import annotations

import hashlib
import ipaddress
import random

import pytest

from stream.intervals import Interval, _packed_address, decode, decode_value, encode, encode_value

NEAR_QUADS = ["01.2.3.4", "1.2.3.256", "\u0661.2.3.4", "1.2.3.4 ", " 1.2.3.4", "+1.2.3.4", "1_0.2.3.4", "1..2.3",
              "1.2.3.", "-0.1.2.3", "\u00b9.2.3.4", "1.2.3.0004", "000.1.2.3", "1e2.1.2.3", "0x1.2.3.4", "1.2.3.4x"]
QUADS = ["1.2.3.4", "10.0.0.1", "255.255.255.255", "0.0.0.0", "100.64.0.1"]
TEXTS = QUADS + NEAR_QUADS + ["2001:db8::1", "::1", "fe80::1%eth0", "1:2:3:4:5:6:7:8", "2001:DB8::1", "kund-1@isp.example",
                              "02:00:5e:01:02:03", "abcdef", "ABCDEF", "abc", "0123456", "00AB12-000001", "ab:cd:e",
                              "ab:cd", "a.b.c.d", "", "x", "1.2.3.4/32"]
EDGES = [0, 1, -1, 63, 64, -64, -65, 127, 128, 2**62, 2**63 - 1, -2**63, 1765000000000, 10**18]


def _corpus(n: int = 4000):
    rng = random.Random(16)

    def rint():
        return rng.choice(EDGES) if rng.random() < 0.3 else rng.randrange(-10**13, 10**13)

    def opt(f, p):
        return f() if rng.random() < p else None

    def one():
        ports = (lambda a: (a, a + rng.randrange(5000)))(rng.randrange(70000)) if rng.random() < 0.3 else (None, None)
        return Interval(rint(), opt(rint, 0.5), rng.choice(TEXTS),
                        opt(lambda: rng.choice(["n/S1", "192.0.2.1/abc", "S", "192.0.2.1/"]), 0.5),
                        opt(lambda: rng.choice(["192.0.2.1", "nas", "192.0.2.1/x"]), 0.6), rint(), opt(rint, 0.3),
                        *ports, rng.random() < 0.2, opt(lambda: rng.choice(["7", "vrf-a"]), 0.2),
                        opt(lambda: rng.choice([6, 17, 0, 255]), 0.2))

    nets = [None, ipaddress.ip_network("100.64.0.1/32"), ipaddress.ip_network("2001:db8::/48"),
            ipaddress.ip_network("10.0.0.0/8")]
    for _ in range(n):
        yield rng.choice(nets), tuple(one() for _ in range(rng.choice([0, 1, 1, 1, 2, 3])))


def test_the_encoder_writes_the_bytes_it_wrote_before():
    h = hashlib.sha256()
    for net, ivs in _corpus():
        try:
            h.update(encode(ivs) if net is None else encode_value(net, ivs))
        except ValueError as e:  # a difference beyond 64 bits: refused, as before
            h.update(b"refused: " + str(e).encode())
    # pinned from stream/intervals.py at f308d89, before the inline-varint / IPv4 fast path
    assert h.hexdigest() == GOLDEN


@pytest.mark.parametrize("text", NEAR_QUADS)
def test_texts_that_only_look_like_addresses_stay_text(text):
    assert _packed_address(text) is None
    one = (Interval(5, None, text, None, None, 5),)
    assert decode(encode(one)) == one


@pytest.mark.parametrize("text", QUADS)
def test_dotted_quads_are_packed(text):
    assert _packed_address(text) == ipaddress.IPv4Address(text).packed
    one = (Interval(5, None, text, None, None, 5),)
    assert len(encode(one)) < len(encode((Interval(5, None, "kund@" + text, None, None, 5),))) - 5
    assert decode_value(encode_value(ipaddress.ip_network("10.0.0.0/8"), one))[1] == one


def test_out_of_range_fields_are_refused_as_before():
    for v in (2**63, -2**63 - 1):
        with pytest.raises(ValueError, match="64-bit range"):
            encode((Interval(v, None, "a", last_ms=0),))
        with pytest.raises(ValueError, match="64-bit range"):
            encode((Interval(0, v, "a", last_ms=0),))
        with pytest.raises(ValueError, match="64-bit range"):
            encode((Interval(0, None, "a", last_ms=v),))


GOLDEN = "df40cf5f717967937684e58823be388e3755fdbc0d955043196c5c892b665238"
