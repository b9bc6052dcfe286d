"""The Quix Streams peer of ``bench_e2e.py``: the comparable stateful job in a general-purpose library.

Not a benchmark itself (no ``bench_`` prefix): ``bench_e2e.py`` runs it as a child process on
the same broker and the same raw topics as the worker, so its CPU seconds come from ``/proc``
like the worker's.  quixstreams is a benchmark-only dependency (``pip install -e .[bench]``).

Per raw topic (RADIUS radius-json, DHCP kea-hook, CGNAT ipfix-json) one ``StreamingDataFrame``:

1. ``extract``: the address (for a NAT port block: outside address and first port), the
   subscriber id, the event time and the event kind, read from the record's JSON with plain dict
   look-ups (what a Quix user would write; no validation of the kind ipanon's parsers do);
2. ``group_by`` the address: the raw records are keyed by source, so per-address state needs a
   repartition topic, as ipanon's bindings topic is keyed by address;
3. a stateful ``apply`` on Quix's RocksDB state store, changelog topics on (the default): the
   subscriber's HMAC-SHA256 pseudonym, the address's previous holder, event count and first seen
   are read and written per event;
4. one record per event to ``--out-topic``.

Runs until SIGTERM (Quix's own graceful stop: the last checkpoint commits).

    python benchmarks/quix_peer.py --bootstrap HOST:PORT --prefix P --group G --out-topic T --state-dir D
"""

from __future__ import annotations

import argparse
import hmac
from typing import Optional

#: raw topic family → the record's format (``agents.topics``: ``<prefix>-raw-<family>``)
FAMILIES = {"radius": "radius-json", "dhcp": "kea-hook", "nat": "ipfix-json"}
#: a fixed benchmark key (the worker's pseudonym keys are per operator and epoch; the cost is the same)
KEY = bytes(range(32))


def extract(fmt: str, v: dict) -> Optional[dict]:
    """One event's (address, subscriber, time, kind), or None when it names no address."""
    if fmt == "radius-json":
        addr, sub = v.get("Framed-IP-Address"), v.get("User-Name")
        at, kind = int(v.get("Event-Timestamp", 0)) * 1000, v.get("Acct-Status-Type")
    elif fmt == "kea-hook":
        if v.get("LEASES4_SIZE"):
            addr, sub, at = v.get("LEASES4_AT0_ADDRESS"), v.get("LEASES4_AT0_HWADDR"), int(v.get("LEASES4_AT0_CLTT", 0)) * 1000
        else:
            addr, sub, at = v.get("LEASE4_ADDRESS"), v.get("LEASE4_HWADDR"), int(v.get("ts_ms", 0))
        kind = v.get("hook")
    elif fmt == "ipfix-json":
        out = v.get("postNATSourceIPv4Address")
        addr = f"{out}:{v.get('portRangeStart')}" if out else None
        sub, at, kind = v.get("sourceIPv4Address"), int(v.get("observationTimeMilliseconds", 0)), v.get("natEvent")
    else:
        return None
    if not addr or not sub:
        return None
    return {"addr": addr, "sub": sub, "at": at, "kind": kind}


def update(e: dict, state) -> dict:
    """The per-address state step: pseudonym of the holder, previous holder, count, first seen."""
    p = hmac.digest(KEY, e["sub"].encode(), "sha256").hex()
    prev = state.get("holder")
    n = state.get("n", 0) + 1
    first = state.get("first", e["at"])
    state.set("holder", p)
    state.set("n", n)
    state.set("first", first)
    return {"addr": e["addr"], "pseudonym": p, "previous": prev, "at": e["at"], "kind": e["kind"], "n": n,
            "first": first}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--prefix", required=True, help="the worker's topic prefix: reads <prefix>-raw-<family>")
    ap.add_argument("--group", required=True, help="consumer group (also names Quix's internal topics)")
    ap.add_argument("--out-topic", required=True)
    ap.add_argument("--state-dir", required=True)
    a = ap.parse_args()

    from quixstreams import Application

    app = Application(broker_address=a.bootstrap, consumer_group=a.group, auto_offset_reset="earliest",
                      state_dir=a.state_dir, use_changelog_topics=True, loglevel="WARNING")
    out = app.topic(a.out_topic, value_serializer="json", key_serializer="str")
    for family, fmt in FAMILIES.items():
        sdf = app.dataframe(app.topic(f"{a.prefix}-raw-{family}", value_deserializer="json"))
        sdf = sdf.apply(lambda v, fmt=fmt: extract(fmt, v)).filter(lambda e: e is not None)
        sdf = sdf.group_by(lambda e: e["addr"], name=f"addr-{family}", key_serializer="str", key_deserializer="str")
        sdf = sdf.apply(update, stateful=True)
        sdf.to_topic(out)
    app.run()


if __name__ == "__main__":
    main()
