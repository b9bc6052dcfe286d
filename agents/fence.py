"""A worker that was frozen must not write the table's changelog until it knows it still owns it.

The mapping stage's consumer joins no group (``agents.mapping_stage``): it writes the partitions
Faust's group gave the table, and learns that it lost them only from Faust's revoke callback.
A worker that stops running for longer than the group's session timeout (SIGSTOP, a VM pause, a
swap storm) is declared dead; its partitions go to another worker, which restores them and goes
on.  When the frozen worker thaws, its event loop resumes where it stopped: without a fence, the
batch it had in hand — decided on its now stale copy — is flushed to the changelog *after* the
new owner's writes, and the next restore brings back the older answer (h6's frozen-worker test:
565–576 of ~1 760 keys stale, 14–26 wrong lookups, at 444d4c1).

The fence notices the freeze as a gap in its own clock: a ticker in the worker's event loop
notes the time every ``tick_s``; when the time since the last tick exceeds ``stall_s`` (half the
session timeout), the process may have been away long enough to lose its membership.  Every
flush of the table's outbox passes ``ready()`` first (``Outbox.gate``): after a stall it waits
``confirm_s`` (two heartbeat intervals and a second: time for the group's coordinator to answer
the first heartbeat after the thaw), and raises ``PartitionsLost`` as soon as ``lost()`` says the
membership is gone (Faust's consumer generation reset, or a rebalance started).  The writes stay
queued; the revoke that follows discards the changelog writes of the revoked partitions and makes
the table forget its copy of them (``MappingStage.on_revoked``), and the bindings behind them,
never committed, are read again by their owner.  If the membership held through the wait, the
flush goes on and the stall is forgotten.

A freeze *inside* a flush, after the writes were handed to the producer: the outbox's guard on
that producer fails the batches the sender would take or write after a stall seen here
(``agents/outbox.py``, module docstring).  Left open: the tail of a request the socket had not
taken when the freeze came is written at the thaw; Kafka's transactional producers would fence
it (by producer epoch), at the cost of a producer per partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

log = logging.getLogger("ipanon.fence")


class PartitionsLost(Exception):
    """The worker stalled past the point where its group membership can be trusted, and the group
    confirms it lost it: nothing queued may be written."""


class Fence:
    def __init__(self, *, stall_s: float, confirm_s: float, lost: Callable[[], bool],
                 tick_s: float = 0.5, clock: Callable[[], float] = time.monotonic,
                 count: Callable[[str], None] = lambda name: None) -> None:
        if stall_s <= tick_s:
            raise ValueError("stall_s must exceed tick_s")
        self.stall_s = stall_s
        self.confirm_s = confirm_s
        self.lost = lost
        self.count = count        # "fence_stalls", "fence_refusals": ipanon_fence_*_total
        self.tick_s = tick_s
        self.clock = clock
        self._last = clock()
        self._running = False     # without its ticker the fence has no clock: it never blocks
        self._stalled = False
        self.stalls = 0           # stalls seen (counted once each)
        self.fenced = 0           # flushes refused after a stall

    async def run(self) -> None:
        """The ticker (a task of the worker's event loop)."""
        self._running = True
        self._last = self.clock()
        try:
            while True:
                await asyncio.sleep(self.tick_s)
                self._note()
        finally:
            self._running = False

    def _note(self) -> None:
        now = self.clock()
        if now - self._last > self.stall_s and not self._stalled:
            self._stalled = True
            self.stalls += 1
            self.count("fence_stalls")
            log.warning("fence: the event loop did not run for %.1f s (limit %.1f s): no changelog "
                        "write until the group confirms this worker still owns its partitions",
                        now - self._last, self.stall_s)
        self._last = now

    def suspect(self) -> bool:
        """A stall was seen (or is being lived through right now) and not yet cleared."""
        if not self._running:
            return False
        self._note()
        return self._stalled

    async def ready(self) -> None:
        """Return when writing is safe; raise ``PartitionsLost`` when it is not."""
        if not self.suspect():
            return
        deadline = self.clock() + self.confirm_s
        while True:
            if self.lost():
                self.fenced += 1
                self.count("fence_refusals")
                raise PartitionsLost("this worker stalled past its group session; its partitions may have a new owner")
            if self.clock() >= deadline:
                break
            await asyncio.sleep(0.05)
        log.info("fence: membership held through the stall; writing again")
        self._stalled = False

    def clear(self) -> None:
        """A rebalance completed: the assignment is current again."""
        self._stalled = False
        self._last = self.clock()
