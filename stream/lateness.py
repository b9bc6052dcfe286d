"""Late data at ingest: "ingest lag + bound <= promise", enforced per record.

An operator promises that a raw IP<->subscriber mapping is physically gone ``promise_ms`` after
the mapping ended (``stream.policy``).  Every copy ingest writes counts: a binding written at
``now`` to a topic whose worst-case persistence is ``bound`` may exist until ``now + bound``.
The retention plan *assumes* raw records arrive at most ``ingest_lag_ms`` after the mapping
ends; this module checks that assumption record by record instead of trusting it.

The end of the mapping a binding speaks of (``end_ms``), as the interval table sees it:

- a Stop, release, or an Accounting-On/Off reset: the event time — the end is known;
- a Start / Interim / renewal / port-block allocation: the end is not known yet.  The table
  treats a holder silent for the lost-Stop window (``stale_after_ms``) as gone at
  ``at_ms + stale_after_ms``, and a DHCP lease as gone at its ``until_ms`` at the latest, so
  this binding can keep a mapping current until the earlier of the two, and no longer.

What is left of the promise at ``now`` is ``end_ms + promise_ms - now``.  The verdict:

- ``ACCEPT`` when the bindings topic's bound fits in it;
- ``TOO_LATE`` (dead-letter the record with its bytes) when it does not, but the dead-letter
  topic's bound does;
- ``TOO_LATE_DROP`` when neither fits: the dead letter names the record (topic, partition,
  offset, reason) but carries none of its bytes, and the drop is counted.

Boundaries: a bound exactly equal to what is left fits (deletion *at* the promise keeps it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .model import Binding

ACCEPT = "accept"
TOO_LATE = "too-late"
TOO_LATE_DROP = "too-late-drop"

#: the reason every late record is dead-lettered (and counted) with
REASON = "too-late"


def end_ms(b: Binding, stale_after_ms: int) -> int:
    """The latest instant the mapping ``b`` speaks of can still be current (see the module
    docstring)."""
    if b.action in ("stop", "reset"):
        return b.at_ms
    end = b.at_ms + stale_after_ms
    if b.until_ms is not None and b.until_ms < end:
        return b.until_ms
    return end


@dataclass(frozen=True, slots=True)
class LatenessRule:
    """One operator's rule.  ``promise_ms``: the lawful-access promise (maximum time from a
    mapping's end to its physical deletion); ``stale_after_ms``: the lost-Stop window;
    ``bindings_bound_ms`` / ``deadletter_bound_ms``: worst-case persistence of a record written
    to the bindings / dead-letter topic now (from the retention plan)."""

    promise_ms: int
    stale_after_ms: int
    bindings_bound_ms: int
    deadletter_bound_ms: int

    def __post_init__(self) -> None:
        for name in ("promise_ms", "stale_after_ms", "bindings_bound_ms", "deadletter_bound_ms"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer")

    def left_ms(self, b: Binding, now_ms: int) -> int:
        """What is left of the promise for ``b``'s mapping at ``now_ms`` (negative: past it)."""
        return end_ms(b, self.stale_after_ms) + self.promise_ms - now_ms

    def verdict(self, b: Binding, now_ms: int) -> str:
        left = self.left_ms(b, now_ms)
        if self.bindings_bound_ms <= left:
            return ACCEPT
        if self.deadletter_bound_ms <= left:
            return TOO_LATE
        return TOO_LATE_DROP

    def verdict_many(self, bindings: Iterable[Binding], now_ms: int) -> str:
        """The verdict for one raw record: its worst binding's (a record is dead-lettered
        whole, never split)."""
        worst = ACCEPT
        for b in bindings:
            v = self.verdict(b, now_ms)
            if v == TOO_LATE_DROP:
                return v
            if v == TOO_LATE:
                worst = v
        return worst
