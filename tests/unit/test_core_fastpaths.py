"""The per-event fast paths of the core (issue 16 part 7) give what the plain definitions give:
one-pass sealing plan vs ``stream.shred``'s functions, the slot-store ``Interval`` vs its
constructor, the vault's inlined epoch and revisit arithmetic vs ``Vault.epoch_at`` and
``shred.revisit_ms``.  Random intervals, fixed seed."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from agents.vault import Vault
from stream import intervals as iv
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
