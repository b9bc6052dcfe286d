"""Statistics records: a binding with every raw identifier replaced.

Schema version 1 (documented for analysts in README "Statistics records"):

    {"v": 1, "id": <record id>, "kind", "action", "operator", "bucket_ms": <start of the
     coarse time bucket>, "subscriber": <pseudonym>, "epoch": <key epoch>, "ip": <address
     pseudonym or null>, "octets_in", "octets_out", "session_time_s", "ports": <NAT block size>}

``id`` is a keyed hash of the whole binding, so a replayed event yields the same id and a
consumer can drop duplicates, while nobody without the key can test a guess of the raw fields
against it.  Nothing raw — address, subscriber id, MAC, DUID, circuit id, session id, NAS —
is ever copied into a record; ``tests/unit/test_stats.py`` checks that field by field.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from .model import Binding

STATS_SCHEMA_VERSION = 1
DEFAULT_BUCKET_MS = 3_600_000

Pseudonymiser = Callable[[str], str]


def bucket_of(at_ms: int, bucket_ms: int = DEFAULT_BUCKET_MS) -> int:
    return at_ms - at_ms % bucket_ms


def stats_record(
    b: Binding,
    *,
    subscriber: Pseudonymiser,
    record_id: Pseudonymiser,
    epoch: int,
    address: Optional[Callable[[Binding], Optional[str]]] = None,
    bucket_ms: int = DEFAULT_BUCKET_MS,
) -> dict[str, Any]:
    """Build the stats record for ``b``.  ``subscriber`` and ``record_id`` are keyed hashes
    (HMAC-SHA256 under the operator's statistics key of the epoch); ``address`` applies the
    operator's address scheme (``None`` = drop the address)."""
    holder = b.subscriber if b.kind != "nat" else (str(b.inside_ip) if b.inside_ip else None)
    ports = None
    if b.port_first is not None and b.port_last is not None:
        ports = b.port_last - b.port_first + 1
    return {
        "v": STATS_SCHEMA_VERSION,
        "id": record_id(b.to_json().decode()),
        "kind": b.kind,
        "action": b.action,
        "operator": b.operator,
        "bucket_ms": bucket_of(b.at_ms, bucket_ms),
        "subscriber": subscriber(holder) if holder is not None else None,
        "epoch": epoch,
        "ip": address(b) if address is not None and b.ip is not None else None,
        "octets_in": b.octets_in,
        "octets_out": b.octets_out,
        "session_time_s": b.session_time_s,
        "ports": ports,
    }
