"""The ingest stage: raw records → bindings (keyed by routing key) or dead letters.

A plain callable component (``Ingest.handle_batch`` is the ``agents.batch.BatchStage`` handler)
that gets everything it needs as arguments: topic names, partition count, operators, the
lateness rules, a clock and a counter.  Per raw record:

1. parse it with the format named by its header (``Rejected`` → dead letter with the reason);
   on a per-operator raw topic (``<prefix>-raw-op-<operator>``) the topic names the operator,
   and a record whose ``ipanon-operator`` header claims another is dead-lettered
   ``operator-not-allowed`` (one collector framing another operator's
   subscriber);
2. check lateness (``stream.lateness``): a record whose mapping's promise would run out before
   the bindings topic lets go of it is dead-lettered ``too-late`` — with its bytes when the
   dead-letter topic's bound still fits, else without them (counted ``too_late_dropped``);
3. queue its bindings: keyed by routing key, a reset on every partition;
4. once per batch, hand the accepted bindings to the statistics port (``Ingest.stats``,
   ``agents.stats_agent.StatsAgent.for_ingest``), whose records and cell contributions leave
   in the same batch: the bindings topic is then read by the mapping stage alone, so an event
   crosses Kafka twice inside a worker.

Nothing escapes for one record: anything unexpected is dead-lettered ``internal-error``.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any, Awaitable, Callable, Mapping, Optional

from stream import intervals as iv
from stream import binding_wire, lateness
from stream.errors import Rejected
from stream.model import Binding
from stream.parse import get_format

from . import topics as T
from .batch import Output
from .kafka_io import HEARTBEAT_KEY, record_headers

log = logging.getLogger("ipanon")

#: Dead-letter records keep at most this many bytes of the original record, so the dead
#: letter always fits a default broker's 1 MB message limit.
DEADLETTER_MAX_BYTES = 512 * 1024


def dead_letter_value(topic: str, partition: int, offset: int, headers: Mapping[str, str],
                      value: Optional[bytes], reason: str, detail: str, *, received_ms: int,
                      keep_value: bool = True) -> bytes:
    """The dead-letter record of one input record: why, where it came from, its bytes (at most
    ``DEADLETTER_MAX_BYTES`` of them, base64; ``truncated_from`` gives the original length).
    ``keep_value=False``: the bytes are left out (``value_dropped``), for a record no topic may
    keep any longer — it is still accounted for by its position."""
    value = value or b""
    record = {
        "reason": reason,
        "detail": detail,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "format": headers.get(T.H_FORMAT),
        "operator": headers.get(T.H_OPERATOR),
        "received_ms": received_ms,
    }
    if not keep_value:
        record["value_dropped"] = True
        record["value_len"] = len(value)
        return json.dumps(record).encode()
    record["value_b64"] = base64.b64encode(value[:DEADLETTER_MAX_BYTES]).decode()
    if len(value) > DEADLETTER_MAX_BYTES:
        record["truncated_from"] = len(value)
    return json.dumps(record).encode()


_H_OPERATOR_B = T.H_OPERATOR.encode()


def one_operator_claim(raw_headers: Any) -> None:
    """``Rejected("operator-not-allowed")`` if the record's ``ipanon-operator`` headers disagree
    or one is not text.  ``record_headers`` keeps the last of two and drops an undecodable one,
    so without this a collector could put a claim for another operator in front of an honest
    one (or in bytes that do not decode) and the framing attempt would pass uncounted."""
    first = None
    for k, v in raw_headers or ():
        if k != T.H_OPERATOR and k != _H_OPERATOR_B:
            continue
        try:
            text = v.decode() if isinstance(v, (bytes, bytearray)) else str(v)
        except UnicodeDecodeError:
            raise Rejected("operator-not-allowed", "an ipanon-operator header that is not UTF-8 text") from None
        if first is None:
            first = text
        elif text != first:
            raise Rejected("operator-not-allowed", "several ipanon-operator headers that disagree")


class Ingest:
    """Raw records → outputs.  ``rules``: operator → ``stream.lateness.LatenessRule`` (an
    operator without one is not checked: only tests build pipelines without a plan)."""

    def __init__(self, *, names: T.Topics, partitions: int, operators: Mapping[str, Any],
                 default_operator: Optional[str], rules: Mapping[str, lateness.LatenessRule],
                 clock: Callable[[], int], count: Callable[[str, int], None]) -> None:
        self.names = names
        self.partitions = partitions
        self.operators = operators
        self.default_operator = default_operator
        self.rules = dict(rules)
        self.clock = clock
        self.count = count
        # the statistics port (``StatsAgent.for_ingest``): the batch's accepted bindings and their
        # raw records → stats records, contributions and dead letters, sent with the bindings
        self.stats: Optional[Callable[[list[Binding], list[Any]], Awaitable[list[Output]]]] = None

    def dead_letter_output(self, record: Any, headers: Mapping[str, str], reason: str, detail: str = "",
                           *, keep_value: bool = True) -> Output:
        """An aiokafka record → its dead letter to produce (the caller counts ``rejected:<reason>``)."""
        return (self.names.deadletter, None, dead_letter_value(
            record.topic, record.partition, record.offset, headers, record.value, reason, detail,
            received_ms=self.clock(), keep_value=keep_value), None)

    def parse_raw(self, headers: Mapping[str, str], value: Optional[bytes], topic: Optional[str] = None) -> list[Binding]:
        """The bindings of one raw record (``Rejected`` with a reason if it has none).  On an
        operator's own raw topic the topic decides the operator: its ACL lets only that
        operator's collector write it, and a header naming another operator is refused."""
        fmt = headers.get(T.H_FORMAT)
        if not fmt:
            raise Rejected("missing-format", f"no {T.H_FORMAT} header")
        owner = self.names.raw_operator.get(topic) if topic is not None else None
        claimed = headers.get(T.H_OPERATOR)
        if owner is not None:
            if claimed and claimed != owner:
                raise Rejected("operator-not-allowed",
                               "the ipanon-operator header names another operator than the topic's "
                               "(only that operator's collector may write this topic)")
            operator = owner
        else:
            operator = claimed or self.default_operator
        if not operator:
            raise Rejected("missing-operator", f"no {T.H_OPERATOR} header and no default operator")
        if operator not in self.operators:
            raise Rejected("unknown-operator", "operator has no profile in the worker's configuration")
        if value is None:
            raise Rejected("empty-record", "message has no value")
        ctx: dict[str, Any] = {}
        policy = self.operators[operator].policy
        if policy is not None:
            ctx["identity"] = policy.identity.radius_attribute
        received = headers.get(T.H_RECEIVED_MS)
        if received and received.isdigit():
            ctx["ref_ms"] = int(received)  # dates syslog lines that carry no year (RFC 3164)
        return get_format(fmt).parse(value, operator=operator, **ctx)

    async def handle_batch(self, records: list[Any]) -> list[Output]:
        """One ``BatchStage`` batch of raw records → bindings and dead letters (counted once
        per batch)."""
        out: list[Output] = []
        rejected: dict[str, int] = {}
        events = bindings = dropped = 0
        now = self.clock()
        accepted: list[Binding] = []  # for the statistics port, with each one's raw record
        origins: list[Any] = []
        for r in records:
            if r.value is None and r.key == HEARTBEAT_KEY:
                continue
            headers = record_headers(r.headers)
            mine: list[Output] = []
            try:
                one_operator_claim(r.headers)
                bs = self.parse_raw(headers, r.value, r.topic)
                rule = self.rules.get(bs[0].operator) if bs else None
                verdict = rule.verdict_many(bs, now) if rule is not None else lateness.ACCEPT
                if verdict == lateness.ACCEPT:
                    for b in bs:
                        self.binding_outputs(b, mine)
            except Rejected as e:
                out.append(self.dead_letter_output(r, headers, e.reason, e.detail))
                rejected[e.reason] = rejected.get(e.reason, 0) + 1
                continue
            except Exception as e:  # never let one record stop the stage
                log.exception("ingest: unexpected error; record dead-lettered")
                out.append(self.dead_letter_output(r, headers, "internal-error", type(e).__name__))
                rejected["internal-error"] = rejected.get("internal-error", 0) + 1
                continue
            if verdict != lateness.ACCEPT:
                keep = verdict == lateness.TOO_LATE
                out.append(self.dead_letter_output(
                    r, headers, lateness.REASON,
                    "the mapping's promise runs out before the bindings topic would delete it"
                    + ("" if keep else "; bytes not kept: the dead-letter topic would outlive it too"),
                    keep_value=keep))
                rejected[lateness.REASON] = rejected.get(lateness.REASON, 0) + 1
                dropped += not keep
                continue
            events += 1
            out.extend(mine)
            bindings += len(bs)
            accepted.extend(bs)
            origins.extend([r] * len(bs))
        if self.stats is not None and accepted:
            out.extend(await self.stats(accepted, origins))
        if events:
            self.count("events_in", events)
        if bindings:
            self.count("bindings", bindings)
        if dropped:
            self.count("too_late_dropped", dropped)
        for reason, n in rejected.items():
            self.count(f"rejected:{reason}", n)
        return out

    def binding_outputs(self, b: Binding, out: list[Output]) -> None:
        topic = self.names.bindings
        value = binding_wire.encode(b)
        if b.action == "reset":
            # Accounting-On/Off closes sessions of a NAS on every address, so every partition
            # must see it.
            key = f"{b.operator}|reset|{b.nas}".encode()
            out.extend((topic, key, value, p) for p in range(self.partitions))
        else:
            out.append((topic, iv.routing_key(b.operator, b.ip).encode(), value, None))


def lateness_rules(operators: Mapping[str, Any], plan: Any, names: T.Topics) -> dict[str, lateness.LatenessRule]:
    """One rule per operator from the retention plan: the operator's lawful-access promise, its
    lost-Stop window, and the bindings and dead-letter topics' budgets (the worker refuses to
    start on a topic whose actual bound exceeds its budget, so the budget bounds it)."""
    if plan is None:
        return {}

    def bound(name: str) -> int:
        spec = plan.topic(name)
        b = spec.budget_ms if spec.budget_ms is not None else spec.bound_ms
        if b is None:
            raise ValueError(f"topic {name} has no deletion bound")
        return b

    bb, db = bound(names.bindings), bound(names.deadletter)
    rules = {}
    for name, op in operators.items():
        promise = op.policy.lawful_access.promise_ms if op.policy is not None else op.ttl_ms
        rules[name] = lateness.LatenessRule(promise_ms=promise, stale_after_ms=op.stale_after_ms,
                                            bindings_bound_ms=bb, deadletter_bound_ms=db)
    return rules
