"""The per-event fast paths of the core give what the plain definitions give:
one-pass sealing plan vs ``stream.shred``'s functions, the slot-store ``Interval`` vs its
constructor, the vault's inlined epoch and revisit arithmetic vs ``Vault.epoch_at`` and
``shred.revisit_ms``.  Random intervals, fixed seed."""

from __future__ import annotations

import copy
import pickle
import random
from pathlib import Path

import pytest

from agents.vault import Vault
from stream import intervals as iv
from stream import mapping
from stream import shred
from stream.keyring import Keyring, sealed_epoch
from stream.model import parse_network

TTL, STALE, PERIOD = 86_400_000, 7_200_000, 3_600_000


def _random_intervals(rng: random.Random) -> iv.Intervals:
    out = []
    for _ in range(rng.randint(1, 4)):
        start = rng.randrange(10**12, 10**12 + 10**9)
        end = None if rng.random() < 0.5 else start + rng.randrange(-5, 10**8)
        last = start + rng.randrange(-10, 10**8)
        until = None if rng.random() < 0.7 else start + rng.randrange(10**8)
        out.append(iv.Interval(start, end, "h", None, None, last, until, held=rng.random() < 0.2))
    return tuple(out)


def test_seal_plan_is_content_expiry_and_next_expiry():
    rng = random.Random(7)
    for _ in range(3000):
        ivs = _random_intervals(rng)
        assert shred.seal_plan(ivs, ttl_ms=TTL, stale_after_ms=STALE) == (
            shred.content_expiry_ms(ivs, ttl_ms=TTL, stale_after_ms=STALE),
            iv.next_expiry_ms(ivs, ttl_ms=TTL, stale_after_ms=STALE))
    with pytest.raises(ValueError):
        shred.seal_plan((), ttl_ms=TTL, stale_after_ms=STALE)


def test_new_interval_is_the_constructor():
    args = (5, None, "sub", "nas/S-1", "nas", 9, 12, 1024, 2047, True, "7")
    a, b = iv._new_interval(*args), iv.Interval(*args)
    assert type(a) is iv.Interval and a == b and hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.start_ms = 6  # still frozen


def _fields(x: object, names: str) -> tuple:
    return tuple(getattr(x, n) for n in names.split())


IV_FIELDS = "start_ms end_ms holder session nas last_ms until_ms port_first port_last held vrf proto"
CHANGE_FIELDS = "outcome intervals write expired expiry_ms"


@pytest.mark.parametrize("make", [lambda: iv.Interval(5, None, "sub", "nas/S-1", "nas", 9, 12, 1024, 2047, True, "7", 6),
                                  lambda: iv._new_interval(5, None, "sub"),
                                  lambda: mapping.Change("reset", (), True),
                                  lambda: mapping._new_change("opened", (iv.Interval(1, 2, "h"),), True, 1, 9)])
def test_intervals_and_changes_cannot_be_mutated(make):
    """Interpreted, ``stream.model.freeze`` makes them immutable; compiled, mypyc's read-only
    ``Final`` attributes do (both raise an ``AttributeError``)."""
    x = make()
    names = IV_FIELDS if type(x) is iv.Interval else CHANGE_FIELDS
    before = _fields(x, names)
    for name in names.split():
        with pytest.raises(AttributeError):
            setattr(x, name, 1)
        with pytest.raises(AttributeError):
            delattr(x, name)
    with pytest.raises(AttributeError):
        x.other = 1  # type: ignore[union-attr]
    assert _fields(x, names) == before and hash(x) == hash(make())


def test_interval_and_change_keep_the_dataclass_behaviour():
    a = iv.Interval(5, None, "sub", port_first=1024, port_last=2047, proto=17)
    assert _fields(a, IV_FIELDS) == (5, None, "sub", None, None, 0, None, 1024, 2047, False, None, 17)
    assert a == iv._new_interval(5, None, "sub", None, None, 0, None, 1024, 2047, False, None, 17)
    assert a != iv.Interval(5, None, "sub") and a != _fields(a, IV_FIELDS)
    assert hash(a) == hash(_fields(a, IV_FIELDS)) and repr(a) == "Interval([5, None))"
    c = mapping.Change("opened", (a,), True)
    assert _fields(c, CHANGE_FIELDS) == ("opened", (a,), True, 0, None) and not c.tombstone
    assert c == mapping._new_change("opened", (a,), True) and hash(c) == hash(_fields(c, CHANGE_FIELDS))
    assert repr(c) == "Change(outcome='opened', intervals=(Interval([5, None)),), write=True, expired=0, expiry_ms=None)"
    assert len({a, iv.Interval(5, None, "sub", port_first=1024, port_last=2047, proto=17)}) == 1
    for x in (a, c):
        for y in (pickle.loads(pickle.dumps(x)), copy.copy(x), copy.deepcopy(x)):
            assert type(y) is type(x) and y == x


def test_seal_value_epoch_and_revisit_are_the_shred_rules():
    rng = random.Random(11)
    ring = Keyring.create("op", bytes(range(32)), purpose="lawful_access")
    origin = 10**12
    vault = Vault("op", Path("/nonexistent"), ring, origin, PERIOD, 0)
    net = parse_network("100.64.0.1")
    for _ in range(500):
        ivs = _random_intervals(rng)
        now = rng.randrange(origin - 10**7, origin + 10**9)
        key = vault.key("ip", net)
        raw, revisit = vault.seal_value(key, net, ivs, ttl_ms=TTL, stale_after_ms=STALE, now_ms=now)
        at = shred.seal_instant_ms(ivs, now, ttl_ms=TTL, stale_after_ms=STALE, period_ms=PERIOD)
        assert sealed_epoch(raw) == vault.epoch_at(at)
        assert revisit == shred.revisit_ms(ivs, vault.epoch_start_ms(vault.epoch_at(at)), now, ttl_ms=TTL,
                                           stale_after_ms=STALE, period_ms=PERIOD)
        assert vault.open(key, raw) == (net, ivs)


def test_to_json_is_the_json_encoder():
    """The stats record id is HMAC'd over these bytes: they must be json.dumps's, exactly."""
    import ipaddress
    import json

    from stream.model import Binding, _to_dict

    rng = random.Random(3)
    texts = ["kund-1@isp.example", "a\"b\\c", "ümlaut", "\u2603\n\t", "", "aa:bb:cc", "S-0001", "\x7f\x00"]
    for i in range(2000):
        t = lambda: rng.choice(texts + [None])  # noqa: E731
        kind = rng.choice(("radius", "dhcp", "nat"))
        ip = parse_network(rng.choice(("100.64.0.1", "2001:db8:1:200::/56", "203.0.113.9", "::1")))
        counter = lambda: rng.choice((None, 0, -1, 2**40, 2**70, 7))  # noqa: E731
        b = Binding(kind, rng.choice(("start", "update", "stop")), rng.choice(("op", "connect2ip")), ip,
                    t(), t(), t(), rng.randrange(-10**13, 10**13), until_ms=counter(), hwaddr=t(), client_id=t(),
                    duid=t(), circuit_id=t(), remote_id=t(),
                    inside_ip=ipaddress.ip_address("10.0.0.1") if kind == "nat" else None,
                    port_first=1024 if kind == "nat" else None, port_last=2047 if kind == "nat" else None,
                    octets_in=counter(), octets_out=counter(), session_time_s=counter(), vrf=t())
        assert b.to_json() == json.dumps(_to_dict(b), separators=(",", ":")).encode(), i
    # a counter that is not an int (an old JSON record may carry one): the encoder's own output
    odd = Binding("radius", "stop", "op", parse_network("100.64.0.1"), "s", None, None, 1, octets_in=1.5,
                  octets_out=True)
    assert odd.to_json() == json.dumps(_to_dict(odd), separators=(",", ":")).encode()
