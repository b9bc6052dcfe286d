"""Which key epoch seals a mapping-table value, and when the sweeper must seal it again.

Crypto-shredding (``agents/vault.py``) only keeps the promise if *every* version of a value
becomes unreadable no later than its own content may live.  A later write can shorten a
content's life: a Stop closes an open session at its event time, so "held from S, last seen L,
still open" may have to expire as early as ``L + TTL``.  Sealing an open session under the epoch
of its lost-Stop expiry (``L + stale_after + TTL``) left every Start and Interim version
readable for the whole lost-Stop window after the Stop's version was gone.

The rule here: a value is sealed under the epoch containing the **earliest instant its content
could legitimately expire** (``earliest_expiry_ms``; for several intervals, the soonest of
them, because the sweeper rewrites the value when that one goes), but never an epoch closer
than one period ahead (a key about to be destroyed).  While the content stays live past that
instant — an open session that simply went quiet — the sweeper re-seals it under a later epoch
(``reseal_at_ms``), before the old epoch key is destroyed (the vault's grace covers the
sweeper's lateness).  So each version dies on the schedule of the content it carries, and the
current version moves forward one epoch at a time while it lengthens.

Pure: no clock (``now_ms`` is passed in), no I/O.
"""

from __future__ import annotations

from typing import Optional

from . import intervals as iv


def earliest_expiry_ms(i: iv.Interval, *, ttl_ms: int, stale_after_ms: int) -> int:
    """The soonest ``i``'s content could expire after any later write: its expiry if closed;
    if open, the expiry it would have had a Stop arrived at its last event (``last_ms``)."""
    exp = iv.expiry_ms(i, ttl_ms=ttl_ms, stale_after_ms=stale_after_ms)
    if i.end_ms is not None:
        return exp
    return min(exp, max(i.start_ms, i.last_ms) + ttl_ms)


def content_expiry_ms(ivs: iv.Intervals, *, ttl_ms: int, stale_after_ms: int) -> int:
    """The soonest earliest expiry among ``ivs`` (non-empty): the whole value shares one key."""
    if not ivs:
        raise ValueError("an empty value is a tombstone, not a sealed value")
    return min(earliest_expiry_ms(i, ttl_ms=ttl_ms, stale_after_ms=stale_after_ms) for i in ivs)


def seal_instant_ms(ivs: iv.Intervals, now_ms: int, *, ttl_ms: int, stale_after_ms: int, period_ms: int) -> int:
    """The instant whose epoch seals ``ivs`` written at ``now_ms``: its content expiry, or one
    period ahead if that is sooner (a value is never sealed under a key about to be destroyed)."""
    return max(content_expiry_ms(ivs, ttl_ms=ttl_ms, stale_after_ms=stale_after_ms), now_ms + period_ms)


def reseal_at_ms(ivs: iv.Intervals, sealed_epoch_start_ms: int, now_ms: int, *, ttl_ms: int,
                 stale_after_ms: int, period_ms: int) -> int:
    """When a value sealed under the epoch starting at ``sealed_epoch_start_ms`` must be sealed
    again: at its content expiry, but not before its epoch begins (sealing earlier would only
    move it to the same epoch).  At once (``now_ms``) if it sits under a later epoch than its
    content allows (written by an older release, or by a clock that ran ahead)."""
    earliest = content_expiry_ms(ivs, ttl_ms=ttl_ms, stale_after_ms=stale_after_ms)
    if sealed_epoch_start_ms > max(earliest, now_ms + period_ms):
        return now_ms
    return max(earliest, sealed_epoch_start_ms)


def revisit_ms(ivs: iv.Intervals, sealed_epoch_start_ms: int, now_ms: int, *, ttl_ms: int,
               stale_after_ms: int, period_ms: int) -> int:
    """When the sweeper must next look at the value: its next expiry (drop an interval) or its
    re-seal instant, whichever comes first."""
    reseal = reseal_at_ms(ivs, sealed_epoch_start_ms, now_ms, ttl_ms=ttl_ms, stale_after_ms=stale_after_ms,
                          period_ms=period_ms)
    nxt: Optional[int] = iv.next_expiry_ms(ivs, ttl_ms=ttl_ms, stale_after_ms=stale_after_ms)
    return reseal if nxt is None else min(nxt, reseal)


def seal_plan(ivs: iv.Intervals, *, ttl_ms: int, stale_after_ms: int) -> tuple[int, Optional[int]]:
    """``(content_expiry_ms(ivs), iv.next_expiry_ms(ivs))`` in one pass: what ``seal_instant_ms``
    and ``revisit_ms`` need of a value written now (the vault's ``seal_value``, once per write)."""
    if not ivs:
        raise ValueError("an empty value is a tombstone, not a sealed value")
    earliest = nxt = None
    for i in ivs:
        eff = i.effective_end(stale_after_ms)
        e = eff
        if i.end_ms is None:
            lo = i.start_ms if i.start_ms > i.last_ms else i.last_ms
            if lo < e:
                e = lo
        if earliest is None or e < earliest:
            earliest = e
        if not i.held and (nxt is None or eff < nxt):
            nxt = eff
    return earliest + ttl_ms, (None if nxt is None else nxt + ttl_ms)  # type: ignore[operator]


def key_grace_ms(sweeper_period_ms: int, bucket_ms: int) -> int:
    """How long an epoch key outlives the end of its epoch (the vault's ``grace_ms``): two
    sweeper periods + one schedule bucket + 1 s.  The sweeper reaches a value up to a period and
    a bucket after the instant it is due (its expiry, or a hold's re-check one period later) and
    must still be able to open it then, to delete or re-seal it."""
    return 2 * sweeper_period_ms + bucket_ms + 1000
