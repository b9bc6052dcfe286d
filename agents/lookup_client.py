"""Send lookup requests to the workers and collect their answers (tests, benchmarks).

This is the workers' internal channel, not a tool: lawful requests from authorities go through
the guarded query desk (``agents.query_agent``, docs/lawful-access.md), and no CLI command
offers a lookup through this path.  Only a holder of the deployment's lookup key
(``<keys>/lookup.key``, shared by the workers and the desk) can ask or read an answer.

Request: sealed with ``stream.lookup_wire.LookupSeal.seal_request`` (the query, a fresh nonce,
the time and the target partition inside the seal) on ``<prefix>-lookup-requests``, sent to the
partition that owns the address (``partition_for`` of its routing key) with *no* Kafka key, so
nothing on the topic names the address.  Answer: sealed to the request id on
``<prefix>-lookup-responses`` (Kafka key = the random request id): ``{"id", "status":
"ok"|"no-data"|"ambiguous"|"refused", "holders": [{"subscriber", "from_ms", "to_ms", …}],
"candidates": n, "reason"}``.  A request that is not sealed under the lookup key (or stale,
replayed, sent to another partition) gets no answer at all.

CGNAT second hop: the worker owning a public address resolves public address + port → port
block → inside address; the inside address's own entry may live on another worker's partition.
Such an answer carries ``"hops": [{"inside_ip", "from_ms", "to_ms", "ports"}]``; the asker looks
each one up (a plain lookup of the inside address during the port block's interval, routed to
its owner) and merges the holders with ``complete_hops``.  ``lookup_many`` and the query agent
(``agents.query_agent``) both do, so their answers are complete however the partitions are split.
"""

from __future__ import annotations

import ipaddress
import time
import uuid
from typing import Iterable, Optional

from kafka import TopicPartition

from stream.errors import CryptoError
from stream.intervals import routing_key
from stream.lookup_wire import LookupSeal

from .kafka_clients import Clients
from .kafka_io import producer


def hop_queries(query: dict, answer: dict) -> list[dict]:
    """The second-hop lookups an answer asks for (one per inside address and interval)."""
    return [{"operator": query["operator"], "ip": h["inside_ip"], "port": None,
             "from_ms": int(h["from_ms"]), "to_ms": int(h["to_ms"])} for h in answer.get("hops") or ()]


def complete_hops(answer: dict, inner: list[Optional[dict]]) -> dict:
    """Merge second-hop answers into a first-hop answer (pure).  ``inner[i]`` answers
    ``hop_queries(..., answer)[i]``, i.e. ``answer["hops"][i]`` (None: no answer arrived).  Holders are the inside address's holders within
    the port block's interval, tagged with ``inside_ip`` and ``ports`` as the worker does for a
    local second hop.  A missing or failed inner answer makes the whole answer an ``error``
    (``incomplete-hop``): a lawful answer must never silently lack a holder."""
    out = {k: v for k, v in answer.items() if k != "hops"}
    rows = list(answer.get("holders") or ())
    hops = list(answer.get("hops") or ())
    if len(inner) != len(hops):
        raise ValueError("one inner answer per hop")
    unknown = list(answer.get("end_unknown") or ())
    for hop, ans in zip(hops, inner):
        if ans is None or ans.get("status") not in ("ok", "no-data", "end-unknown") or ans.get("hops"):
            return {**out, "status": "error", "reason": "incomplete-hop", "holders": rows}
        rows += [{"subscriber": h["subscriber"], "from_ms": h["from_ms"], "to_ms": h["to_ms"],
                  "inside_ip": hop["inside_ip"], "ports": hop["ports"]} for h in ans.get("holders") or ()]
        unknown += [{**h, "inside_ip": hop["inside_ip"], "ports": hop["ports"]} for h in ans.get("end_unknown") or ()]
    out["holders"] = rows
    if unknown:
        out["end_unknown"] = unknown
    out["status"] = "ok" if rows else ("end-unknown" if unknown else "no-data")
    return out


def request_partition(operator: str, ip: str, partitions: int) -> int:
    """The lookup-request partition owning ``ip``'s table entries (the table is co-partitioned
    with the request topic: ``agents.mapping_table.partition_for`` of the routing key)."""
    from .mapping_table import partition_for

    return partition_for(routing_key(operator, ipaddress.ip_network(ip)).encode(), partitions)


def lookup_many(bootstrap: str, topics, queries: Iterable[dict], *, key: bytes, timeout_s: float = 60.0,
                security=None) -> dict[str, dict]:
    """Send every query (dicts without ``id``; one is added) sealed under the lookup ``key``
    and wait for all answers, completing CGNAT second hops (see the module doc) within the same
    ``timeout_s``.  Returns {id: answer}; the ids are set on the query dicts.  ``security``: an
    ``agents.security.KafkaSecurity`` (default: the process's)."""
    seal = LookupSeal(key, topics.lookup_requests)
    queries = list(queries)
    deadline = time.monotonic() + timeout_s
    c = Clients(bootstrap, security).consumer(client_id="ipanon-lookup-client")
    try:
        parts = c.partitions_for_topic(topics.lookup_responses) or set()
        tps = [TopicPartition(topics.lookup_responses, p) for p in parts]
        if tps:
            c.assign(tps)
            c.seek_to_end(*tps)
            for tp in tps:
                c.position(tp)
        n_req = len(c.partitions_for_topic(topics.lookup_requests) or ())
        if not n_req:
            raise RuntimeError(f"{topics.lookup_requests}: topic not found (is the worker's topic layout applied?)")
        got = _round(c, tps, bootstrap, topics, queries, deadline, security, seal, n_req)
        firsts = [q for q in queries if (got.get(q["id"]) or {}).get("hops")]
        if firsts:
            second = {q["id"]: hop_queries(q, got[q["id"]]) for q in firsts}
            inner = _round(c, list(c.assignment()), bootstrap, topics,
                           [h for hs in second.values() for h in hs], deadline, security, seal, n_req)
            for q in firsts:
                hs = second[q["id"]]
                got[q["id"]] = complete_hops(got[q["id"]], [inner.get(h["id"]) for h in hs])
        return got
    finally:
        c.close()


def _round(c, tps, bootstrap, topics, queries: list[dict], deadline: float, security, seal: LookupSeal,
           n_req: int) -> dict[str, dict]:
    """Send ``queries`` and collect their answers until ``deadline`` (``c`` positioned at the
    responses' end before sending)."""
    p = producer(bootstrap, security=security)
    for q in queries:
        q["id"] = q.get("id") or uuid.uuid4().hex
        part = request_partition(q["operator"], q["ip"], n_req)
        p.send(topics.lookup_requests, partition=part,
               value=seal.seal_request(q, request_id=q["id"], partition=part, now_ms=time.time_ns() // 1_000_000))
    p.flush()
    p.close()
    want = {q["id"] for q in queries}
    got: dict[str, dict] = {}
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
                if r.value is None or r.key is None:  # the worker's heartbeats (agents.app._heartbeat)
                    continue
                rid = r.key.decode("utf-8", "replace")
                if rid not in want:
                    continue
                try:
                    got[rid] = seal.open_answer(r.value, request_id=rid)
                except CryptoError:  # not an answer sealed for this request: ignored
                    continue
    return got
