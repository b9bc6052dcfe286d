"""Crypto-shredding attacked from the outside on the real broker: a copy of the changelog taken
while mappings are live (a replica, a backup, a segment not yet cleaned) must open nothing with
the key state the worker keeps once the promise has passed — every superseded version included
— while lookups stay exact for sessions still open, across a restart."""

from __future__ import annotations

import signal
import time
import uuid

import pytest

from agents.kafka_io import read_all
from agents.lookup_client import lookup_many
from agents.vault import period_for
from stream import intervals as iv
from stream.binding_wire import decode as decode_binding
from stream.errors import CryptoError, Rejected
from stream.keyring import Keyring, sealed_epoch
from tests.conftest import wait_for
from tests.e2e.test_erasure import INGEST_LAG_MS, PROMISE_S, fast_profile, produce

pytestmark = [pytest.mark.broker, pytest.mark.slow]

N = 20
#: agents.app.vault_grace_ms for the worker's defaults (1 s sweeper, 1 s schedule buckets)
GRACE_MS = 2 * 1_000 + 1_000 + 1_000


def changelog_values(w, op: str) -> list[tuple[bytes, bytes]]:
    prefix = f"{op}|".encode()
    return [(r.key, r.value) for r in read_all(w.bootstrap, f"{w.topics.prefix}-mappings-changelog", heartbeats=True)
            if r.value is not None and r.key and r.key.startswith(prefix)]


class Tap:
    """A replica's view of the changelog: a consumer in a thread keeps every record it reads,
    from the beginning on, whatever compaction removes from the live log later."""

    def __init__(self, w, op: str):
        import threading

        from kafka import KafkaConsumer, TopicPartition

        self.prefix = f"{op}|".encode()
        self.seen: set = set()
        self._stop = threading.Event()
        topic = f"{w.topics.prefix}-mappings-changelog"
        self._c = KafkaConsumer(bootstrap_servers=w.bootstrap, enable_auto_commit=False, group_id=None)
        parts = wait_for(lambda: self._c.partitions_for_topic(topic), timeout_s=60, what="the changelog")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        self._c.assign(tps)
        self._c.seek_to_beginning(*tps)
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            for recs in self._c.poll(timeout_ms=200).values():
                self.seen.update((r.key, r.value) for r in recs
                                 if r.value is not None and r.key and r.key.startswith(self.prefix))

    def copy(self) -> set:
        return set(self.seen)

    def close(self):
        self._stop.set()
        self._t.join(10)
        self._c.close()


def ring_on_disk(w, op: str) -> Keyring:
    """The worker's lawful-access key state as an attacker with its key directory sees it
    (``agents.vault``: 16 header bytes, then ``Keyring.to_bytes``)."""
    return Keyring.from_bytes((w.keys / f"{op}.mapping.ratchet").read_bytes()[16:])


def open_all(ring: Keyring, values) -> tuple[int, set[tuple[str, str]]]:
    """How many values open, and the address→subscriber pairs they give."""
    opened, pairs = 0, set()
    for key, raw in values:
        try:
            net, ivs = iv.decode_value(ring.open(raw, aad=key))
        except (CryptoError, Rejected):
            continue
        opened += 1
        pairs |= {(str(net.network_address), i.holder) for i in ivs}
    return opened, pairs


def radius(tag, i, status, ts, **extra):
    return {"User-Name": f"shred-{tag}-{i}@isp.example", "Acct-Status-Type": status, "Acct-Session-Id": f"{tag}-{i}",
            "NAS-IP-Address": "192.0.2.10", "Framed-IP-Address": f"100.64.{91 + i // 200}.{i % 200 + 1}",
            "Event-Timestamp": ts, **extra}


def holders(w, op, addrs, at_ms):
    q = [{"operator": op, "ip": a, "from_ms": at_ms, "to_ms": at_ms + 1} for a in addrs]
    got = lookup_many(w.bootstrap, w.topics, q, key=w.lookup_key, timeout_s=60)
    return [[(h["subscriber"], h["from_ms"]) for h in got.get(x["id"], {}).get("holders", [])] for x in q]


def test_snapshot_of_every_version_opens_nothing_after_the_promise(worker_factory, tmp_path, bootstrap):
    op = f"shred{uuid.uuid4().hex[:6]}"
    w = worker_factory(operators=((op, fast_profile(op)),), ingest_lag_ms=INGEST_LAG_MS).start()
    w.bootstrap = bootstrap
    ttl = w.plan.retention[op].ttl_ms
    # the key of a value's epoch dies at most a period and the grace after its expiry
    assert ttl + period_for(ttl) + GRACE_MS <= PROMISE_S * 1000
    tag = uuid.uuid4().hex[:8]
    addrs = [radius(tag, i, "Start", 0)["Framed-IP-Address"] for i in range(N)]
    start = int(time.time()) - 1
    produce(bootstrap, w.topics.raw_radius, "radius-json", [radius(tag, i, "Start", start) for i in range(N)], tmp_path, op)
    want = [[(f"shred-{tag}-{i}@isp.example", start * 1000)] for i in range(N)]
    wait_for(lambda: holders(w, op, addrs, start * 1000) == want, timeout_s=120, what="the Starts applied")
    # the attacker's copy (a replica, a backup) keeps whatever it saw, also after compaction
    tap = Tap(w, op)

    def copied(n):
        return len(tap.copy()) >= n

    time.sleep(1.1)
    interim = int(time.time())
    produce(bootstrap, w.topics.raw_radius, "radius-json",
            [radius(tag, i, "Interim-Update", interim, **{"Acct-Session-Time": interim - start}) for i in range(N)],
            tmp_path, op)
    wait_for(lambda: copied(2 * N), timeout_s=120, what="the Interims in the changelog")

    time.sleep(1.1)
    stop = int(time.time())
    produce(bootstrap, w.topics.raw_radius, "radius-json",
            [radius(tag, i, "Stop", stop, **{"Acct-Session-Time": stop - start}) for i in range(N)], tmp_path, op)
    wait_for(lambda: holders(w, op, addrs, stop * 1000) == [[]] * N and copied(3 * N), timeout_s=120,
             what="the Stops applied and in the changelog")

    # the copy was taken before any key was tombstoned: every version of every session
    tap.close()
    snapshot = tap.copy()
    opened, pairs = open_all(ring_on_disk(w, op), snapshot)
    assert opened == len(snapshot) >= 3 * N and len(pairs) == N   # readable now: the test can tell

    # past the promise counted from the Stop (the mapping's end), the same copy opens nothing
    time.sleep(max(0.0, stop + PROMISE_S + 1 - time.time()))
    opened, pairs = open_all(ring_on_disk(w, op), snapshot)
    assert (opened, len(pairs)) == (0, 0), f"{opened} of {len(snapshot)} values opened, {len(pairs)} pairs"


def test_open_sessions_stay_exact_while_old_versions_are_shredded_and_after_a_restart(worker_factory, tmp_path,
                                                                                      bootstrap):
    op = f"shred{uuid.uuid4().hex[:6]}"
    w = worker_factory(operators=((op, fast_profile(op)),), ingest_lag_ms=INGEST_LAG_MS).start()
    w.bootstrap = bootstrap
    ttl = w.plan.retention[op].ttl_ms
    tag = uuid.uuid4().hex[:8]
    n = 6
    addrs = [radius(tag, i, "Start", 0)["Framed-IP-Address"] for i in range(n)]
    start = int(time.time()) - 1
    produce(bootstrap, w.topics.raw_radius, "radius-json", [radius(tag, i, "Start", start) for i in range(n)], tmp_path, op)
    want = [[(f"shred-{tag}-{i}@isp.example", start * 1000)] for i in range(n)]
    probe = start * 1000
    wait_for(lambda: holders(w, op, addrs, probe) == want, timeout_s=120, what="the Starts applied")
    first = changelog_values(w, op)
    assert len(first) == n

    # the sessions stay open and quiet past the Start versions' earliest expiry: the sweeper
    # re-seals the live value under later epochs while the Start's own epoch key is destroyed
    time.sleep(max(0.0, (start * 1000 + ttl + period_for(ttl) + GRACE_MS) / 1000 + 2 - time.time()))
    assert holders(w, op, addrs, probe) == want
    assert open_all(ring_on_disk(w, op), first) == (0, set())
    # the live versions are re-sealed ones, under later epochs (compaction may have removed the rest)
    resealed = {v for _, v in changelog_values(w, op)} - {v for _, v in first}
    assert len(resealed) >= n
    assert min(sealed_epoch(v) for v in resealed) > max(sealed_epoch(v) for _, v in first)

    # a restart (SIGKILL: no goodbye) restores the table and still answers exactly
    w.stop(signal.SIGKILL)
    time.sleep(2)
    w.start()
    wait_for(lambda: holders(w, op, addrs, probe) == want, timeout_s=180, what="lookups after the restart")
    time.sleep(3 * period_for(ttl) / 1000 + GRACE_MS / 1000)
    assert holders(w, op, addrs, probe) == want


def test_destroyed_statistics_epoch_is_not_relinked_by_anything_left_on_disk(worker_factory, tmp_path, bootstrap,
                                                                            monkeypatch):
    """The seed-relink attack: after the worker destroyed a statistics epoch, no file of its key
    or data directory re-derives that epoch's subscriber pseudonyms; and the worker restarts
    without the seed.  The records fall in the epoch before the current one, which the worker
    keeps live for a late window ending 20 s after it starts (``IPANON_STATS_LATE_MS``), then
    destroys by itself."""
    import json
    import re

    from agents.ratchet_store import read_ring
    from stream.config import load_operators
    from stream.stats import StatsBuilder

    op = f"epoch{uuid.uuid4().hex[:6]}"
    from stream.keyring import epoch_bounds, epoch_of

    period = 6 * 3_600_000   # short epochs from origin 0 would need too many ratchet steps
    profile = re.sub(r'^key_epoch = ".*"$', 'key_epoch = "6h"', fast_profile(op), count=1, flags=re.M)
    w = worker_factory(operators=((op, profile),), ingest_lag_ms=INGEST_LAG_MS)
    w.bootstrap = bootstrap
    surviving_seed = bytes.fromhex((w.keys / f"{op}.key").read_text().strip())   # what the attack used
    now = int(time.time() * 1000)
    current_start = epoch_bounds(epoch_of(now, period), period)[0]
    monkeypatch.setenv("IPANON_STATS_LATE_MS", str(now - current_start + 20_000))
    w.start()
    policy = load_operators(w.operators_dir)[op]
    tag = uuid.uuid4().hex[:8]
    n = 16
    at = current_start // 1000 - 30           # in the previous epoch, still live for 20 s
    produce(bootstrap, w.topics.raw_radius, "radius-json", [radius(tag, i, "Start", at) for i in range(n)], tmp_path, op)

    def stats():
        recs = [json.loads(r.value) for r in read_all(bootstrap, w.topics.stats) if r.value]
        return [x for x in recs if x.get("operator") == op]

    observed = wait_for(lambda: (s := stats()) and len(s) >= n and s, timeout_s=120, what="the stats records")
    epochs = {x["epoch"] for x in observed}
    assert epochs == {epoch_of(current_start, period) - 1}
    pseudonyms = {x["subscriber"] for x in observed}
    assert len(pseudonyms) == n
    bindings = [decode_binding(r.value) for r in read_all(bootstrap, w.topics.bindings) if r.value]
    bindings = [b for b in bindings if b.operator == op]

    def relinked(ring) -> int:
        try:
            built = StatsBuilder(policy, ring).build_many(bindings)
        except Exception:  # a ring of another purpose or operator: it links nothing
            return 0
        return len({x.record["subscriber"] for x in built} & pseudonyms)

    assert relinked(Keyring.create(op, surviving_seed)) == n    # a seed left on disk relinks every one

    wait_for(lambda: read_ring(w.keys, op).oldest_epoch > max(epochs), timeout_s=120,
             what="the worker to destroy the records' epoch")
    time.sleep(1)
    rings = []
    for f in [*w.keys.rglob("*"), *(w.dir / "data").rglob("*")]:
        if not f.is_file():
            continue
        data = f.read_bytes()
        text = data.decode("ascii", "replace").strip()
        if re.fullmatch(r"[0-9a-f]{64}", text):
            rings.append(Keyring.create(op, bytes.fromhex(text)))
        for blob in (data, data[16:]):       # a statistics ratchet, a mapping vault's state
            try:
                rings.append(Keyring.from_bytes(blob))
            except CryptoError:
                pass
    assert rings                                                  # the ratchet itself is there
    assert sum(relinked(r) for r in rings) == 0
    assert not (w.keys / f"{op}.key").exists()

    # the worker starts again from its ratchet alone, and keeps publishing statistics
    w.stop()
    monkeypatch.delenv("IPANON_STATS_LATE_MS")
    w.start()
    at2 = int(time.time())
    produce(bootstrap, w.topics.raw_radius, "radius-json", [radius(tag, 100, "Start", at2)], tmp_path, op)
    wait_for(lambda: len(stats()) >= n + 1, timeout_s=120, what="statistics after a restart without the seed")
