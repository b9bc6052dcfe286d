"""Per-authority reply topics: each authority can be allowed to read its own answers only.

Kafka authorises whole topics, never keys (``agents.acl``).  The query agent writes
every status reply and sealed answer to ``<prefix>-query-responses`` (keyed by request id
``authority/number``), which only the worker may read.  This extension copies each reply whose
request id is *authenticated* to ``<prefix>-query-responses-<authority>``; ``ipanon acl``
grants authority *A* a literal Read ACL on its own topic and nothing else.

Not copied: replies with ``request_id`` null; replies with ``"authenticated": false`` (the
desk refused them before the signature verified, so the authority part of the id is only
claimed) are copied only to a reply topic that already exists — creating one would let anyone
make the worker create topics for invented names — so an authority sees that something forged
a request in its name (``ipanon query status``).

The per-authority topics are created on first use with the configs the retention plan
computed for the shared reply topic (same role, same promise; ``stream.policy`` plans the
shared topic, whose configs the worker verifies at start-up) and one partition, and get
heartbeats like every topic that can hold identifiers (sealed here, but the bound is kept
anyway).  Built by ``agents.app.Pipeline`` (``Parts.answers``) when the topic layout has query
topics.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Awaitable, Callable, Optional

from .gapfill import GapFill
from .kafka_clients import Clients

log = logging.getLogger("ipanon.answers")

AUTHORITY_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def authority_of(value: Optional[bytes], *, claimed: bool = False) -> Optional[str]:
    """The authority whose reply this is, or None if it must not be routed (pure).  A reply to
    an unauthenticated message names an authority only as claimed: ``claimed=True`` returns
    that name too (the router then copies it only to a reply topic that already exists)."""
    if value is None:
        return None
    try:
        msg = json.loads(value)
    except (ValueError, TypeError):
        return None
    if not isinstance(msg, dict) or (msg.get("authenticated") is False and not claimed):
        return None
    rid = msg.get("request_id")
    if not isinstance(rid, str) or "/" not in rid:
        return None
    authority = rid.split("/", 1)[0]
    return authority if AUTHORITY_ID.match(authority) else None


class AnswerRouter:
    def __init__(self, app: Any, *, names: Any, plan: Any, settings: Any, count: Callable[..., None],
                 flush: Callable[[], Awaitable[None]]) -> None:
        """``app``: the Faust app (the agent, the timer, the per-authority topics); ``plan``: the
        retention plan (None: the broker's defaults); ``settings``: heartbeat period and the
        worker's Kafka settings; ``flush()``: publish what was queued and wait for the acks
        (``Pipeline.ebb``)."""
        from .acl import authority_topic

        self.app = app
        self.settings = settings
        self.count = count
        self.flush = flush
        self.prefix = names.prefix
        self._name = authority_topic
        self.topics: dict[str, Any] = {}
        shared = names.query_responses
        try:
            self.configs = dict(plan.configs_for(shared)) if plan is not None else {}
        except Exception:  # the shared topic not in this plan: the broker's defaults
            self.configs = {}
        self.discovered = False
        self.source = app.topic(shared, key_serializer="raw", value_serializer="raw")
        #: replies Faust's stream skipped on a partition kept through a rebalance (``agents.gapfill``)
        self.gaps = GapFill(Clients.of(settings), shared, agent="answer-router", count=count, app=app)
        app.agent(self.source, name="ipanon.answer-router")(self.run)
        app.timer(settings.heartbeat_ms / 2000, name="ipanon.answer-router.heartbeat")(self.heartbeat)

    async def topic_for(self, authority: str) -> Any:
        t = self.topics.get(authority)
        if t is None:
            t = self.app.topic(self._name(self.prefix, authority), partitions=1, internal=True,
                                 key_serializer="raw", value_serializer="raw", config=self.configs or None)
            await t.maybe_declare()
            self.topics[authority] = t
        return t

    async def run(self, stream: Any) -> None:
        from .app import is_heartbeat

        # 5 ms like the query desk: a lone reply waits out the rest of this (50 ms did before)
        async for events in stream.take_events(256, within=0.005):
            for event in await self.gaps.complete(events):
                if is_heartbeat(event):
                    continue
                try:
                    authority = authority_of(event.message.value)
                    if authority is None:
                        # a refusal of a forged message claiming an authority: shown to that
                        # authority (``ipanon query status``) only if its reply topic exists,
                        # so nobody can make the worker create topics for invented names
                        claimed = authority_of(event.message.value, claimed=True)
                        if claimed is None or claimed not in self.topics:
                            self.count("answers:not-routed")
                            continue
                        authority = claimed
                    t = await self.topic_for(authority)
                    t.send_soon(key=event.message.key, value=event.message.value, partition=0)
                    self.count("answers:routed")
                except Exception as e:  # never let one record kill the agent (faust-streaming #175)
                    log.error("answer router: could not copy a reply (%s)", type(e).__name__)
                    self.count("answers:errors")
            await self.flush()

    def _existing(self) -> list[str]:
        """Authorities whose reply topics already exist (so they get heartbeats after a restart)."""
        from .kafka_admin import admin_client

        admin = admin_client(self.settings.bootstrap, self.settings.security)
        try:
            head = self._name(self.prefix, "")
            return [t[len(head):] for t in admin.list_topics() if t.startswith(head) and AUTHORITY_ID.match(t[len(head):])]
        finally:
            admin.close()

    async def heartbeat(self) -> None:
        import asyncio

        from .app import HEARTBEAT_HEADERS
        from .kafka_io import HEARTBEAT_KEY

        try:
            if not self.discovered:
                for a in await asyncio.get_running_loop().run_in_executor(None, self._existing):
                    await self.topic_for(a)
                self.discovered = True
            for t in list(self.topics.values()):
                t.send_soon(key=HEARTBEAT_KEY, value=None, partition=0, headers=HEARTBEAT_HEADERS)
        except Exception:
            log.exception("answer router: heartbeat failed; will retry")
