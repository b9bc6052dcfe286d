"""Roles and their Kafka ACLs, computed from the topic layout.

One function, ``role_grants``, turns a deployment (topic prefix, app id, authority ids) into
the exact set of ACLs every role needs — nothing more; ``ipanon acl render`` prints them as
``kafka-acls.sh`` command lines or Strimzi ``KafkaUser`` resources and ``ipanon acl apply``
creates them with the admin client.  Topic names come from ``agents.topics.Topics`` and
``stream.policy.make_layout`` (a test checks every layout topic is covered by some role).

Roles (principal ``User:<user>``, SCRAM user names as ``ipanon broker start --secure``
creates them):

| role | user | may |
|---|---|---|
| collector of operator *O* | ``ipanon-collector-O`` | write only ``<prefix>-raw-op-O``; read nothing |
| worker | ``ipanon-worker`` | read/write/create its topics (prefixed ``<prefix>-`` and ``<app id>-``: raw for heartbeats, internal, changelogs, stats, aggregates, audit, query and lookup topics); its consumer groups ``<app id>``, ``<app id>-ingest``, ``<app id>-aggregate``, ``<app id>-mapping`` and ``<app id>-stats`` (the upgrade drain, ``agents.stats_drain``: its offsets read at every start, joined only while bindings an earlier release left for its stats stage wait) (literal); describe the cluster's configs (retention check) |
| analyst | ``ipanon-analyst`` | read ``<prefix>-stats``, ``<prefix>-aggregates`` and ``<prefix>-erasures``; consumer groups ``<prefix>-analyst*`` |
| authority *A* | ``ipanon-authority-A`` | write ``<prefix>-query-requests``; read only ``<prefix>-query-responses-A`` |
| staff | ``ipanon-staff`` | write (approvals) and read (to see what they approve) ``<prefix>-query-requests``; read ``<prefix>-canary-results`` (for ``ipanon report compliance``) |
| auditor | ``ipanon-auditor`` | read ``<prefix>-audit`` and ``<prefix>-canary-results`` |
| admin | ``ipanon-admin`` | super user (``topics apply``, ``acl apply``); not an ACL |

Per-operator collectors: Kafka does not tell a consumer who produced a
record, so the operator cannot be trusted from a header that any raw-topic writer sets.  Each
operator's collector gets a **literal** Write on its own topic ``<prefix>-raw-op-<operator>``
only, and the worker takes the operator from that topic (a record there whose
``ipanon-operator`` header names another operator is dead-lettered ``operator-not-allowed``,
``agents.ingest``).  No collector may write the shared family topics ``<prefix>-raw-radius|dhcp|nat``
(there the header picks the operator: only the worker and the admin can write them on a secure
broker; they serve the unauthenticated local broker).  Literal, not prefixed: a prefixed grant
on ``…-raw-op-tele`` would also cover an operator called ``tele2``.

Per-authority answers: Kafka authorises whole topics, never keys, so "an authority reads only
its own sealed answers" needs one topic per authority.  The query agent writes every reply to
``<prefix>-query-responses`` (keyed by request id, readable by the worker only); the
``agents.answer_router`` extension copies each authenticated reply to
``<prefix>-query-responses-<authority>``, and each authority is granted a **literal** ACL on
its own topic only (a prefixed ACL on ``…-responses-rights`` would also match a topic of an
authority called ``rights-demo``).  The answers are sealed to the authority's key as well, so
a mis-grant would leak metadata (that a request exists, its status), not subscribers.

Every grant is ALLOW; there are no DENY rules (``allow.everyone.if.no.acl.found=false`` on the
broker makes anything not granted a refusal).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Optional

from stream.policy import make_layout

from .topics import Topics

ROLES = ("collector", "worker", "analyst", "authority", "staff", "auditor")


@dataclass(frozen=True, slots=True)
class Grant:
    """ALLOW ``operations`` on one resource for one user."""

    user: str
    resource: str          # topic | group | cluster
    name: str              # resource name ("kafka-cluster" for the cluster)
    pattern: str           # literal | prefixed
    operations: tuple[str, ...]   # Kafka operation names: Read, Write, Describe, …

    @property
    def principal(self) -> str:
        return f"User:{self.user}"


def worker_groups(app_id: str) -> dict[str, str]:
    """The consumer groups of the worker's batch stages (``agents.batch``), besides Faust's
    own group ``<app id>`` (the lookup and query agents; the table's assignment): stage name →
    group.  ``mapping`` is joined by nobody: the mapping stage assigns itself the table's
    partitions and only commits there (``agents.mapping_stage``); ``stats`` only by the upgrade
    drain (``agents.stats_drain``), while bindings an earlier release left for its stats stage
    wait to be counted."""
    return {"ingest": f"{app_id}-ingest", "stats": f"{app_id}-stats", "aggregate": f"{app_id}-aggregate",
            "mapping": f"{app_id}-mapping"}


def user_for(role: str, authority: Optional[str] = None) -> str:
    """The SCRAM user of a role; ``authority`` is the authority id (role ``authority``) or the
    operator name (role ``collector``)."""
    if role in ("authority", "collector"):
        if not authority:
            raise ValueError(f"the {role} role needs an {'authority id' if role == 'authority' else 'operator name'}")
        return f"ipanon-{role}-{authority}"
    return f"ipanon-{role}"


def query_topics(prefix: str) -> tuple[str, str]:
    """(requests+approvals, all replies) — as ``agents.commands.query.topic_names``."""
    return f"{prefix}-query-requests", f"{prefix}-query-responses"


def authority_topic(prefix: str, authority: str) -> str:
    """The topic only ``authority`` may read: its status replies and sealed answers."""
    return f"{prefix}-query-responses-{authority}"


def role_grants(prefix: str = "ipanon", app_id: str = "ipanon",
                authorities: Iterable[str] = (), operators: Iterable[str] = ()) -> list[Grant]:
    """Every ACL of every role for one deployment (see the module docstring); ``operators``:
    one collector user per operator, writing its own raw topic only."""
    t = Topics(prefix, operators)
    requests, _ = query_topics(prefix)
    g: list[Grant] = []
    u = user_for
    for name, op in t.raw_operator.items():
        g.append(Grant(u("collector", op), "topic", name, "literal", ("Write", "Describe")))
    worker_ops = ("Read", "Write", "Create", "Describe", "DescribeConfigs")
    for pfx in dict.fromkeys((f"{prefix}-", f"{app_id}-")):
        g.append(Grant(u("worker"), "topic", pfx, "prefixed", worker_ops))
    for group in (app_id, *worker_groups(app_id).values()):
        g.append(Grant(u("worker"), "group", group, "literal", ("Read", "Describe")))
    g.append(Grant(u("worker"), "cluster", "kafka-cluster", "literal", ("Describe", "DescribeConfigs")))
    for name in (t.stats, t.aggregates, t.erasures):  # erasures: consent withdrawals to honour
        g.append(Grant(u("analyst"), "topic", name, "literal", ("Read", "Describe")))
    g.append(Grant(u("analyst"), "group", f"{prefix}-analyst", "prefixed", ("Read", "Describe")))
    for a in sorted(set(authorities)):
        g.append(Grant(u("authority", a), "topic", requests, "literal", ("Write", "Describe")))
        g.append(Grant(u("authority", a), "topic", authority_topic(prefix, a), "literal", ("Read", "Describe")))
    g.append(Grant(u("staff"), "topic", requests, "literal", ("Read", "Write", "Describe")))
    g.append(Grant(u("auditor"), "topic", t.audit, "literal", ("Read", "Describe")))
    # the canaries' measurements (no personal data): whoever writes or checks the compliance report
    for role in ("staff", "auditor"):
        g.append(Grant(u(role), "topic", t.canary_results, "literal", ("Read", "Describe")))
    return g


def covered_topics(prefix: str, app_id: str, operators: Iterable[str] = ()) -> dict[str, set[str]]:
    """Layout topic → users that may read it (for checks and docs)."""
    operators = tuple(operators)
    grants = role_grants(prefix, app_id, operators=operators)
    out: dict[str, set[str]] = {}
    for name in make_layout(prefix, app_id, operators):
        for gr in grants:
            if gr.resource != "topic" or "Read" not in gr.operations:
                continue
            if (gr.pattern == "literal" and gr.name == name) or (gr.pattern == "prefixed" and name.startswith(gr.name)):
                out.setdefault(name, set()).add(gr.user)
    return out


# -- rendering ---------------------------------------------------------------------------

_CLI_RESOURCE = {"topic": "--topic", "group": "--group", "cluster": "--cluster"}


def render_kafka_acls(grants: list[Grant], *, bootstrap: str = "BOOTSTRAP",
                      command_config: str = "admin.properties") -> str:
    """One ``kafka-acls.sh --add`` line per grant (run them as the admin user)."""
    lines = ["# generated by `ipanon acl render` — run as the Kafka admin (super user)"]
    for gr in grants:
        res = _CLI_RESOURCE[gr.resource] + ("" if gr.resource == "cluster" else f" {gr.name}")
        ops = " ".join(f"--operation {op}" for op in gr.operations)
        lines.append(f"kafka-acls.sh --bootstrap-server {bootstrap} --command-config {command_config} --add "
                     f"--allow-principal {gr.principal} {ops} {res} --resource-pattern-type {gr.pattern}")
    return "\n".join(lines) + "\n"


def render_strimzi(grants: list[Grant], *, cluster: str = "ipanon", namespace: Optional[str] = None) -> str:
    """Strimzi ``KafkaUser`` resources (``kafka.strimzi.io/v1beta2``, SCRAM-SHA-512, simple
    authorization), one per user, as a multi-document YAML (JSON-compatible scalars)."""
    by_user: dict[str, list[Grant]] = {}
    for gr in grants:
        by_user.setdefault(gr.user, []).append(gr)
    docs = []
    for user, gs in by_user.items():
        meta = [f"  name: {user}", "  labels:", f"    strimzi.io/cluster: {cluster}"]
        if namespace:
            meta.insert(1, f"  namespace: {namespace}")
        acls = []
        for gr in gs:
            res = [f"      - resource:", f"          type: {gr.resource}"]
            if gr.resource != "cluster":
                res += [f"          name: {json.dumps(gr.name)}", f"          patternType: {gr.pattern}"]
            res += [f"        operations: [{', '.join(gr.operations)}]", "        host: \"*\""]
            acls += res
        docs.append("\n".join(["apiVersion: kafka.strimzi.io/v1beta2", "kind: KafkaUser", "metadata:", *meta,
                               "spec:", "  authentication:", "    type: scram-sha-512",
                               "  authorization:", "    type: simple", "    acls:", *acls]))
    return "---\n" + "\n---\n".join(docs) + "\n"


# -- applying ----------------------------------------------------------------------------

def to_kafka_python(grants: list[Grant]) -> list:
    """``kafka.admin.ACL`` objects (one per grant and operation)."""
    from kafka.admin import ACL, ACLOperation, ACLPermissionType, ACLResourcePatternType, ResourcePattern, ResourceType

    ops = {"Read": ACLOperation.READ, "Write": ACLOperation.WRITE, "Create": ACLOperation.CREATE,
           "Describe": ACLOperation.DESCRIBE, "DescribeConfigs": ACLOperation.DESCRIBE_CONFIGS,
           "Alter": ACLOperation.ALTER, "AlterConfigs": ACLOperation.ALTER_CONFIGS, "Delete": ACLOperation.DELETE}
    rtype = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP, "cluster": ResourceType.CLUSTER}
    ptype = {"literal": ACLResourcePatternType.LITERAL, "prefixed": ACLResourcePatternType.PREFIXED}
    out = []
    for gr in grants:
        pat = ResourcePattern(rtype[gr.resource], gr.name, ptype[gr.pattern])
        for op in gr.operations:
            out.append(ACL(gr.principal, "*", ops[op], ACLPermissionType.ALLOW, pat))
    return out


def apply_grants(admin, grants: list[Grant], *, timeout_s: float = 60.0) -> tuple[int, int]:
    """Create the missing ACLs and wait until the broker shows all of them.  Returns (bindings
    created, bindings that already existed).

    KRaft applies ACLs through the metadata log: right after CreateAcls answers, the broker may
    still authorise with the old set (seen here: a Read granted a moment earlier refused under
    load).  ``describe_acls`` reads the same metadata image the authoriser uses, so this
    returns only once the grants are in force on that broker."""
    import time

    from kafka.admin import ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType, ResourcePatternFilter, ResourceType

    every = ACLFilter(None, None, ACLOperation.ANY, ACLPermissionType.ANY,
                      ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY))
    wanted = to_kafka_python(grants)
    have = set(admin.describe_acls(every)[0])
    new = [a for a in wanted if a not in have]
    if new:
        res = admin.create_acls(new)
        if res["failed"]:
            raise RuntimeError(f"{len(res['failed'])} ACLs were refused by the broker: {res['failed'][0]}")
    deadline = time.monotonic() + timeout_s
    while not set(wanted) <= set(admin.describe_acls(every)[0]):
        if time.monotonic() >= deadline:
            raise RuntimeError(f"the broker accepted the ACLs but does not show all of them after {timeout_s:.0f}s")
        time.sleep(0.2)
    return len(new), len(wanted) - len(new)
