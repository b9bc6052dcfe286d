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

The hand-over.  When the writes go to Faust topics of an app whose producer is plain aiokafka
(the worker), ``flush`` fills one aiokafka ``BatchBuilder`` per topic-partition, in the order
the writes were made, and hands each batch over with ``send_batch``: Faust's ``publish_message``
per write was ≈ 10 % of the worker's CPU (docs/benchmarks.md, "Hot path cuts").  Each write's
callback gets its own offset (the batch's base offset + its place in the batch) once the batch
is acknowledged.  Order per partition is unchanged; ``halt`` is asked before each batch, and a
failed batch hands all of its writes to ``on_undelivered``.  Anything else (another producer, a
test's stand-in channel) is published write by write through the channel, as before.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Optional

from .kafka_clients import _partitions, key_partition

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
        halt = self.halt if gated else None
        async with self._lock:
            items, self._items = self._items, []
            prod = _aio_producer(items)
            if prod is None:
                handed, halted = await self._one_by_one(items, halt)
            else:
                handed, halted = await self._batches(prod, items, halt)
        n = 0
        if handed:
            results = await asyncio.gather(*(h[0] for h in handed), return_exceptions=True)
            failed: list[Write] = []
            for (_, ws, batched), r in zip(handed, results):
                n += len(ws)
                if isinstance(r, BaseException):
                    failed.extend(ws)
                elif batched:  # the batch's base offset: each write's own (Faust calls its own)
                    for i, w in enumerate(ws):
                        if w[5] is not None:
                            w[5](_Done(r._replace(offset=r.offset + i)))
            if failed:
                if self.on_undelivered is not None:
                    self.on_undelivered(failed)
                raise next(r for r in results if isinstance(r, BaseException))
        if halted:
            return n + await self.flush()  # through the gate: it waits, or raises
        return n

    async def _one_by_one(self, items: list[Write], halt: Optional[Callable[[], bool]]) -> tuple[list, bool]:
        """Publish each write through its channel (Faust's ``publish_message``); returns the
        (ack future, [write], False) handed over and whether ``halt`` stopped the hand-over."""
        handed: list = []
        i = 0
        try:
            for i, (channel, key, value, partition, headers, callback) in enumerate(items):
                if halt is not None and halt():
                    self._items[:0] = items[i:]  # not handed over: back to the front, in order
                    return handed, True
                fm = channel.as_future_message(key=key, value=value, partition=partition, headers=headers,
                                               key_serializer="raw", value_serializer="raw", callback=callback)
                handed.append((await channel.publish_message(fm, wait=False), (items[i],), False))
        except BaseException:
            self._items[:0] = items[i:]  # not handed to the producer: keep them first, in order
            raise
        return handed, False

    async def _batches(self, prod: Any, items: list[Write], halt: Optional[Callable[[], bool]]) -> tuple[list, bool]:
        """Fill one batch per topic-partition in the writes' order and hand each to the aiokafka
        producer ``prod``; returns the (ack future, writes, True) handed over and whether ``halt``
        stopped the hand-over (the writes of batches not handed over go back to the front of the
        queue, in order)."""
        widths: dict[Any, tuple[str, int]] = {}   # channel -> (topic, partition count or 0)
        open_: dict[tuple[str, int], int] = {}    # (topic, partition) -> index in ``batches``
        batches: list[list] = []                  # [builder or None (alone), topic, partition, [item indices]]
        try:
            await self._fill(prod, items, widths, open_, batches)
        except BaseException:
            self._items[:0] = items  # nothing handed over yet
            raise
        sensors = _sensors(items)
        handed: list = []
        k = 0
        try:
            for k, (b, topic, partition, idx) in enumerate(batches):
                if halt is not None and halt():
                    self._items[:0] = _rest(items, batches[k:])  # not handed over: back to the front, in order
                    return handed, True
                ws = [items[j] for j in idx]
                if b is None:
                    _, key, value, _, headers, _ = ws[0]
                    fut = await prod.send(topic, value, key=key, partition=partition, headers=_headers(headers))
                else:
                    fut = await prod.send_batch(b, topic, partition=partition)
                handed.append((fut, ws, True))
                if sensors is not None:
                    _count_out(sensors, topic, ws)
        except BaseException:
            self._items[:0] = _rest(items, batches[k:])  # not handed to the producer: keep them first, in order
            raise
        return handed, False

    @staticmethod
    async def _fill(prod: Any, items: list[Write], widths: dict, open_: dict, batches: list) -> None:
        for j, (channel, key, value, partition, headers, _cb) in enumerate(items):
            tw = widths.get(channel)
            if tw is None:
                topic = channel.get_topic_name()
                await prod.client._wait_on_metadata(topic)
                parts = _partitions(prod, topic)
                tw = widths[channel] = (topic, len(parts) if set(parts) == set(range(len(parts))) else 0)
            topic, width = tw
            if partition is None:  # what Faust's producer (aiokafka's partitioner) would choose
                partition = (key_partition(key, width) if key is not None and width
                             else prod._partition(topic, None, key, value, key, value))
            hs = _headers(headers)
            k = open_.get((topic, partition))
            if k is not None and batches[k][0].append(key=key, value=value, timestamp=None, headers=hs) is not None:
                batches[k][3].append(j)
                continue
            b = _builder(prod)  # none open, or the open one is full
            if b.append(key=key, value=value, timestamp=None, headers=hs) is None:  # larger than a batch: alone
                batches.append([None, topic, partition, [j]])
                open_.pop((topic, partition), None)
                continue
            open_[(topic, partition)] = len(batches)
            batches.append([b, topic, partition, [j]])


#: bytes per partition batch: Faust's producer makes 16 KiB batches, and a flush (2 000
#: changelog writes) would then need several per partition, each waiting for the last to be sent
BATCH_BYTES = 256 * 1024


def _builder(prod: Any) -> Any:
    try:
        from aiokafka.producer.message_accumulator import BatchBuilder

        acc = prod._message_accumulator
        return BatchBuilder(max(acc._batch_size, BATCH_BYTES), acc._compression_type, is_transactional=False)
    except (ImportError, AttributeError, TypeError):  # another aiokafka layout: the producer's own size
        return prod.create_batch()


class _Done:
    """What a write's callback gets once acknowledged (as Faust's ``FutureMessage``):
    ``result()`` is its ``RecordMetadata``, with its own offset."""

    __slots__ = ("_md",)

    def __init__(self, md: Any) -> None:
        self._md = md

    def result(self) -> Any:
        return self._md


def _aio_producer(items: list[Write]) -> Any:
    """The plain aiokafka producer of the Faust app every write's channel belongs to, or None
    (then the writes go through their channels one by one)."""
    prod = None
    seen: set[int] = set()
    for w in items:
        if id(w[0]) in seen:
            continue
        seen.add(id(w[0]))
        try:
            p = w[0].app.producer._producer
        except AttributeError:
            return None
        if p is None or (prod is not None and p is not prod) or getattr(p, "_txn_manager", None) is not None:
            return None
        prod = p
    return prod


def _headers(headers: Any) -> list:
    if not headers:
        return []
    return list(headers.items()) if isinstance(headers, dict) else list(headers)


def _rest(items: list[Write], batches: list[list]) -> list[Write]:
    """The writes of ``batches``, in their original order."""
    return [items[j] for j in sorted(j for b in batches for j in b[3])]


class _Sent:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _sensors(items: list[Write]) -> Any:
    """The app's Faust sensors (records-out metrics see these writes as they saw Faust's sends)."""
    try:
        return items[0][0].app.sensors if items else None
    except AttributeError:
        return None


def _count_out(sensors: Any, topic: str, ws: list[Write]) -> None:
    try:
        for w in ws:
            if w[2] is not None:
                sensors.on_send_initiated(None, topic, _Sent(w[2]), len(w[1] or b""), len(w[2]))
    except Exception:  # metrics never stop a flush
        pass
