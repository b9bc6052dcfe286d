"""Lookups from inside a worker, wherever the partition lives (the query agent's resolver).

Each worker holds only the table partitions assigned to it.  The query desk runs on the worker
that owns the inbox partition, so a lawful request may name an address (or, through CGNAT, an
inside address) that another worker holds.  ``RemoteLookups.resolve_many`` answers each lookup

- locally (``agents.lookup.Lookups.resolve``) when this worker owns the address's partition, and
- otherwise through the internal lookup topics, exactly as ``agents.lookup_client`` does: the
  request, sealed under the deployment's lookup key (``stream.lookup_wire``), goes to the
  partition of ``<prefix>-lookup-requests`` that owns the address (explicit partition, no Kafka
  key), so Kafka delivers it to the owner's lookup agent; the sealed answer comes back on
  ``<prefix>-lookup-responses``, which this class tails without a consumer group (every
  partition, from the end at start), matches by request id (its Kafka key) and opens;

then completes CGNAT second hops the same way (``agents.lookup_client.complete_hops``).  A lookup
still unanswered after a third of the timeout is sent once more (sealed again: a new nonce, the same
request id; ``lookups_resent``).  An answer that does not arrive within the timeout is ``None``;
the caller refuses the lawful request as ``resolution-failed`` rather than answer from a part of
the table.

The consumer starts on the first remote lookup: a single worker (every partition) never creates
it.  Nothing on the internal topics is in plaintext: requests and answers are AES-GCM sealed,
a request that is not sealed under the lookup key, or is stale or replayed, gets no answer;
the topics are also the worker role's alone (``agents.acl``) and their retention is
bounded by the promise (``stream.policy``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import uuid
from typing import Any, Callable, Iterable, Optional

from stream.errors import CryptoError, Rejected

from .kafka_clients import Clients, faust_sends, send_all
from .lookup_client import complete_hops, hop_queries, request_partition

log = logging.getLogger("ipanon.lookups")

#: How long a remote lookup may take before the asker gives up (a rebalance in progress
#: leaves a partition unowned for a while).
TIMEOUT_S = 30.0


class RemoteLookups:
    def __init__(self, *, settings: Any, names: Any, seal: Any, requests: Any, clock: Callable[[], int],
                 owns: Callable[[str, Any], bool], resolve: Callable[..., dict],
                 active: Callable[[], Iterable[int]] = tuple, timeout_s: float = TIMEOUT_S,
                 count: Callable[..., None] = lambda *a: None) -> None:
        """``seal``: the deployment's ``LookupSeal``; ``requests``: the lookup request topic (a
        Faust topic); ``owns(operator, net)`` / ``resolve(operator, ip, port, from_ms, to_ms[,
        proto=])``: this worker's own table partitions (``Lookups.owns``, ``Lookups.resolve``);
        ``active()``: those partitions' numbers (logged); ``count(name, n)``: the worker's counter."""
        self.settings = settings
        self.names = names
        self.seal = seal
        self.requests = requests
        self.clock = clock
        self.owns = owns
        self.resolve = resolve
        self.active = active
        self.timeout_s = timeout_s
        self.tag = f"desk-{uuid.uuid4().hex[:12]}"
        self._waiting: dict[str, asyncio.Future] = {}
        self._consumer: Any = None
        self._task: Optional[asyncio.Task] = None
        self._lock: Optional[asyncio.Lock] = None
        self.remote = 0  # lookups sent through the topics (for tests and logs)
        self.count = count
        self._send = lambda outs: send_all(faust_sends, outs)  # acknowledged by the broker

    # -- the response tail ------------------------------------------------------------------

    async def _ensure_started(self) -> None:
        if self._consumer is not None:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._consumer is not None:
                return
            from aiokafka import TopicPartition

            s, topic = self.settings, self.names.lookup_responses
            c = Clients.of(s).aio_consumer(client_id="ipanon-desk-lookups", group_id=None)
            await c.start()
            try:
                tps = [TopicPartition(topic, i) for i in range(s.partitions)]
                c.assign(tps)
                await c.seek_to_end(*tps)
                for tp in tps:  # resolve the end offsets now: answers sent later are all seen
                    await c.position(tp)
            except BaseException:
                await c.stop()
                raise
            self._consumer = c
            self._task = asyncio.ensure_future(self._pump())
            log.info("lookups: asking other workers through %s (this worker holds partitions %s)",
                     self.names.lookup_requests, sorted(self.active()))

    async def _pump(self) -> None:
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=500)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # transient broker trouble: the waiting lookups time out
                log.warning("lookups: reading answers failed (%s); retrying", type(e).__name__)
                await asyncio.sleep(1.0)
                continue
            for recs in batch.values():
                for r in recs:
                    if r.value is None or r.key is None:  # heartbeats
                        continue
                    rid = r.key.decode("utf-8", "replace")
                    fut = self._waiting.get(rid)
                    if fut is None:
                        continue
                    try:
                        ans = self.seal.open_answer(r.value, request_id=rid)
                    except CryptoError:  # not sealed for this request under our key: ignored
                        continue
                    self._waiting.pop(rid, None)
                    if not fut.done():
                        fut.set_result(ans)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        if self._consumer is not None:
            await self._consumer.stop()
        self._consumer = self._task = None

    # -- asking -----------------------------------------------------------------------------

    async def _ask_remote(self, queries: list[dict]) -> list[Optional[dict]]:
        if not queries:
            return []
        await self._ensure_started()
        loop = asyncio.get_running_loop()
        ids, futs = [], []
        for q in queries:
            rid = f"{self.tag}-{uuid.uuid4().hex}"
            fut = loop.create_future()
            self._waiting[rid] = fut
            ids.append(rid)
            futs.append(fut)
        self.remote += len(queries)
        await self._send(self._sealed(queries, ids))
        # once, after a third of the timeout, the unanswered ones again: a lookup is a read and its
        # answer is matched by request id, so a request lost on the way (its owner restarted, say)
        # costs seconds and not the lawful request; a new seal has a new nonce, so it is no replay
        first = self.timeout_s / 3
        _, pending = await asyncio.wait(futs, timeout=first)
        if pending:
            again = [i for i, f in enumerate(futs) if f in pending]
            log.warning("lookups: %d of %d remote lookups unanswered after %.0f s; asking again",
                        len(again), len(queries), first)
            self.count("lookups_resent", len(again))
            await self._send(self._sealed([queries[i] for i in again], [ids[i] for i in again]))
            await asyncio.wait(pending, timeout=self.timeout_s - first)
        out = []
        for rid, fut in zip(ids, futs):
            self._waiting.pop(rid, None)
            out.append(fut.result() if fut.done() and not fut.cancelled() else None)
        return out

    def _sealed(self, queries: list[dict], ids: list[str]) -> list[tuple]:
        """The sealed request records, each to the partition that owns its address."""
        outs = []
        for q, rid in zip(queries, ids):
            part = request_partition(q["operator"], q["ip"], self.settings.partitions)
            outs.append((self.requests, None, self.seal.seal_request(q, request_id=rid, partition=part,
                                                                     now_ms=self.clock()), part))
        return outs

    def _local(self, q: dict) -> Optional[dict]:
        """Answered here if this worker owns the partition (None: ask the owner)."""
        net = ipaddress.ip_network(q["ip"])
        if not self.owns(q["operator"], net):
            return None
        try:
            args = (q["operator"], q["ip"], q.get("port"), q["from_ms"], q["to_ms"])
            # the flow's protocol only when the lookup names one (stream.mapping.resolve)
            return self.resolve(*args) if q.get("proto") is None else self.resolve(*args, proto=q["proto"])
        except Rejected as e:  # same contract as the lookup agent's answers
            return {"status": "refused", "reason": e.reason}
        except Exception:
            log.exception("lookups: unexpected error")
            return {"status": "error", "reason": "internal-error"}

    async def _answer(self, queries: list[dict]) -> list[Optional[dict]]:
        answers: list[Optional[dict]] = [self._local(q) for q in queries]
        far = [i for i, a in enumerate(answers) if a is None]
        for i, a in zip(far, await self._ask_remote([queries[i] for i in far])):
            answers[i] = a
        return answers

    async def resolve_many(self, queries: list[dict]) -> list[Optional[dict]]:
        """Answers to ``[{"operator", "ip", "port", "from_ms", "to_ms"}]`` in order, CGNAT second
        hops completed; None where no answer arrived in time."""
        answers = await self._answer(queries)
        hopping = [(i, hop_queries(queries[i], a)) for i, a in enumerate(answers) if a and a.get("hops")]
        if hopping:
            flat = [h for _, hs in hopping for h in hs]
            inner = await self._answer(flat)
            k = 0
            for i, hs in hopping:
                answers[i] = complete_hops(answers[i], inner[k:k + len(hs)])  # type: ignore[arg-type]
                k += len(hs)
        return answers
