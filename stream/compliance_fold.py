"""The compliance fold: what a walk of the mapping table found per operator — live mappings,
intervals current or held, the oldest effective end of an ended mapping and how far past its
expiry instant the most overdue one is (``OperatorState``).

Pure: the clock is the fold's ``now_ms``.  ``agents.metrics`` walks the worker's own partitions
in slices between event-loop turns, caches each key's clock-independent ``summarize`` (packed,
``pack_summary``) until its value changes, and feeds the fold; the compliance ratio is
``OperatorState.ratio(now, promise)``.  The age of an interval counts from its *effective end*
(``stream.intervals.Interval.effective_end``), because retention promises count from there;
intervals under a legal hold are counted apart, never as overdue.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Union

from . import intervals as iv


@dataclass(frozen=True, slots=True)
class OperatorState:
    """What one scan of the table found for one operator (this worker's partitions only)."""

    keys: int = 0
    intervals: int = 0
    current: int = 0            # intervals not yet at their effective end
    held: int = 0               # under a legal hold (excluded from the ratio)
    oldest_end_ms: Optional[int] = None   # oldest effective end among ended, unheld intervals
    overdue_ms: int = 0         # how far past its expiry instant the most overdue interval is

    def age_ms(self, now_ms: int) -> int:
        return 0 if self.oldest_end_ms is None else max(0, now_ms - self.oldest_end_ms)

    def ratio(self, now_ms: int, promise_ms: int) -> float:
        return self.age_ms(now_ms) / promise_ms


#: What the compliance fold needs of one key's intervals, independent of the clock: the
#: effective end of its one unheld interval as a plain int (most keys: 32 B instead of ~140 B
#: of nested tuples, measured by ``benchmarks/bench_memory.py``), else a tuple of
#: ``(effective end, held)`` per interval.
Summary = Union[int, tuple[tuple[int, bool], ...]]


def summarize(ivs: Iterable[iv.Interval], stale_after_ms: int,
              is_held: Optional[Any] = None) -> Summary:
    """What the compliance fold needs of one key's intervals — independent of the clock, so a
    key's summary can be kept until its value changes.  ``is_held(interval)``: under an active
    legal hold (the sweeper keeps those; they are counted as held, never as overdue)."""
    out = tuple((i.effective_end(stale_after_ms), bool(i.held or (is_held is not None and is_held(i))))
                for i in ivs)
    if len(out) == 1 and not out[0][1]:
        return out[0][0]
    return out


_PACKED_IV = struct.Struct("<qB")  # (effective end, held) of one interval in a packed summary


def pack_summary(op_index: int, summary: Summary) -> Union[int, bytes]:
    """The walk's cached form of a key's summary, operator included (``op_index`` < 256): an
    int for one unheld interval, else bytes.  Neither is a container the cyclic GC tracks, so
    the walk's 10M-entry caches are never traversed by a collection (a tracked cache cost a
    full collection ~40 ms per 1M keys, measured by ``bench_metrics_scan.py``)."""
    if not 0 <= op_index < 256:
        raise ValueError("at most 256 operators per worker")
    if type(summary) is int:
        return summary << 8 | op_index
    return bytes((op_index,)) + b"".join(_PACKED_IV.pack(end, held) for end, held in summary)


def unpack_summary(packed: Union[int, bytes]) -> tuple[int, Summary]:
    if type(packed) is int:
        return packed & 255, packed >> 8
    return packed[0], tuple((end, bool(held)) for end, held in _PACKED_IV.iter_unpack(packed[1:]))


class Fold:
    """The compliance fold, one ``(operator, summary of one key)`` pair at a time, so a walk can
    feed it in slices between event-loop turns (``agents.metrics.Metrics.walk``)."""

    __slots__ = ("now_ms", "ttl_ms", "acc", "operators")

    def __init__(self, now_ms: int, ttl_ms: Mapping[str, int], operators: Iterable[str] = ()) -> None:
        self.now_ms = now_ms
        self.ttl_ms = ttl_ms
        self.acc: dict[str, list] = {}
        self.operators = list(operators)  # op_index → name, for ``add_packed``

    def add_packed(self, packed: Union[int, bytes]) -> None:
        if type(packed) is not int:
            op_index, summary = unpack_summary(packed)
            self.add(self.operators[op_index], summary)
            return
        # ``add``'s one-interval case inline: going through ``add`` made a walk measurably
        # slower (bench_metrics_scan's rescan)
        operator = self.operators[packed & 255]
        a = self.acc.get(operator)
        if a is None:
            a = self.acc[operator] = [0, 0, 0, 0, None, 0]
        end = packed >> 8
        a[0] += 1
        a[1] += 1
        if end > self.now_ms:
            a[2] += 1
        else:
            self._ended(a, operator, end)

    def add(self, operator: str, summary: Summary) -> None:
        a = self.acc.get(operator)
        if a is None:
            a = self.acc[operator] = [0, 0, 0, 0, None, 0]  # keys, intervals, current, held, oldest end, overdue
        a[0] += 1
        now_ms = self.now_ms
        if type(summary) is int:  # one unheld interval (most keys): no allocation, so a walk
            a[1] += 1             # over 10M keys does not set off the cyclic GC (bench_metrics_scan)
            if summary > now_ms:
                a[2] += 1
            else:
                self._ended(a, operator, summary)
            return
        for end, held in summary:
            a[1] += 1
            if held:
                a[3] += 1
            elif end > now_ms:
                a[2] += 1
            else:
                self._ended(a, operator, end)

    def _ended(self, a: list, operator: str, end: int) -> None:
        if a[4] is None or end < a[4]:
            a[4] = end
        ttl = self.ttl_ms.get(operator)
        if ttl is not None and self.now_ms - (end + ttl) > a[5]:
            a[5] = self.now_ms - (end + ttl)

    def result(self) -> dict[str, OperatorState]:
        return {op: OperatorState(*a) for op, a in self.acc.items()}


def scan_summaries(items: Iterable[tuple[str, Summary]], now_ms: int,
                   ttl_ms: Mapping[str, int]) -> dict[str, OperatorState]:
    """Fold ``(operator, summary of one key)`` pairs into one ``OperatorState`` per operator."""
    fold = Fold(now_ms, ttl_ms)
    for operator, summary in items:
        fold.add(operator, summary)
    return fold.result()


def scan_intervals(items: Iterable[tuple[str, Iterable[iv.Interval]]], now_ms: int,
                   ttl_ms: Mapping[str, int], stale_after_ms: Mapping[str, int]) -> dict[str, OperatorState]:
    """``scan_summaries`` over decoded intervals (pure: the caller passes ``now_ms``)."""
    return scan_summaries(((op, summarize(ivs, stale_after_ms.get(op, iv.DEFAULT_STALE_AFTER_MS)))
                           for op, ivs in items), now_ms, ttl_ms)
