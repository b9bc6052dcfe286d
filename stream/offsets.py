"""Which records of a partition a consumer has handed over, and which it skipped.

Faust's stream can lose records on a partition that a worker *keeps* through a rebalance:
records fetched under the old consumer generation are skipped and acknowledged (so the commit
passes them), and the same offsets fetched again after the seek are dropped as already read
(reported on faust-streaming too; docs/checker.md).  On a topic that is neither compacted
nor transactional, offsets are consecutive, so such a loss shows as a gap: a record whose
offset is more than one past the last one processed.  ``OffsetTrack`` says, for each record in
delivery order, whether to process it and which offsets are missing before it; the shell
(``agents.gapfill``) reads the missing ones back from the broker.

Pure: no clock, no I/O.
"""

from __future__ import annotations

from typing import Iterable, Optional

#: How many missing offsets one gap may name before it is reported as too large to read back:
#: far above any fetch buffer Faust could have skipped, far below a topic's retention.
MAX_GAP = 100_000


class OffsetTrack:
    """The last offset processed per partition, for partitions held without a break."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[int, int] = {}

    def last(self, partition: int) -> Optional[int]:
        return self._last.get(partition)

    def seed(self, partition: int, offset: int) -> None:
        """``offset`` is known processed (a snapshot says so): a later record more than one past
        it reveals a gap.  ``offset`` -1: nothing was processed yet, so offset 0 comes next."""
        self._last[partition] = offset

    def keep_only(self, partitions: Iterable[int]) -> None:
        """The partitions held from now on: forget the others (a partition that comes back
        later was someone else's meanwhile, so its last offset here says nothing)."""
        keep = set(partitions)
        for p in [p for p in self._last if p not in keep]:
            del self._last[p]

    def admit(self, partition: int, offset: int) -> tuple[bool, Optional[tuple[int, int]]]:
        """One delivered record: ``(process it?, missing [start, end) before it or None)``.

        A record at or below the last processed offset is a re-delivery (Faust seeks back to
        its committed offset after a rebalance): not processed again.  The first record of a
        partition not seen before starts the track.  The caller processes the missing range,
        then this record; the track then stands at ``offset``."""
        last = self._last.get(partition)
        if last is not None and offset <= last:
            return False, None
        self._last[partition] = offset
        if last is None or offset == last + 1:
            return True, None
        return True, (last + 1, offset)
