"""The upgrade drain: statistics for bindings an earlier release left to a stats stage.

Statistics are made at ingest, in the same batch as the bindings (``StatsAgent.for_ingest``):
each event crosses Kafka twice inside a worker (raw → ingest, bindings → mapping stage).
Releases before that read the bindings topic a second time, in a stats stage of its own
(consumer group ``<app id>-stats``).  Bindings such a release's ingest wrote that its stats
stage had not read yet when it stopped would otherwise never be counted.  So, when a worker
starts:

- the group ``<app id>-stats`` has committed nothing on the bindings topic (a deployment that
  began on this release): nothing to do;
- it has committed every partition up to the end: nothing to do;
- otherwise the worker runs the old stage (``StatsAgent.handle_batch``: decode, pseudonymise,
  dead-letter what fails) in that group until the group has committed every partition up to
  the ends taken at the start, marks each partition drained (commit metadata
  ``ipanon-drained``) and stops it for good.  A later start finds the marks and drains
  nothing, whatever ingest appended since; a stage of the old release still running commits
  over a mark, so the next start of a new worker drains again.

Bindings this release's ingest wrote meanwhile are read too, and produce the stats records and
contributions ingest already sent: the same record ids, which readers and the aggregate stage
count once (docs/statistics.md).  Several workers starting together share the group's
partitions, and each stops once the group, whoever read what, has reached its targets.

One gap remains, said in docs/operations.md: a worker of the old release that stops for good
*after* every new worker's drain ended takes the bindings its ingest wrote since and its stats
stage had not read with it (let its stats stage catch up, or restart one new worker).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Optional

log = logging.getLogger("ipanon.stats")

#: how often the drain asks whether the group has reached its targets
POLL_S = 2.0
#: commit metadata of a partition the drain has read up to its target: the group counts as
#: drained there whatever ingest appends later (an old release's stage commits "" over it)
DRAINED = "ipanon-drained"


def _offsets(c: Any, topic: str) -> dict[int, tuple[Optional[int], str]]:
    """partition → (committed offset or None, its commit metadata) of ``c``'s group on ``topic``."""
    from kafka import TopicPartition

    out = {}
    for p in sorted(c.partitions_for_topic(topic) or ()):
        om = c.committed(TopicPartition(topic, p), metadata=True)
        out[p] = (om.offset, om.metadata or "") if om is not None and om.offset is not None and om.offset >= 0 \
            else (None, "")
    return out


def _read(clients: Any, group: str, topic: str, *, ends: bool) -> tuple[dict, dict[int, int]]:
    """``_offsets`` of ``group`` on ``topic`` and, with ``ends``, the topic's end offsets, through
    one kafka-python consumer that never joins the group."""
    from kafka import TopicPartition

    c = clients.consumer(client_id="ipanon-stats-drain", group_id=group)
    try:
        got = _offsets(c, topic)
        if not ends or not got:
            return got, {}
        return got, {tp.partition: off for tp, off in c.end_offsets([TopicPartition(topic, p) for p in got]).items()}
    finally:
        c.close()


def _done(off: Optional[int], md: str, end: int) -> bool:
    """A partition the group has read up to ``end``, or marked drained."""
    return md == DRAINED or (off or 0) >= end


def group_behind(clients: Any, group: str, topic: str) -> Optional[dict[int, int]]:
    """The end offsets ``group`` must reach on ``topic`` (partition → offset), or None when
    there is nothing to drain: the group never committed there, or every partition is read to
    its end or marked drained.  Blocking (kafka-python): run it in a thread."""
    got, ends = _read(clients, group, topic, ends=True)
    if not got or all(off is None for off, _ in got.values()):
        return None
    if all(_done(off, md, ends[p]) for p, (off, md) in got.items()):
        return None
    return ends


def drained(clients: Any, group: str, topic: str, targets: dict[int, int]) -> tuple[bool, bool]:
    """(every partition read up to ``targets``, every partition marked drained)."""
    got, _ = _read(clients, group, topic, ends=False)
    state = [got.get(p, (None, "")) for p in targets]
    return (all(_done(off, md, end) for (off, md), end in zip(state, targets.values())),
            all(md == DRAINED for _, md in state))


class StatsDrain:
    """Runs the old stats stage only while an earlier release's bindings wait for it."""

    def __init__(self, *, settings: Any, topic: str, handle: Callable[[list[Any]], Awaitable[list[Any]]],
                 make_stage: Callable[..., Any], name: str = "stats") -> None:
        from .acl import worker_groups
        from .kafka_clients import Clients

        self.clients = Clients.of(settings)
        self.topic = topic
        self.group = worker_groups(settings.app_id)[name]
        self.handle = handle
        self.make_stage = make_stage
        self.name = name
        self.targets: Optional[dict[int, int]] = None
        self.state = "starting"  # → "idle" (nothing to read) | "draining" → "done"

    def _commit_at(self, tp: Any, end: int) -> tuple[int, str]:
        """The stage's commits: a partition read past its target is marked drained."""
        return end, DRAINED if self.targets is not None and end >= self.targets.get(tp.partition, 0) else ""

    async def _mark(self, stage: Any) -> None:
        """Mark the partitions this member holds, all read up to their targets, drained."""
        from aiokafka.structs import OffsetAndMetadata

        c = stage.consumer
        if c is None:
            return
        async with stage._lock:
            marks = {}
            for tp in c.assignment():
                off = await c.committed(tp)
                if off is None and self.targets.get(tp.partition, 0) == 0:
                    off = 0  # empty at the start and never committed: nothing to read there
                if off is not None and off >= self.targets.get(tp.partition, 0):
                    marks[tp] = OffsetAndMetadata(off, DRAINED)
            if marks:
                await c.commit(marks)

    async def run(self) -> None:
        """The app task: check once, drain if needed, then return (cancelled with the worker)."""
        while True:
            try:
                self.targets = await asyncio.to_thread(group_behind, self.clients, self.group, self.topic)
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("stats drain: could not read the %s group's offsets; retrying in 5 s", self.group,
                            exc_info=True)
                await asyncio.sleep(5.0)
        if self.targets is None:
            self.state = "idle"
            return
        self.state = "draining"
        log.info("stats drain: %s holds bindings an earlier release left for its stats stage; reading them "
                 "in group %s up to %s", self.topic, self.group, self.targets)
        stage = self.make_stage(self.name, [self.topic], self.handle, role="bindings")
        stage.count_in = False  # the mapping stage counts bindings read
        stage.static = False    # leaving for good: its partitions move at once
        stage.commit_hook = self._commit_at
        task = asyncio.ensure_future(stage.run())
        try:
            while True:
                await asyncio.sleep(POLL_S)
                try:
                    reached, marked = await asyncio.to_thread(drained, self.clients, self.group, self.topic,
                                                              self.targets)
                    if marked:
                        break
                    if reached:
                        await self._mark(stage)
                except Exception:
                    log.warning("stats drain: progress check failed; will retry", exc_info=True)
        finally:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # pragma: no cover - BatchStage.run only ends by cancellation
                log.exception("stats drain: stage ended with an error")
        self.state = "done"
        log.info("stats drain: done; the bindings topic is read by the mapping stage alone from now on")
