"""The query desk's one write path: the audit chain, the queued outputs, signed checkpoints and
the desk's snapshot (``agents.query_agent``, docs/query-agent.md).

``QueryAgent`` decides (through the pure ``stream.access.QueryDesk`` and ``stream.hold.HoldDesk``)
and hands every output to its ``DeskWriter``: audit events (appended to the hash chain here, so
this object is the chain's one writer on the worker that owns the inbox), replies, and hold
publications.  Nothing reaches the broker until ``save``: it adds a signed checkpoint when the
trail has grown (or periodically while idle), delivers every queued output and waits for each
acknowledgement, and only then writes the snapshot — so a snapshot never claims an inbox offset
whose outputs are not on the broker.  ``load`` reads back the chain (from the last audit record:
the trail itself is the authority for ``seq`` and ``prev``) and the last snapshot.

Snapshot encoding: ``b"Z1"`` + zlib(canonical JSON), one key (``desk``) on the compacted
``<prefix>-query-state`` topic.
"""

from __future__ import annotations

import json
import zlib
from typing import Any, Callable, Optional

from stream.audit import AuditChain, canonical
from stream.errors import IpanonError
from stream.hold import LegalHold

from .kafka_clients import Clients, faust_sends, send_all

#: The one key of the desk snapshot on the state topic.
STATE_KEY = b"desk"
#: Snapshot encoding: ``b"Z1"`` + zlib(canonical JSON).
_SNAP_MAGIC = b"Z1"


def encode_snapshot(state: dict) -> bytes:
    return _SNAP_MAGIC + zlib.compress(canonical(state), 6)


def decode_snapshot(raw: bytes) -> dict:
    if not raw.startswith(_SNAP_MAGIC):
        raise IpanonError("query-state snapshot has an unknown encoding")
    return json.loads(zlib.decompress(raw[len(_SNAP_MAGIC):]))


def last_record(bootstrap: str, topic: str, partition: int = 0, timeout_s: float = 15.0, security=None):
    """The last record of one partition (kafka-python, no consumer group), or None if empty."""
    import time

    from kafka import TopicPartition

    c = Clients(bootstrap, security).consumer(client_id="ipanon-query-state")
    try:
        tp = TopicPartition(topic, partition)
        c.assign([tp])
        end = c.end_offsets([tp])[tp]
        begin = c.beginning_offsets([tp])[tp]
        if end <= begin:
            return None
        c.seek(tp, end - 1)
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=500).values():
                for r in recs:
                    last = r
            if c.position(tp) >= end:
                return last
        raise IpanonError(f"timed out reading the last record of {topic}")
    finally:
        c.close()


class DeskWriter:
    """The audit chain and the queued outputs of one desk (see module doc).  ``audit``,
    ``responses``, ``holds`` and ``state`` are the Faust topics it writes; ``anchor_key`` the
    desk's Ed25519 checkpoint key; ``checkpoint_ms`` how often an idle desk still signs one."""

    def __init__(self, *, audit: Any, responses: Any, holds: Any, state: Any, anchor_key: Any,
                 checkpoint_ms: int, bootstrap: str, audit_name: str, state_name: str,
                 security: Any = None) -> None:
        self.audit_topic, self.responses, self.holds_topic, self.state_topic = audit, responses, holds, state
        self.anchor_key = anchor_key
        self.checkpoint_ms = checkpoint_ms
        self.bootstrap, self.audit_name, self.state_name = bootstrap, audit_name, state_name
        self.security = security  # the worker's (``Settings.security``), not the process's environment
        self.chain = AuditChain()
        self.anchored: tuple[Optional[str], int] = (None, 0)  # (head, ms) of the last checkpoint written
        self._out: list[tuple[Any, Optional[bytes], Optional[bytes], Optional[int]]] = []  # queued outputs

    # -- queued outputs, in order -------------------------------------------------------------

    def audit(self, event: dict, now: int) -> None:
        """Append an event to the chain (``stream.audit`` checks it carries no identity)."""
        self._out.append((self.audit_topic, None, self.chain.append(event, now), 0))

    def reply(self, key: Optional[str], reply: dict) -> None:
        self._out.append((self.responses, key.encode() if key else None, canonical(reply), None))

    def publish_hold(self, hold: LegalHold) -> None:
        self._out.append((self.holds_topic, hold.hold_id.encode(), canonical(hold.to_dict()), 0))

    def unpublish_hold(self, hold_id: str) -> None:
        self._out.append((self.holds_topic, hold_id.encode(), None, 0))  # tombstone: compacted away

    # -- delivery ---------------------------------------------------------------------------

    async def deliver(self) -> None:
        """Send the queued outputs in order and wait until the broker has acknowledged each.
        (Our own sends only: ``producer.flush()`` would also wait for every other agent's.)"""
        out, self._out = self._out, []
        await send_all(faust_sends, out)

    async def save(self, now: int, state: Callable[[], dict]) -> None:
        """Deliver every queued output, then write the snapshot ``state()`` and deliver it: the
        snapshot never claims an offset whose outputs are not on the broker."""
        head, at = self.anchored
        if self.chain.head != head or now - at >= self.checkpoint_ms:
            # a signed checkpoint after every batch of records, and periodically while idle
            self._out.append((self.audit_topic, None, self.chain.checkpoint(self.anchor_key, now), 0))
            self.anchored = (self.chain.head, now)
        await self.deliver()
        self._out.append((self.state_topic, STATE_KEY, encode_snapshot(state()), 0))
        await self.deliver()

    def load(self) -> tuple[AuditChain, Optional[dict]]:
        """(blocking) The chain resumed from the last audit record, and the last snapshot
        (None if the state topic holds none)."""
        rec = last_record(self.bootstrap, self.audit_name, security=self.security)
        chain = AuditChain.resume(rec.value if rec is not None else None)
        snap = last_record(self.bootstrap, self.state_name, security=self.security)
        if snap is None or snap.value is None:
            return chain, None
        return chain, decode_snapshot(snap.value)
