"""stream.shred: every version of a table value is sealed under an epoch that dies no later than
its content may live, and a live value is re-sealed before its epoch key goes.  Checked against
a reference written from the rule (the expiry arithmetic done by hand here), not against what
the code computes."""

from __future__ import annotations

import random

import pytest

from stream import intervals as iv
from stream import shred
from stream.keyring import epoch_bounds, epoch_of

S = 1_790_000_000_000
TTL = 60_000
STALE = 24 * 3_600_000
PERIOD = 2_500
GRACE = 4_000   # agents.app.vault_grace_ms with a 1 s sweeper and 1 s buckets
ORIGIN = S - S % PERIOD - 50 * PERIOD


def epoch_end(at_ms: int) -> int:
    return epoch_bounds(epoch_of(at_ms, PERIOD, ORIGIN), PERIOD, ORIGIN)[1]


def key_death(at_ms: int) -> int:
    """When the key of the epoch containing ``at_ms`` is destroyed (its end + the grace)."""
    return epoch_end(at_ms) + GRACE


def seal(ivs, now):
    return shred.seal_instant_ms(ivs, now, ttl_ms=TTL, stale_after_ms=STALE, period_ms=PERIOD)


def open_iv(start, last, holder="kund-1@isp.example"):
    return iv.Interval(start, None, holder, "s1", "192.0.2.10", last)


def test_open_session_is_sealed_as_if_it_stopped_at_its_last_event():
    # Start at S, written at S: the content could end with a Stop at S, expiring at S + TTL
    assert seal((open_iv(S, S),), S) == S + TTL
    # an Interim at S + 20 s: S + 20 s + TTL, not the lost-Stop expiry S + 20 s + 24 h + TTL
    assert seal((open_iv(S, S + 20_000),), S + 20_000) == S + 20_000 + TTL
    # closed: its own expiry
    closed = iv.Interval(S, S + 30_000, "kund-1@isp.example", "s1", "192.0.2.10", S + 30_000)
    assert seal((closed,), S + 30_000) == S + 30_000 + TTL


def test_never_sealed_under_a_key_less_than_a_period_ahead():
    assert seal((open_iv(S, S),), S + 10 * TTL) == S + 10 * TTL + PERIOD


def test_several_intervals_take_the_soonest():
    old = iv.Interval(S - 50_000, S - 40_000, "kund-0@isp.example", "s0", "192.0.2.10", S - 40_000)
    cur = open_iv(S, S + 5_000)
    assert seal((old, cur), S + 5_000) == S - 40_000 + TTL
    assert seal((cur, old), S + 5_000) == S - 40_000 + TTL


def test_empty_value_is_refused():
    with pytest.raises(ValueError):
        shred.content_expiry_ms((), ttl_ms=TTL, stale_after_ms=STALE)


@pytest.mark.parametrize("seed", range(30))
def test_every_version_of_a_session_dies_no_later_than_its_stop_allows(seed):
    """Start, Interims, Stop written as they arrive: each version's key is gone by the time the
    Stop's mapping expires (+ one period and the grace: the floor every value gets)."""
    rnd = random.Random(seed)
    t = S + rnd.randrange(0, PERIOD)
    versions = [(t, (open_iv(S, S),))]
    last = S
    for _ in range(rnd.randrange(0, 5)):
        last += rnd.randrange(1_000, 30_000)
        versions.append((last + rnd.randrange(0, 3_000), (open_iv(S, last),)))
    stop = last + rnd.randrange(0, 30_000)
    final = iv.Interval(S, stop, "kund-1@isp.example", "s1", "192.0.2.10", stop)
    versions.append((stop + rnd.randrange(0, 3_000), (final,)))
    final_expiry = stop + TTL                   # reference: a Stop at ``stop`` expires TTL later
    for written, ivs in versions:
        bound = max(final_expiry, written + PERIOD)
        assert key_death(seal(ivs, written)) <= epoch_end(bound) + GRACE
    # the former rule (a Start sealed at its lost-Stop expiry) breaks this bound
    assert key_death(S + STALE + TTL) > epoch_end(max(final_expiry, t + PERIOD)) + GRACE


def simulate(ivs, written, until, sweeper_late_ms):
    """The sweeper as a model: visits a value at its revisit instant (up to ``sweeper_late_ms``
    late) and re-seals it when due.  Yields (time, sealed epoch start, sealed epoch end)."""
    at = seal(ivs, written)
    e_start, e_end = epoch_bounds(epoch_of(at, PERIOD, ORIGIN), PERIOD, ORIGIN)
    history = [(written, e_start, e_end)]
    now = written
    while now < until:
        visit = shred.revisit_ms(ivs, e_start, now, ttl_ms=TTL, stale_after_ms=STALE, period_ms=PERIOD)
        assert visit > now or visit == now and len(history) == 1
        now = max(visit, now + 1) + sweeper_late_ms
        if shred.reseal_at_ms(ivs, e_start, now, ttl_ms=TTL, stale_after_ms=STALE, period_ms=PERIOD) <= now:
            at = seal(ivs, now)
            e_start, e_end = epoch_bounds(epoch_of(at, PERIOD, ORIGIN), PERIOD, ORIGIN)
            history.append((now, e_start, e_end))
    return history


@pytest.mark.parametrize("late", [0, 1_000, 2_000])
def test_a_quiet_open_session_is_resealed_before_its_key_goes(late):
    """Re-sealing never loses data: at every visit the current version is still readable (its
    key dies at epoch end + grace, after the visit), and it moves forward one epoch at a time."""
    ivs = (open_iv(S, S + 1_000),)
    history = simulate(ivs, S + 1_000, S + 1_000 + 20 * TTL, late)
    assert len(history) > 10
    for (t0, _, end0), (t1, _, end1) in zip(history, history[1:]):
        assert t1 < end0 + GRACE          # re-sealed while the old key still opens it
        assert end1 <= t1 + 2 * PERIOD    # and no further ahead than a period past the floor
    # the first version (written at the Start) dies as if a Stop had come at the last event
    assert history[0][2] + GRACE <= epoch_end(S + 1_000 + TTL) + GRACE


def test_a_value_sealed_further_ahead_than_its_content_allows_is_resealed_now():
    ivs = (open_iv(S, S),)
    legacy = epoch_bounds(epoch_of(S + STALE + TTL, PERIOD, ORIGIN), PERIOD, ORIGIN)[0]
    now = S + 1_000
    assert shred.reseal_at_ms(ivs, legacy, now, ttl_ms=TTL, stale_after_ms=STALE, period_ms=PERIOD) == now
    # one sealed by the rule is left alone until its content expiry
    e0 = epoch_bounds(epoch_of(seal(ivs, S), PERIOD, ORIGIN), PERIOD, ORIGIN)[0]
    assert shred.reseal_at_ms(ivs, e0, now, ttl_ms=TTL, stale_after_ms=STALE, period_ms=PERIOD) == S + TTL


def test_revisit_is_the_next_expiry_when_it_comes_first():
    old = iv.Interval(S - 50_000, S - 40_000, "kund-0@isp.example", "s0", "192.0.2.10", S - 40_000)
    ivs = (old, open_iv(S, S + 5_000))
    at = seal(ivs, S + 5_000)
    start = epoch_bounds(epoch_of(at, PERIOD, ORIGIN), PERIOD, ORIGIN)[0]
    assert shred.revisit_ms(ivs, start, S + 5_000, ttl_ms=TTL, stale_after_ms=STALE,
                            period_ms=PERIOD) == S - 40_000 + TTL


def test_held_interval_is_resealed_each_epoch():
    held = iv.Interval(S - 10 * TTL, S - 9 * TTL, "kund-0@isp.example", "s0", "192.0.2.10", S - 9 * TTL, held=True)
    at = seal((held,), S)
    assert at == S + PERIOD
    start = epoch_bounds(epoch_of(at, PERIOD, ORIGIN), PERIOD, ORIGIN)[0]
    assert S < shred.revisit_ms((held,), start, S, ttl_ms=TTL, stale_after_ms=STALE, period_ms=PERIOD) <= S + PERIOD
