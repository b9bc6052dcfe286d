"""Names and message conventions of every Kafka topic ipanon uses.

Raw topics (written by collectors / ``ipanon produce`` / ``ipanon collect``):
  value   = exactly one record of the input format (bytes, as the format's framer emits it;
            a Kea CSV record carries its header line, so every message parses on its own)
  key     = the source id (collector host + file, or syslog peer): one source's records stay
            on one partition, in order
  headers = ``ipanon-format`` (format name, required), ``ipanon-operator`` (operator name,
            required unless the worker has a default operator), ``ipanon-source`` (source id),
            ``ipanon-received-ms`` (collector receive time, syslog)

Per-operator raw topics: ``<prefix>-raw-op-<operator>``, one per configured
operator, any format.  Kafka never tells a consumer who produced a record, but its ACLs decide
who may write a topic: only ``ipanon-collector-<operator>`` (and the worker/admin) may write
``<prefix>-raw-op-<operator>``, so the topic names the operator and the worker dead-letters a
record there whose ``ipanon-operator`` header names another one (``operator-not-allowed``).
The shared family topics above stay for a local broker without authentication; on a secure
broker no collector is granted them (``agents.acl``).

Everything else is written by the worker.  The retention configs of every topic that can hold
raw identifiers are computed by ``stream.policy`` (see ``ipanon topics apply``).
"""

from __future__ import annotations

from typing import Iterable

PREFIX = "ipanon"

RAW_RADIUS = f"{PREFIX}-raw-radius"
RAW_DHCP = f"{PREFIX}-raw-dhcp"
RAW_NAT = f"{PREFIX}-raw-nat"
RAW_TOPICS = (RAW_RADIUS, RAW_DHCP, RAW_NAT)
RAW_BY_FAMILY = {"radius": RAW_RADIUS, "dhcp": RAW_DHCP, "nat": RAW_NAT}

BINDINGS = f"{PREFIX}-bindings"          # internal repartition: bindings keyed by address key
DEADLETTER = f"{PREFIX}-deadletter"
STATS = f"{PREFIX}-stats"
ERASURES = f"{PREFIX}-erasures"          # consent withdrawal notices (pseudonyms to delete)
AGGREGATES = f"{PREFIX}-aggregates"
AGGREGATE_PARTS = f"{PREFIX}-aggregate-parts"   # internal: cell contributions keyed by cell id
LOOKUP_REQUESTS = f"{PREFIX}-lookup-requests"
LOOKUP_RESPONSES = f"{PREFIX}-lookup-responses"
AUDIT = f"{PREFIX}-audit"
CONSENT = f"{PREFIX}-consent"
QUERY_REQUESTS = f"{PREFIX}-query-requests"    # lawful-access inbox (requests, approvals, hold commands)
QUERY_RESPONSES = f"{PREFIX}-query-responses"  # status replies, sealed answers
HOLDS = f"{PREFIX}-holds"                      # active legal holds, read by every worker
QUERY_STATE = f"{PREFIX}-query-state"          # the query desk's snapshot
CANARY_RESULTS = f"{PREFIX}-canary-results"    # erasure canaries' measurements (no personal data)

#: infix of the per-operator raw topics; operator names match [a-z0-9][a-z0-9_-]* (stream.config),
#: so ``<prefix>-raw-op-<operator>`` is always a valid topic name and never a family topic's
OPERATOR_RAW_INFIX = "-raw-op-"

H_FORMAT = "ipanon-format"
H_OPERATOR = "ipanon-operator"
H_SOURCE = "ipanon-source"
H_RECEIVED_MS = "ipanon-received-ms"


class Topics:
    """Every topic name for one deployment prefix (tests and demos use their own prefix so
    runs on one broker never share data; production uses the default ``ipanon``)."""

    def __init__(self, prefix: str = PREFIX, operators: Iterable[str] = ()) -> None:
        self.prefix = prefix
        self.raw_radius = f"{prefix}-raw-radius"
        self.raw_dhcp = f"{prefix}-raw-dhcp"
        self.raw_nat = f"{prefix}-raw-nat"
        self.raw_shared = (self.raw_radius, self.raw_dhcp, self.raw_nat)
        #: per-operator raw topic → the operator it is written for (only the operators given)
        self.raw_operator = {self.operator_raw(op): op for op in sorted(set(operators))}
        self.raw = (*self.raw_shared, *self.raw_operator)
        self.raw_by_family = {"radius": self.raw_radius, "dhcp": self.raw_dhcp, "nat": self.raw_nat}
        self.bindings = f"{prefix}-bindings"
        self.deadletter = f"{prefix}-deadletter"
        self.stats = f"{prefix}-stats"
        # consent withdrawal notices (agents/commands/consent.py, docs/statistics.md)
        self.erasures = f"{prefix}-erasures"
        self.aggregates = f"{prefix}-aggregates"
        # internal: the stats stage's per-binding cell contributions, keyed by cell id, so one
        # aggregate stage (one partition owner) counts each cell (stream.aggregate)
        self.aggregate_parts = f"{prefix}-aggregate-parts"
        self.lookup_requests = f"{prefix}-lookup-requests"
        self.lookup_responses = f"{prefix}-lookup-responses"
        self.audit = f"{prefix}-audit"
        self.consent = f"{prefix}-consent"
        # lawful access (agents/query_agent.py, docs/lawful-access.md)
        self.query_requests = f"{prefix}-query-requests"
        self.query_responses = f"{prefix}-query-responses"
        self.holds = f"{prefix}-holds"
        self.query_state = f"{prefix}-query-state"
        # one record per finished canary and store (agents/canary.py), read by `ipanon report compliance`
        self.canary_results = f"{prefix}-canary-results"

    def operator_raw(self, operator: str) -> str:
        """The raw topic only ``operator``'s collector may write (any format)."""
        return f"{self.prefix}{OPERATOR_RAW_INFIX}{operator}"

    def all(self) -> list[str]:
        return [*self.raw, self.bindings, self.deadletter, self.stats, self.erasures, self.aggregates, self.aggregate_parts,
                self.lookup_requests, self.lookup_responses, self.audit, self.consent,
                self.query_requests, self.query_responses, self.holds, self.query_state, self.canary_results]
