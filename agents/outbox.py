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
the writes were made, and puts each batch straight into the producer's accumulator: Faust's
``publish_message`` per write was a large share of the worker's CPU (docs/benchmarks.md, "Hot
path cuts").  Each write's callback gets its own offset (the batch's base offset + its place in the
batch) once the batch is acknowledged.  Order per partition is unchanged; a failed batch hands
all of its writes to ``on_undelivered``.  Anything else (another producer, a test's stand-in
channel) is published write by write through the channel, as before.

The hand-over and a freeze (``agents.fence``).  ``halt`` says a stall was seen and not yet
cleared; a write must not reach the broker once a stall could have cost this worker its
partitions.  A freeze can fall anywhere, so the argument is about where a write can be between
the last ``halt`` asked and the broker, and it is closed at each place:

1. Outbox → accumulator.  ``halt`` is asked, then every batch of the flush is appended to the
   accumulator (``MessageAccumulator._append_batch``) with no ``await`` in between, so nothing
   else runs and nothing waits there: a freeze after the check is a freeze with the batches
   already in the accumulator (case 2).  ``send_batch`` is not used: it waits for the
   partition's previous batch to be sent, and a freeze inside that wait handed a whole batch
   over at the thaw, past the check (bb1a95c, reverted in 10b3615).
2. Accumulator → request.  The batches wait there for the producer's sender (one request in
   flight per broker).  The outbox's ``_Guard``, installed once on the producer, wraps the
   accumulator's ``drain_by_nodes``: each time the sender takes batches, every outbox batch
   still queued whose ``halt`` is now true is taken out and failed with ``PartitionsLost``.  The
   check and the take are one synchronous step of the sender.
3. Request → socket.  A request drained before the freeze is written by another task of the
   sender one loop step later.  The guard also wraps the producer client's ``send``: for a
   produce request that holds a partition with outbox batches in flight, once the connection
   is ready it asks ``halt`` and, if true, raises a retriable ``NodeNotReadyError`` instead of
   writing; aiokafka puts the batches back into the accumulator (case 2 then fails them).
   Otherwise the request goes to ``transport.write`` in the same synchronous step.
4. Bytes the kernel took reach the broker whether the process runs or not, and they were taken
   before the freeze, so before the group could give the partition away.

So no write leaves the process after a stall that ``halt`` can see, wherever the freeze fell.
What is left is outside the outbox: a request larger than the socket's free send buffer leaves
its tail in the event loop's buffer, written at the thaw (a request is at most the producer's
``max_request_size``, 1 MiB by default; not measured against the socket's buffer), and a freeze
the fence cannot see (shorter than its ``stall_s``, so not long enough to lose the session).

A failed batch (``PartitionsLost``) goes to ``on_undelivered`` as any undelivered write: the
table queues its keys' current state again for the partitions it still holds, and the revoke
that follows a lost membership drops them (``MappingStage.on_revoked``); if the membership held,
the next flush passes the fence's gate and writes them.  ``flush`` raises ``PartitionsLost``.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any, Callable, Optional

from aiokafka.errors import NodeNotReadyError, ProducerClosed
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.structs import TopicPartition

from .fence import PartitionsLost
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
        """Fill one batch per topic-partition in the writes' order and put them all into the
        aiokafka producer ``prod``'s accumulator; returns the (ack future, writes, True) handed
        over and whether ``halt`` stopped the hand-over (then every write goes back to the front
        of the queue, in order).  From ``halt`` to the last append there is no ``await``
        (module docstring, case 1)."""
        widths: dict[Any, tuple[str, int]] = {}   # channel -> (topic, partition count or 0)
        open_: dict[tuple[str, int], int] = {}    # (topic, partition) -> index in ``batches``
        batches: list[list] = []                  # [builder, topic, partition, [item indices]]
        try:
            await self._fill(prod, items, widths, open_, batches)
        except BaseException:
            self._items[:0] = items  # nothing handed over yet
            raise
        # -- no await from here to the return --
        if halt is not None and halt():
            self._items[:0] = items  # not handed over: back to the front, in order
            return [], True
        guard = _Guard.of(prod) if halt is not None else None
        acc = prod._message_accumulator
        if acc._closed:
            self._items[:0] = items
            raise ProducerClosed()
        if acc._exception is not None:
            self._items[:0] = items
            raise copy.copy(acc._exception)
        sensors = _sensors(items)
        handed: list = []
        for b, topic, partition, idx in batches:
            ws = [items[j] for j in idx]
            mb = acc._append_batch(b, TopicPartition(topic, partition))
            if guard is not None:
                guard.watch(mb, halt)
            handed.append((asyncio.shield(mb.future), ws, True))
            if sensors is not None:
                _count_out(sensors, topic, ws)
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
                b = _builder(prod, 1024 + len(key or b"") + len(value or b"")
                             + sum(len(k) + len(v or b"") for k, v in hs))
                if b.append(key=key, value=value, timestamp=None, headers=hs) is None:
                    raise ValueError(f"a write of {len(value or b'')} bytes fits no batch")
                batches.append([b, topic, partition, [j]])
                open_.pop((topic, partition), None)
                continue
            open_[(topic, partition)] = len(batches)
            batches.append([b, topic, partition, [j]])


#: bytes per partition batch: Faust's producer makes 16 KiB batches, and a flush (2 000
#: changelog writes) would then need several per partition, each waiting for the last to be sent
BATCH_BYTES = 256 * 1024


def _builder(prod: Any, size: int = 0) -> Any:
    acc = prod._message_accumulator
    return BatchBuilder(max(acc._batch_size, BATCH_BYTES, size), acc._compression_type, is_transactional=False)


class _Guard:
    """The fence's hold on batches the outbox put into an aiokafka producer (module docstring,
    cases 2 and 3).  One per producer: ``of`` installs it (wrapping the accumulator's
    ``drain_by_nodes`` and the client's ``send`` on these instances only)."""

    __slots__ = ("acc", "watched", "tps", "_drain", "_send", "client")

    def __init__(self, prod: Any) -> None:
        self.acc = prod._message_accumulator
        self.client = prod.client
        #: outbox batches not yet acknowledged or failed -> the ``halt`` of the flush that made them
        self.watched: dict[Any, Callable[[], bool]] = {}
        #: (topic, partition) -> how many watched batches it has
        self.tps: dict[tuple[str, int], int] = {}
        self._drain = self.acc.drain_by_nodes
        self._send = self.client.send
        self.acc.drain_by_nodes = self.drain_by_nodes
        self.client.send = self.send

    @classmethod
    def of(cls, prod: Any) -> "_Guard":
        g = getattr(prod, "_ipanon_fence_guard", None)
        if g is None:
            g = cls(prod)
            prod._ipanon_fence_guard = g
        return g

    def watch(self, batch: Any, halt: Callable[[], bool]) -> None:
        self.watched[batch] = halt
        tp = (batch.tp.topic, batch.tp.partition)
        self.tps[tp] = self.tps.get(tp, 0) + 1
        batch.future.add_done_callback(lambda _f, batch=batch, tp=tp: self._done(batch, tp))

    def _done(self, batch: Any, tp: tuple[str, int]) -> None:
        if self.watched.pop(batch, None) is not None:
            n = self.tps[tp] - 1
            if n:
                self.tps[tp] = n
            else:
                del self.tps[tp]

    def drain_by_nodes(self, *args: Any, **kwargs: Any) -> Any:
        """The sender takes batches: first fail every watched batch still queued whose ``halt``
        is true (case 2), in the same synchronous step."""
        if self.watched:
            stale = [b for b, halt in list(self.watched.items()) if halt()]
            for b in stale:
                q = self.acc._batches.get(b.tp)
                if q is None or b not in q:
                    continue  # drained already: its request meets ``send`` (case 3)
                q.remove(b)
                if not q:
                    del self.acc._batches[b.tp]
                if not b._drain_waiter.done():  # anyone waiting for the partition's queue goes on
                    b._drain_waiter.set_result(None)
                b.failure(exception=PartitionsLost(
                    "a stall was seen before the producer sent this batch; its partition may have a new owner"))
        return self._drain(*args, **kwargs)

    async def send(self, node_id: Any, request: Any, **kwargs: Any) -> Any:
        """The sender writes a request: one holding a partition with watched batches is written
        only if no ``halt`` is true at that moment, checked in the step that writes it (case 3)."""
        if self.tps and isinstance(request, ProduceRequest):
            if not await self.client.ready(node_id, **kwargs):
                raise NodeNotReadyError(f"Attempt to send a request to node which is not ready (node id {node_id}).")
            # -- no await from here to ``transport.write`` (the connection is ready) --
            if self._held(request):
                raise NodeNotReadyError("ipanon fence: a stall was seen; this request waits for it to be resolved")
        return await self._send(node_id, request, **kwargs)

    def _held(self, request: Any) -> bool:
        halts = set()
        for topic, parts in request._topics:
            for p, _ in parts:
                if (topic, p) in self.tps:
                    halts.update(h for b, h in self.watched.items() if b.tp.topic == topic and b.tp.partition == p)
        return any(h() for h in halts)


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
    if prod is not None and not _guardable(prod):
        return None
    return prod


_WARNED: list[bool] = []


def _guardable(prod: Any) -> bool:
    """The batch hand-over and its ``_Guard`` lean on aiokafka internals (tested with 0.14; the
    dependency is pinned below 0.15).  If any is missing, the writes go one by one through
    their channels, the slower path that needs none of them, never an unguarded batch."""
    acc = getattr(prod, "_message_accumulator", None)
    ok = (acc is not None and all(callable(getattr(acc, n, None)) for n in ("_append_batch", "drain_by_nodes"))
          and isinstance(getattr(acc, "_batches", None), dict) and callable(getattr(getattr(prod, "client", None),
                                                                                      "send", None)))
    if not ok and not _WARNED:
        _WARNED.append(True)
        import logging

        logging.getLogger(__name__).warning(
            "outbox: this aiokafka producer lacks the internals the guarded batch hand-over needs; "
            "writing one message at a time (slower, fence-safe)")
    return ok


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
    """Tell the sensors about ``ws`` (one topic's writes): once per batch where a sensor counts
    (ipanon's ``on_send_many``, Faust's ``Monitor``: the same totals as a call per write, which
    was costly per changelog write through Faust's ``SensorDelegate``), else once per write
    with a value (tombstones excluded, as Faust's own sends)."""
    try:
        sent = [w for w in ws if w[2] is not None]
        if not sent:
            return
        each = _each_sensor(sensors)
        if each is None:  # not Faust's delegate: call it as Faust's producer would
            for w in sent:
                sensors.on_send_initiated(None, topic, _Sent(w[2]), len(w[1] or b""), len(w[2]))
            return
        n = len(sent)
        for s in each:
            many = getattr(s, "on_send_many", None)
            if many is not None:
                many(topic, n)
            elif type(s) is _MONITOR[0]:  # Monitor.on_send_initiated: these two counters
                s.messages_sent += n
                s.messages_sent_by_topic[topic] += n
            else:
                for w in sent:
                    s.on_send_initiated(None, topic, _Sent(w[2]), len(w[1] or b""), len(w[2]))
    except Exception:  # metrics never stop a flush
        pass


_MONITOR: list[Any] = []  # [faust.sensors.monitor.Monitor, faust.sensors.base.SensorDelegate]


def _each_sensor(sensors: Any) -> Optional[list]:
    """The sensors of Faust's ``SensorDelegate`` (None for anything else)."""
    if not _MONITOR:
        from faust.sensors.base import SensorDelegate
        from faust.sensors.monitor import Monitor

        _MONITOR[:] = [Monitor, SensorDelegate]
    return list(sensors) if isinstance(sensors, _MONITOR[1]) else None
