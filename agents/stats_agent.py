"""The statistics agent: every binding becomes one pseudonymised stats record.

Installed into every worker by ``agents.app.Pipeline`` (``install(pipeline)``).  It consumes
the bindings topic in batches, builds records with ``stream.stats.stats_record`` and queues
them with ``send_soon``.  Records carry a deterministic id (a keyed hash of the binding), so a
batch re-delivered after a crash yields the same ids and analysts can drop duplicates.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any, Optional

from stream.errors import Rejected
from stream.model import Binding
from stream.stats import stats_record

log = logging.getLogger("ipanon.stats")


class Pseudonyms:
    """HMAC-SHA256 pseudonyms under one operator's statistics key (pre-keyed, copied per use)."""

    def __init__(self, key: bytes) -> None:
        self._sub = hmac.new(hmac.new(key, b"ipanon/v1/subscriber", hashlib.sha256).digest(), digestmod=hashlib.sha256)
        self._rid = hmac.new(hmac.new(key, b"ipanon/v1/record-id", hashlib.sha256).digest(), digestmod=hashlib.sha256)

    def subscriber(self, s: str) -> str:
        h = self._sub.copy()
        h.update(s.encode())
        return h.hexdigest()[:32]

    def record_id(self, s: str) -> str:
        h = self._rid.copy()
        h.update(s.encode())
        return h.hexdigest()[:32]

    def __repr__(self) -> str:
        return "Pseudonyms(<key hidden>)"


class StatsAgent:
    def __init__(self, pipeline: Any) -> None:
        self.p = pipeline
        self.pseudonyms = {name: Pseudonyms(op.stats_key) for name, op in pipeline.operators.items()}
        pipeline.app.agent(pipeline.bindings, name="ipanon.stats")(self.run)

    def record_for(self, b: Binding) -> Optional[bytes]:
        if b.action == "reset":
            return None
        ps = self.pseudonyms[b.operator]
        rec = stats_record(b, subscriber=ps.subscriber, record_id=ps.record_id,
                           epoch=self.p.operators[b.operator].epoch)
        return json.dumps(rec, separators=(",", ":")).encode()

    async def run(self, stream: Any) -> None:
        from .app import is_heartbeat

        p = self.p
        s = p.settings
        async for events in stream.take_events(s.batch_size, within=s.batch_within_s):
            for event in events:
                if is_heartbeat(event):
                    continue
                try:
                    b = Binding.from_json(event.message.value)
                    if b.operator not in self.pseudonyms:
                        raise Rejected("unknown-operator", "operator has no profile")
                    rec = self.record_for(b)
                    if rec is not None:
                        p.stats.send_soon(key=None, value=rec)
                        p.count("stats_out")
                except Rejected as e:
                    p.dead_letter(event, e.reason, e.detail)
                except Exception as e:
                    log.exception("stats: unexpected error; record dead-lettered")
                    p.dead_letter(event, "internal-error", type(e).__name__)
            await p.ebb()


def install(pipeline: Any) -> StatsAgent:
    return StatsAgent(pipeline)
