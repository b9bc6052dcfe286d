"""What the query desk's decisions become (``agents.query_agent``, docs/query-agent.md).

``QueryAgent`` turns each inbox record into a decision of the pure desks
(``stream.access.QueryDesk``: requests and approvals; ``stream.hold.HoldDesk``: legal holds);
``DeskOutcomes`` acts on it, through the desk's one write path (``agents.desk_writer``):

- unauthenticated junk is counted per claimed identity in the ``JunkLedger`` (audited later
  as a summary, so a flood cannot grow the audit trail), everything else is audited event by
  event (ids, digests and reason codes only: ``stream.audit.check_event``);
- the status reply goes to the responses topic under the request (or hold) id;
- a request that is ``ready`` is resolved (on whichever worker owns each address) and answered
  by the desk, which seals the answer to the authority's key; if resolution fails the request
  is refused as ``resolution-failed`` and audited so: never a partial or wrong answer;
- a hold that took effect (or ended) is published to (or tombstoned on) the holds topic.

It decides nothing itself: what is allowed, refused, junk or ready is the desks' decision.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from stream.access import Decision, JunkLedger, is_junk
from stream.hold import HoldDecision
from stream.model import ip_text

from .desk_writer import DeskWriter

log = logging.getLogger("ipanon.query")


class DeskOutcomes:
    """``resolve(address, port, from_ms, to_ms, proto=)``: the resolver contract of
    ``QueryDesk.answer`` (``QueryAgent.resolve``); ``answer(decision, resolver, now)``: the
    current desk's ``answer`` (the desk is replaced on every reload)."""

    def __init__(self, writer: DeskWriter, junk: JunkLedger, *, count: Callable[..., None],
                 resolve: Callable[..., Any], answer: Callable[..., Any]) -> None:
        self.writer = writer
        self.junk = junk
        self.count = count
        self.resolve = resolve
        self.answer = answer

    def _record(self, status: str, reason: Optional[str], authenticated: bool, events: Any,
                key: Optional[bytes], now: int) -> None:
        """Audit a decision's events, unless it is unauthenticated junk: that is counted per
        claimed identity and audited later as a summary."""
        if is_junk(status, reason, authenticated):
            ident = self.junk.identity(key)
            self.junk.add(ident, reason or "unknown", now)
            self.count(f"query:junk_{ident}")
        else:
            for ev in events:
                self.writer.audit(ev, now)

    async def emit(self, d: Decision, now: int, key: Optional[bytes] = None) -> None:
        """Audit a decision, send its reply, and answer it when it is ready."""
        authenticated = not (d.reply or {}).get("authenticated") is False
        self._record(d.status, d.reason, authenticated, d.events, key, now)
        if d.reply is not None:
            self.writer.reply(d.request_id, d.reply)
        self.count(f"query:{d.status}" + (f":{d.reason}" if d.reason else ""))
        log.info("query: %s %s%s", d.request_id, d.status, f" ({d.reason})" if d.reason else "")
        if d.status != "ready":
            return
        try:
            req = d.request
            result = await self.resolve(ip_text(req.address), req.port, req.from_ms, req.to_ms, proto=req.proto)
            a = self.answer(d, lambda *_, **__: result, now)  # already resolved, with the protocol
        except Exception as e:  # the request was authorised: say it failed, never answer wrongly
            log.exception("query: resolving a ready request failed (%s)", type(e).__name__)
            req = d.request
            self.writer.audit({"type": "refused", "request_id": d.request_id, "authority": req.authority,
                               "basis": req.basis, "case_ref": req.case_ref, "request_digest": req.digest,
                               "reason": "resolution-failed", "detail": type(e).__name__}, now)
            self.writer.reply(d.request_id, {"type": "status", "v": 1, "request_id": d.request_id,
                                             "status": "refused", "reason": "resolution-failed", "ts_ms": now})
            self.count("query:resolution-failed")
            return
        self.writer.reply(a.request_id, a.reply)
        for ev in a.events:
            self.writer.audit(ev, now)
        self.count("query:answered")
        log.info("query: %s answered", a.request_id)

    def emit_hold(self, d: HoldDecision, now: int, key: Optional[bytes] = None) -> None:
        """Audit every step (id, case, requester, reason; never the address), confirm on the
        responses topic under the hold id, and publish what took effect on the holds topic."""
        self._record(d.status, d.reason, d.authenticated, d.events, key, now)
        if d.reply is not None:
            self.writer.reply(d.hold_id, d.reply)
        if d.publish is not None:
            self.writer.publish_hold(d.publish)
        if d.unpublish is not None:
            self.writer.unpublish_hold(d.unpublish)  # tombstone: compacted away
        self.count(f"holds:{d.status}" + (f":{d.reason}" if d.reason else ""))
        log.info("holds: %s %s%s", d.hold_id, d.status, f" ({d.reason})" if d.reason else "")
