"""Records Faust's stream skipped, read back before a Faust agent's batch goes on.

The lookup agent, the query desk and the answer router are Faust agents (``take_events``).  On a
partition a worker keeps through a rebalance, Faust's stream can skip records without handing
them to the agent: the checker lost lookup requests that way (docs/checker.md, "Lookups lost
on a partition kept through a rebalance").  Each of these agents passes every batch through
``GapFill.complete`` first.  ``stream.offsets.OffsetTrack`` finds the gaps: a record more than one
offset past the last one processed on its partition.  The missing offsets are read here from the
broker, with a consumer in no group (``assign`` + ``seek``), and put before the record that
revealed them.  Re-deliveries at or below the last processed offset, which Faust's seek after a
rebalance produces, are dropped.

A read-back record is a ``Refetched``, which has the fields the agents read from a Faust event
(``event.message.topic/partition/offset/key/value/headers``).  Faust does not know of it, so it
is not acked: Faust already acked it when it skipped it.  Counted as
``ipanon_stream_refetched_total{agent}``.  Offsets the broker no longer has (deleted by
retention before the read) are counted as ``ipanon_stream_gap_lost_total{agent}`` and logged.
If the read fails, this is logged too and the batch goes on: an agent that stopped for a broker
error would lose more than the gap.

The topics read here are neither compacted nor transactional, so their offsets are consecutive
and every gap is a skip.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from stream.offsets import MAX_GAP, OffsetTrack

from .kafka_clients import Clients
from .kafka_io import HEARTBEAT_KEY

log = logging.getLogger("ipanon")


@dataclass(frozen=True, slots=True)
class Refetched:
    """A record read back from the broker, shaped like a Faust event for the agents' reads."""

    topic: str
    partition: int
    offset: int
    key: Optional[bytes]
    value: Optional[bytes]
    headers: Any
    timestamp: Optional[int] = None

    @property
    def message(self) -> "Refetched":
        return self


async def read_range(clients: Clients, topic: str, partition: int, start: int, end: int, *,
                     timeout_s: float = 30.0) -> tuple[list[Refetched], int]:
    """The records at offsets ``[start, end)`` of one partition and how many of them the broker
    no longer has (its log starts later).  Raises ``TimeoutError`` if they cannot be read in
    ``timeout_s``."""
    from aiokafka import TopicPartition

    tp = TopicPartition(topic, partition)
    c = clients.aio_consumer(client_id="ipanon-gapfill", group_id=None, auto_offset_reset="earliest")
    await c.start()
    try:
        c.assign([tp])
        first = (await c.beginning_offsets([tp]))[tp]
        begin = max(start, first)
        out: list[Refetched] = []
        if begin < end:
            c.seek(tp, begin)
            deadline = time.monotonic() + timeout_s
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{topic}[{partition}] offsets {begin}..{end - 1}")
                batch = await c.getmany(tp, timeout_ms=int(min(500, left * 1000)) + 1)
                done = False
                for r in batch.get(tp, ()):
                    if r.offset >= end:
                        done = True
                        break
                    out.append(Refetched(r.topic, r.partition, r.offset, r.key, r.value, r.headers, r.timestamp))
                if done or (await c.position(tp)) >= end:
                    break
        return out, max(0, min(first, end) - start)
    finally:
        await c.stop()


class GapFill:
    """One agent's gap filler (see module doc).  ``count(name, n)``: the worker's counter."""

    def __init__(self, clients: Clients, topic: str, *, agent: str, count: Callable[..., None],
                 repeats: Optional[str] = None, read: Optional[Callable[..., Any]] = None, app: Any = None) -> None:
        """``repeats``: the counter re-deliveries are counted under (None: not counted); ``app``:
        the Faust app whose assignments ``on_assigned`` follows."""
        self.clients = clients
        self.repeats = repeats
        self.topic = topic
        self.agent = agent
        self.count = count
        self.track = OffsetTrack()
        self._read = read or read_range
        if app is not None:
            app.on_partitions_assigned.connect(self.on_assigned)

    def seed(self, partition: int, offset: int) -> None:
        """``offset`` is known processed (the query desk's snapshot)."""
        self.track.seed(partition, offset)

    async def on_assigned(self, sender: Any = None, assigned: Any = (), **kw: Any) -> None:
        """Faust's ``on_partitions_assigned`` receiver: forget partitions of ``topic`` not held now."""
        self.track.keep_only(tp.partition for tp in assigned if tp.topic == self.topic)

    async def complete(self, events: Sequence[Any]) -> list[Any]:
        """``events`` without re-deliveries, each gap's records read back before the event after it."""
        out: list[Any] = []
        for event in events:
            msg = event.message
            process, gap = self.track.admit(msg.partition, msg.offset)
            if gap is not None:
                out.extend(await self._fill(msg.partition, *gap))
            if process:
                out.append(event)
            elif self.repeats:
                self.count(self.repeats)
        return out

    async def _fill(self, partition: int, start: int, end: int) -> list[Refetched]:
        where = f"{self.topic}[{partition}] offsets {start}..{end - 1}"
        if end - start > MAX_GAP:
            log.error("%s: %d records were skipped by the consumer at %s; too many to read back",
                      self.agent, end - start, where)
            self.count(f"stream_gap_lost:{self.agent}", end - start)
            return []
        try:
            recs, gone = await self._read(self.clients, self.topic, partition, start, end)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.error("%s: could not read back %d records the consumer skipped at %s (%s)",
                      self.agent, end - start, where, type(e).__name__)
            self.count(f"stream_gap_lost:{self.agent}", end - start)
            return []
        beats = sum(1 for r in recs if r.value is None and r.key == HEARTBEAT_KEY)
        # only heartbeats missing (a snapshot older than the committed offset, say): nothing was at risk
        log.log(logging.WARNING if beats < len(recs) or gone else logging.INFO,
                "%s: %d records at %s were not handed over by the consumer; read %d back (%d heartbeats)",
                self.agent, end - start, where, len(recs), beats)
        self.count(f"stream_refetched:{self.agent}", len(recs))
        if gone:
            log.error("%s: %d of them were already deleted by retention", self.agent, gone)
            self.count(f"stream_gap_lost:{self.agent}", gone)
        return recs
