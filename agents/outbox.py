"""Ordered writes with one flush that waits for the broker's acknowledgements.

Why not Faust's ``send_soon``?  Faust's ``ProducerBuffer`` publishes its queue from a background
task, one message at a time with an ``await`` between taking a message and handing it to the
producer.  Any second reader of that queue (a batch flush, a timer) can take the next message
and publish it first, so two writes of the same key can reach the partition in the opposite
order.  For the table's changelog that is fatal: a restore applies the records in log order, so
an Interim's "still open" written after the Stop's "closed" brings back an open interval.

An ``Outbox`` keeps its writes in the order they were made.  ``flush`` takes everything queued so
far under a lock and hands it to the producer one message after the other, so concurrent flushes
(the mapping stage, the sweeper and the heartbeat timer) never reorder writes; the producer keeps
per-partition order from there.  It then waits until every one of them is acknowledged, so a
stage commits its input offsets only after its outputs are safe.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Optional

#: one queued write: channel (a Faust topic), key, value, partition, headers, ack callback
Write = tuple[Any, Optional[bytes], Optional[bytes], Optional[int], Any, Optional[Callable[[Any], None]]]


class Outbox:
    __slots__ = ("_items", "_lock", "on_undelivered", "gate", "halt")

    def __init__(self, on_undelivered: Optional[Callable[[list[Write]], None]] = None) -> None:
        self._items: list[Write] = []
        self._lock: Optional[asyncio.Lock] = None  # made on first flush, inside the running loop
        #: called with the writes the producer took but the broker never acknowledged (in their
        #: order) before ``flush`` raises: a writer whose state ran ahead of its log (the table)
        #: queues its current state again, because re-processing the input would change nothing
        self.on_undelivered = on_undelivered
        #: awaited before every flush; raises to keep the writes queued (``agents.fence``: a
        #: worker that was frozen writes nothing until its group confirms its partitions)
        self.gate: Optional[Callable[[], Any]] = None
        #: asked before each hand-over to the producer: true stops the hand-over there (the rest
        #: stays queued) and sends the flush back through ``gate`` — a freeze can fall between two
        #: writes of one flush, each hand-over being an ``await``
        self.halt: Optional[Callable[[], bool]] = None

    def add(self, channel: Any, key: Optional[bytes], value: Optional[bytes], *, partition: Optional[int] = None,
            headers: Any = None, callback: Optional[Callable[[Any], None]] = None) -> None:
        self._items.append((channel, key, value, partition, headers, callback))

    def __len__(self) -> int:
        return len(self._items)

    def discard(self, drop: Callable[[Write], bool]) -> int:
        """Remove the queued writes ``drop`` selects (never handed to the producer); returns how
        many.  The revoke of partitions this worker lost while frozen drops their writes."""
        keep = [w for w in self._items if not drop(w)]
        n = len(self._items) - len(keep)
        self._items = keep
        return n

    async def flush(self, *, gated: bool = True) -> int:
        """Publish every write queued so far, in order; return once all are acknowledged (raises
        the first delivery error).  Returns how many were written.  ``gate`` first, if set and
        ``gated``."""
        if gated and self.gate is not None:
            await self.gate()
        if self._lock is None:
            self._lock = asyncio.Lock()
        futs = []
        halted = False
        halt = self.halt if gated else None
        async with self._lock:
            items, self._items = self._items, []
            i = 0
            try:
                for i, (channel, key, value, partition, headers, callback) in enumerate(items):
                    if halt is not None and halt():
                        self._items[:0] = items[i:]  # not handed over: back to the front, in order
                        items, halted = items[:i], True
                        break
                    fm = channel.as_future_message(key=key, value=value, partition=partition, headers=headers,
                                                   key_serializer="raw", value_serializer="raw", callback=callback)
                    futs.append(await channel.publish_message(fm, wait=False))
            except BaseException:
                self._items[:0] = items[i:]  # not handed to the producer: keep them first, in order
                raise
        if futs:
            results = await asyncio.gather(*futs, return_exceptions=True)
            failed = [items[j] for j, r in enumerate(results) if isinstance(r, BaseException)]
            if failed:
                if self.on_undelivered is not None:
                    self.on_undelivered(failed)
                raise next(r for r in results if isinstance(r, BaseException))
        if halted:
            return len(futs) + await self.flush()  # through the gate: it waits, or raises
        return len(futs)
