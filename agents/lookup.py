"""Lookups on this worker's table partitions: the lookup agent and the resolver behind it.

A lookup request on ``<prefix>-lookup-requests`` is sealed under the deployment's lookup key
(``stream.lookup_wire``) and sent to the partition that owns its address, so Faust hands it to
the worker holding that table partition.  ``Lookups`` opens it, answers from the table
(``stream.mapping.resolve``: the CGNAT chain, realms, deterministic NAT; a second hop on another
worker comes back as ``hops`` for the asker) and seals the answer; a request that is forged,
stale, from the future, on the wrong partition or replayed gets no answer.  The query desk's
``agents.remote_lookup`` uses ``owns`` and ``resolve`` for the addresses held here.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Mapping, Optional

from stream import intervals as iv
from stream import mapping
from stream.errors import Rejected
from stream.lookup_wire import nonce_of

from .kafka_io import HEARTBEAT_KEY
from .mapping_table import partition_for

log = logging.getLogger("ipanon")
lookup_log = logging.getLogger("ipanon.lookups")


class Lookups:
    def __init__(self, *, operators: Mapping[str, Any], rules: Mapping[str, Any], vaults: Mapping[str, Any],
                 load: Callable[[Any, bytes], tuple[Any, iv.Intervals]], active: Callable[[], Any],
                 partitions: int, clock: Callable[[], int], count: Callable[..., None], seal: Any,
                 replays: Any, refusals: Any, responses: Any, flush: Callable[[], Awaitable[None]],
                 gaps: Any) -> None:
        """``load(op, key)``: a table value opened (``TableWriter.load``); ``active()``: the
        table partitions this worker holds; ``seal``: the ``LookupSeal``; ``replays``: the
        ``ReplayGuard``; ``refusals``: the log filter for refusal lines; ``responses``: the
        lookup response topic; ``flush()``: publish what was queued (``Pipeline.ebb``);
        ``gaps``: the ``agents.gapfill.GapFill`` of the request topic."""
        self.operators = operators
        self.rules = rules
        self.vaults = vaults
        self.load = load
        self.active = active
        self.partitions = partitions
        self.clock = clock
        self.count = count
        self.seal = seal
        self.replays = replays
        self.refusals = refusals
        self.responses = responses
        self.flush = flush
        self.gaps = gaps

    def intervals_for(self, operator: str, slot: str, addr: Any) -> list[iv.Interval]:
        op = self.operators[operator]
        vault = self.vaults[operator]
        out: list[iv.Interval] = []
        for net in iv.candidate_networks(addr):
            _, ivs = self.load(op, vault.key(slot, net))
            out.extend(ivs)
        return out

    def owns(self, operator: str, net: Any) -> bool:
        """Is the table partition holding ``net``'s entries assigned to this worker?"""
        key = iv.routing_key(operator, net).encode()
        return partition_for(key, self.partitions) in self.active()

    def resolve(self, operator: str, address: str, port: Optional[int], from_ms: int, to_ms: int,
                proto: Optional[int] = None) -> dict:
        """Answer "who held ``address`` (``port``) during ``[from_ms, to_ms)``" from this
        worker's partitions (``stream.mapping.resolve``: the CGNAT chain, realms, deterministic
        NAT; a second hop on another worker comes back as ``hops`` for the asker)."""
        if operator not in self.operators:
            raise Rejected("unknown-operator", "operator has no profile")
        return mapping.resolve(address, port, from_ms, to_ms, now_ms=self.clock(), rules=self.rules[operator],
                               intervals_for=lambda slot, addr: self.intervals_for(operator, slot, addr),
                               owns=lambda net: self.owns(operator, net), proto=proto)

    def answer_lookup(self, value: Optional[bytes], partition: int, now: int) -> Optional[tuple[bytes, bytes]]:
        """The sealed answer ``(key, value)`` to one record of the lookup request topic, or None
        when it must not be answered: not sealed under the lookup key (forged, altered, a
        plaintext request from anyone), stale, from the future, sent to another partition than
        it names, or a replay (``stream.lookup_wire``).  Each refusal is counted
        (``ipanon_lookup_refused_total{reason}``) and logged once per reason per 10 s."""
        try:
            req = self.seal.open_request(value, partition=partition, now_ms=now)
            self.replays.check(nonce_of(value), req["ts_ms"], now)  # type: ignore[arg-type]
        except Rejected as e:
            self.count(f"lookup_refused:{e.reason}")
            # the reason is in the template, so the rate limit is per reason (agents.logfilter)
            rec = logging.LogRecord("ipanon.lookups", logging.WARNING, __file__, 0,
                                    f"lookup: refused a request ({e.reason}), not answered", (), None)
            if self.refusals.filter(rec):
                lookup_log.warning("%s", rec.getMessage())
            return None
        try:
            args = (req["operator"], req["ip"], req["port"], int(req["from_ms"]), int(req["to_ms"]))
            # the flow's protocol only when the request names one (stream.mapping.resolve)
            ans = self.resolve(*args) if req.get("proto") is None else self.resolve(*args, proto=req["proto"])
        except Rejected as e:
            ans = {"status": "refused", "reason": e.reason}
        except (ValueError, KeyError, TypeError):
            ans = {"status": "refused", "reason": "bad-request"}
        except Exception:  # never let one request kill the agent (#175)
            log.exception("lookup: unexpected error")
            ans = {"status": "error", "reason": "internal-error"}
        rid = req["id"]
        ans["id"] = rid
        self.count(f"lookup_answers:{ans.get('status', 'unknown')}")
        return rid.encode(), self.seal.seal_answer(ans, request_id=rid)

    async def run(self, stream: Any) -> None:
        """The lookup agent (a Faust agent on the request topic: its partitions are the table's)."""
        async for events in stream.take_events(256, within=0.01):
            # without re-deliveries, records Faust's stream skipped in a rebalance read back
            for event in await self.gaps.complete(events):
                msg = event.message
                if msg.value is None and msg.key == HEARTBEAT_KEY:
                    continue
                out = self.answer_lookup(msg.value, msg.partition, self.clock())
                if out is not None:
                    self.responses.send_soon(key=out[0], value=out[1])
                    self.count("lookups")
            await self.flush()
