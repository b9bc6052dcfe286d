"""Send lookup requests to the worker and collect its answers (demo, tests, operators' tools).

Request (JSON on ``<prefix>-lookup-requests``, keyed by the address's routing key so it reaches
the partition that owns the address): ``{"id", "operator", "ip", "port"|null, "from_ms",
"to_ms"}``.  Answer (JSON on ``<prefix>-lookup-responses``, keyed by id): ``{"id", "status":
"ok"|"no-data"|"ambiguous"|"refused", "holders": [{"subscriber", "from_ms", "to_ms", …}],
"candidates": n, "reason"}``.  This internal lookup channel is the mapping agent's API; lawful
requests from authorities go through the guarded query agent instead (docs/lawful-access.md).
"""

from __future__ import annotations

import ipaddress
import json
import time
import uuid
from typing import Iterable, Optional

from kafka import KafkaConsumer, TopicPartition

from stream.intervals import routing_key

from .kafka_io import producer


def lookup_many(bootstrap: str, topics, queries: Iterable[dict], *, timeout_s: float = 60.0,
                security=None) -> dict[str, dict]:
    """Send every query (dicts without ``id``; one is added) and wait for all answers.
    Returns {id: answer}; the ids are set on the query dicts.  ``security``: an
    ``agents.security.KafkaSecurity`` (default: the process's)."""
    from .security import kafka_python_kwargs

    queries = list(queries)
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      **kafka_python_kwargs(security))
    try:
        parts = c.partitions_for_topic(topics.lookup_responses) or set()
        tps = [TopicPartition(topics.lookup_responses, p) for p in parts]
        if tps:
            c.assign(tps)
            c.seek_to_end(*tps)
            for tp in tps:
                c.position(tp)
        p = producer(bootstrap, security=security)
        for q in queries:
            q["id"] = q.get("id") or uuid.uuid4().hex
            net = ipaddress.ip_network(q["ip"])
            p.send(topics.lookup_requests, key=routing_key(q["operator"], net).encode(),
                   value=json.dumps(q).encode())
        p.flush()
        p.close()
        want = {q["id"] for q in queries}
        got: dict[str, dict] = {}
        deadline = time.monotonic() + timeout_s
        while want - got.keys() and time.monotonic() < deadline:
            if not tps:
                time.sleep(0.5)
                parts = c.partitions_for_topic(topics.lookup_responses) or set()
                tps = [TopicPartition(topics.lookup_responses, p) for p in parts]
                if tps:
                    c.assign(tps)
                    c.seek_to_beginning(*tps)
                continue
            for recs in c.poll(timeout_ms=500).values():
                for r in recs:
                    if r.value is None:  # the worker's heartbeats (agents.app._heartbeat)
                        continue
                    try:
                        ans = json.loads(r.value)
                    except ValueError:
                        continue
                    if ans.get("id") in want:
                        got[ans["id"]] = ans
        return got
    finally:
        c.close()
