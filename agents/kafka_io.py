"""Small synchronous Kafka helpers for the CLI, the demo and tests (kafka-python).

The worker itself uses Faust/aiokafka; these are for tools that send a file's worth of records,
read a topic from the beginning, or create topics.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

from kafka import KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from .kafka_clients import Clients
from .security import KafkaSecurity

# Every helper takes ``security`` (``agents.security.KafkaSecurity``); ``None`` = the
# process's settings from the environment (``agents.security.current()``).


def record_headers(headers: Any) -> dict[str, str]:
    """Kafka record headers as text (undecodable or malformed ones left out)."""
    out = {}
    for k, v in (headers or []):
        try:
            out[k if isinstance(k, str) else k.decode()] = v.decode() if isinstance(v, bytes) else str(v)
        except (UnicodeDecodeError, AttributeError):
            continue
    return out


def producer(bootstrap: str, *, security: Optional[KafkaSecurity] = None, **kw) -> KafkaProducer:
    """A kafka-python producer with the project's defaults (``agents.kafka_clients.SYNC_PRODUCER``)."""
    return Clients(bootstrap, security).producer(**kw)


def ensure_topics(bootstrap: str, names: Iterable[str], *, partitions: int = 4,
                  configs: Optional[Mapping[str, Mapping[str, str]]] = None,
                  security: Optional[KafkaSecurity] = None) -> list[str]:
    """Create missing topics; returns the names created."""
    admin = Clients(bootstrap, security).admin(client_id="ipanon-admin")
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(n, partitions, 1, topic_configs=dict((configs or {}).get(n, {})))
               for n in names if n not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
        return [t.name for t in new]
    finally:
        admin.close()


HEARTBEAT_KEY = b"ipanon-heartbeat"


def read_all(bootstrap: str, topic: str, *, timeout_s: float = 10.0, heartbeats: bool = False,
             security: Optional[KafkaSecurity] = None) -> list:
    """Every record of ``topic`` from the beginning up to its current end offsets (without the
    worker's heartbeat records unless ``heartbeats``)."""
    c = Clients(bootstrap, security).consumer(client_id="ipanon-reader", consumer_timeout_ms=int(timeout_s * 1000))
    try:
        parts = c.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:  # absent, or hidden from this identity (see agents.security.probe)
            return []
        c.assign(tps)
        c.seek_to_beginning(*tps)
        ends = c.end_offsets(tps)
        out = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = c.poll(timeout_ms=int(timeout_s * 1000))
            if not batch:
                break
            for tp, recs in batch.items():
                out.extend(r for r in recs if heartbeats or not (r.value is None and r.key == HEARTBEAT_KEY))
                if c.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return out
    finally:
        c.close()


def count_records(bootstrap: str, topic: str, *, security: Optional[KafkaSecurity] = None) -> int:
    """Data records in ``topic`` (reads it; heartbeats excluded).  For topics the worker
    heartbeats (bindings, dead-letter, raw, lookups), where offsets overcount."""
    return len(read_all(bootstrap, topic, security=security))


def count(bootstrap: str, topic: str, *, security: Optional[KafkaSecurity] = None) -> int:
    """Records currently in ``topic`` (end − beginning offsets, summed over partitions).
    Exact for topics without heartbeats (stats, aggregates); see ``count_records``."""
    c = Clients(bootstrap, security).consumer(client_id="ipanon-reader")
    try:
        parts = c.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return 0
        ends, begins = c.end_offsets(tps), c.beginning_offsets(tps)
        return sum(ends[tp] - begins[tp] for tp in tps)
    finally:
        c.close()


def wait_group_caught_up(bootstrap: str, group: str, topic: str, *, timeout_s: float = 60.0,
                         security: Optional[KafkaSecurity] = None, alive=lambda: True,
                         tick=lambda: None) -> bool:
    """Wait until consumer group ``group`` has committed ``topic`` up to the end offsets taken
    now (records appended later, heartbeats say, do not count).  True when it has, False on
    timeout or when ``alive()`` turns false.  The worker's stages are separate consumer groups
    (ingest, stats, the mapping stage's ``<app id>-mapping``): that the statistics are out does not say
    the mapping table has applied the same bindings — this does.  ``tick()`` runs on every poll
    (a benchmark samples the worker's CPU there)."""
    import time

    g = Clients(bootstrap, security).consumer(client_id="ipanon-reader", group_id=group)  # committed offsets; never joins
    try:
        tps = [TopicPartition(topic, p) for p in (g.partitions_for_topic(topic) or ())]
        ends = g.end_offsets(tps) if tps else {}
        deadline = time.monotonic() + timeout_s
        while True:
            if all((g.committed(tp) or 0) >= ends[tp] for tp in tps):
                return True
            if time.monotonic() > deadline or not alive():
                return False
            tick()
            time.sleep(0.2)
    finally:
        g.close()
