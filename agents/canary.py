"""Erasure canaries in the worker: inject, follow, measure.  Decisions (what a
canary is, its records, what counts as gone, the bounds) live in ``stream.canary``.

Built by ``agents.app.Pipeline`` (``Parts.canary``) every ``IPANON_CANARY_PERIOD_MS`` /
``--canary-period-ms`` (default 300000 = one canary per operator every 5 min; 0 = off).

- **inject** (every period): per operator, one Start + Stop pair (``stream.canary.records``)
  produced to ``<prefix>-raw-op-<operator>``: the real ingest path.  The address is chosen so
  its table partition is one this worker owns (it can then read its own table); a worker owning
  none injects nothing.
- **watch** (every 250 ms, and right after every sweeper pass — the pass that drops a canary
  or destroys its key is then observed with no polling delay): the worker's own table —
  present, sealed under which epoch, gone — and the operator's vault — the epoch key destroyed.
- **scan** (every ``scan period`` = min(period, 60 s), and never more than 1 % of one core:
  ``SCAN_DUTY_FACTOR``): the raw and bindings topics (delete policy) by offsets only — the
  canary's record is gone once the partition's log start passes its offset (the raw record's
  from its produce ack; the bindings record's bounded by the partition's end offset once the
  table held it, a conservative mark); the changelog partition read from the beginning with a
  group-less consumer, once per partition per scan and only after the table let the canary go
  (a sealed version still there?  the tombstone written?); every file of the worker's data
  directory for the canary's table key, address or subscriber bytes.

Every finished canary leaves one record per store on ``<prefix>-canary-results``
(``stream.canary.result_records``: operator, store, canary id, instants, persistence, bound,
promise; no personal data), which ``ipanon report compliance`` reads for its period.

Figures (``figures(now)``) per operator and store are exported by ``agents.metrics``
(``ipanon_canary_persistence_seconds`` …) and alerted on by deploy/prometheus/ipanon-rules.yml.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from stream import canary as C
from stream import intervals as iv
from stream.keyring import sealed_epoch
from stream.parse import get_format

from .mapping_table import SCHEDULE_BUCKET_MS, partition_for

log = logging.getLogger("ipanon.canary")

#: finished canaries kept per operator for the figures (the gauges are a worst case over these)
KEEP_FINISHED = 64
#: topic scans run at most this often
MAX_SCAN_PERIOD_MS = 60_000
#: a scan that used d CPU-seconds waits SCAN_DUTY_FACTOR × d before the next (≤ 1 % of one core)
SCAN_DUTY_FACTOR = 100.0
#: the table and the vault are looked at this often: a measured figure is late by at most this
WATCH_PERIOD_S = 0.25


class Tracked:
    """A ``stream.canary.Canary`` with where to look for it."""

    def __init__(self, c: C.Canary, *, table_key: bytes, routing_key: bytes, partition: int, marker: bytes,
                 address: str, raw_partition: int, raw_offset: int) -> None:
        self.c = c
        self.table_key = table_key
        self.routing_key = routing_key
        self.partition = partition
        self.marker = marker
        self.address = address.encode()
        #: topic → (partition, highest offset found); the raw record's from its produce ack
        self.found: dict[str, tuple[int, int]] = {"raw": (raw_partition, raw_offset)}
        self.abandoned = False


class CanaryJob:
    def __init__(self, period_ms: int, *, operators: Mapping[str, Any], settings: Any, plan: Any, names: Any,
                 changelog: str, vaults: Mapping[str, Any], table: Any, clock: Callable[[], int],
                 count: Callable[..., None], make_topic: Callable[[str], Any]) -> None:
        """``settings``: partitions, sweeper period, data dir, Kafka clients; ``plan``: the
        retention plan (None: no topic bounds); ``changelog``: the table's changelog topic name;
        ``table``: the mapping table, read only (``active``, ``get_raw``); ``make_topic(name)``:
        a raw-serialised Faust topic to produce to."""
        self.operators = operators
        self.settings = settings
        self.plan = plan
        self.names = names
        self.changelog = changelog
        self.vaults = vaults
        self.table = table
        self.clock = clock
        self.count = count
        self.make_topic = make_topic
        self.period_ms = period_ms
        self.scan_ms = max(1000, min(period_ms, MAX_SCAN_PERIOD_MS))
        self.pending: list[Tracked] = []
        self.finished: dict[str, deque] = {op: deque(maxlen=KEEP_FINISHED) for op in operators}
        self.bounds: dict[tuple[str, str], Optional[int]] = {}
        self.promises: dict[str, int] = {}
        self._bounds()
        self._scanning = False
        self._next_scan_ms = 0
        self._soon = False
        self.scanner = StoreScanner(settings=settings, names=names, changelog=changelog)
        #: result records not yet produced to <prefix>-canary-results (sent by the watch timer)
        self.outbox: list[dict] = []
        self.results_sent = 0
        self._sending = False

    # -- bounds (the plan's numbers) --------------------------------------------------------

    def _bounds(self) -> None:
        s = self.settings
        from .app import vault_grace_ms

        plan = self.plan
        for name, op in self.operators.items():
            rows: dict[str, Optional[int]] = {}
            disk = None
            promise = op.policy.lawful_access.promise_ms if op.policy is not None else op.ttl_ms
            if plan is not None:
                want = {self.changelog: "changelog", self.names.bindings: "bindings",
                        self.names.operator_raw(name): "raw"}
                for r in plan.rows:
                    if r.operator == name and r.topic in want:
                        rows[want[r.topic]] = r.bound_ms
                ret = plan.retention.get(name)
                if ret is not None:
                    # the table TTL may be shortened (--ttl-ms): the disk bound moves with it
                    disk = ret.worst_case_ms - ret.ttl_ms + op.ttl_ms
            b = C.store_bounds(ttl_ms=op.ttl_ms, sweeper_period_ms=s.sweeper_period_ms,
                               schedule_bucket_ms=SCHEDULE_BUCKET_MS, epoch_period_ms=self.vaults[name].period_ms,
                               key_grace_ms=vault_grace_ms(s), disk_bound_ms=disk, topic_rows=rows)
            self.promises[name] = promise
            for store, v in b.items():
                self.bounds[(name, store)] = v

    # -- inject -----------------------------------------------------------------------------

    async def inject(self) -> None:
        try:
            for name in sorted(self.operators):
                await self.inject_one(name, self.clock())
        except Exception:
            log.exception("canary: injection failed; will retry")
            self.count("canary_errors")

    async def inject_one(self, name: str, now: int) -> Optional[Tracked]:
        active = self.table.active
        if not active:
            return None
        op = self.operators[name]
        seq = now
        end = now - now % 1000
        attr = op.policy.identity.radius_attribute if op.policy is not None else "User-Name"
        for k in range(16):
            rk = iv.routing_key(name, C.address(seq, k)).encode()
            part = partition_for(rk, self.settings.partitions)
            if part in active:
                break
        else:
            return None
        recs = C.records(name, seq, end_ms=end, identity_attribute=attr, k=k)
        # the binding exactly as ingest will make it: the table key comes from it
        b = get_format(C.FORMAT).parse(recs[-1], operator=name, identity=attr)[0]
        table_key = self.vaults[name].key(iv.slot_of(b), b.ip)
        topic = self.make_topic(self.names.operator_raw(name))
        headers = [("ipanon-format", C.FORMAT.encode()), ("ipanon-operator", name.encode()),
                   ("ipanon-source", C.SOURCE.encode())]
        md = None
        for r in recs:  # one key: one partition, in order
            fut = await topic.send(key=C.SOURCE.encode(), value=r, headers=headers)
            md = await fut
        c = C.Canary(name, seq, end_ms=end, expiry_ms=end + op.ttl_ms, inserted_ms=self.clock())
        t = Tracked(c, table_key=table_key, routing_key=rk, partition=part, marker=C.subscriber(name, seq).encode(),
                    address=str(b.ip.network_address), raw_partition=md.partition, raw_offset=md.offset)
        self.pending.append(t)
        self.count("canaries_injected")
        log.info("canary: %s #%d injected (k=%d)", name, seq, k)  # synthetic: names no one
        return t

    # -- watch the table and the vault ------------------------------------------------------

    def watch(self, now: int) -> None:
        for t in self.pending:
            c = t.c
            if "table" in c.gone and (c.sealed_epoch is None or "epoch-key" in c.gone):
                continue  # nothing left here to watch: only the topic scans remain (hours, on a real plan)
            if t.partition not in self.table.active:
                # moved to another worker (a rebalance): this one cannot read that table, and a
                # figure it cannot finish would only rise; it is dropped, not measured
                t.abandoned = True
                continue
            raw = self.table.get_raw(t.table_key)
            if raw is not None and "table" not in c.present:
                # in the table ⇒ every store upstream held it, and the disk may (conservative)
                for s in ("raw", "bindings", "changelog", "disk", "epoch-key"):
                    c.saw(s, True, now)
            if raw is None and "table" in c.present and "table" not in c.gone:
                # the sweeper just let it go: read the changelog at once, while the tombstone it
                # wrote is still there (compaction keeps it only delete.retention.ms)
                self._soon = True
            c.saw("table", raw is not None, now)
            if raw is not None:
                try:
                    e = sealed_epoch(raw)
                    c.sealed_epoch = e if c.sealed_epoch is None else max(c.sealed_epoch, e)
                except Exception:
                    pass
            if c.sealed_epoch is not None:
                c.saw("epoch-key", self.vaults[c.operator].ring.oldest_epoch <= c.sealed_epoch, now)
        self._retire()

    def after_sweep(self, now_ms: int, expired: int, seconds: float) -> None:
        """The sweeper's listener: look at the table and the vault right after every pass too.
        The sweeper is what drops a canary and destroys its epoch key, so the figure then
        carries no polling delay and is comparable with the computed bound."""
        try:
            self.watch(self.clock())
        except Exception:
            log.exception("canary: watch failed; will retry")

    def _retire(self) -> None:
        keep = []
        for t in self.pending:
            if t.abandoned:
                self.count("canaries_abandoned")
                continue
            if t.c.done:
                self.finished[t.c.operator].append(t.c)
                self.outbox.extend(C.result_records(t.c, bounds=self.bounds, promise_ms=self.promises.get(t.c.operator)))
                self.count("canaries_finished")
                # no identifier in the line: the canary's number and its figures only
                log.info("canary: %s #%d gone everywhere: %s", t.c.operator, t.c.seq, json.dumps(
                    {s: t.c.persistence_ms(s, 0) for s in C.STORES}
                    | {"tombstone": None if t.c.tombstone_ms is None else t.c.tombstone_ms - t.c.end_ms}))
            else:
                keep.append(t)
        self.pending = keep

    async def send_results(self) -> None:
        """Produce the finished canaries' records (key: the operator), oldest first; a record
        whose send fails stays queued for the next timer tick."""
        if not self.outbox:
            return
        topic = self.make_topic(self.names.canary_results)
        while self.outbox:
            r = self.outbox[0]
            fut = await topic.send(key=r["operator"].encode(), value=json.dumps(r, sort_keys=True).encode())
            await fut
            self.outbox.pop(0)
            self.results_sent += 1
            self.count("canary_results_sent")

    async def _send_task(self) -> None:
        try:
            await self.send_results()
        except Exception:
            log.exception("canary: sending results failed; will retry")
            self.count("canary_errors")
        finally:
            self._sending = False

    async def watch_timer(self) -> None:
        if self.outbox and not self._sending:  # in its own task: a slow ack never delays the watch
            self._sending = True
            asyncio.ensure_future(self._send_task())
        try:
            self.watch(self.clock())
            if self._soon and not self._scanning:
                self._soon = False
                self._next_scan_ms = 0  # once per canary: outside the duty cap
                asyncio.ensure_future(self.scan())
        except Exception:
            log.exception("canary: watch failed; will retry")
            self.count("canary_errors")

    # -- scan topics and disk ---------------------------------------------------------------

    async def scan(self) -> None:
        """One scan, unless one is running or the duty cap says wait: a scan that used *d*
        CPU-seconds is not followed by another for ``SCAN_DUTY_FACTOR × d`` (so scanning a large
        changelog partition takes at most 1 % of one core; the figure's resolution is then
        coarser, never its bound looser: a store is marked gone only when seen gone)."""
        now = self.clock()
        if self._scanning or now < self._next_scan_ms:
            return
        todo = [t for t in self.pending if "table" in t.c.present]
        if not todo:
            return
        self._scanning = True
        self.scanner.last_scan_s = 0.0
        try:
            seen = await asyncio.to_thread(self.scanner.observe, todo)
            now = self.clock()
            for t, obs in zip(todo, seen):
                for store, here in obs.items():
                    if store != "tombstone":
                        t.c.saw(store, here, now)
                if obs.get("tombstone") and t.c.tombstone_ms is None:
                    t.c.tombstone_ms = now
            self._retire()
        except Exception:
            log.exception("canary: scan failed; will retry")
            self.count("canary_errors")
        finally:
            self._scanning = False
            self._next_scan_ms = self.clock() + int(SCAN_DUTY_FACTOR * self.scanner.last_scan_s * 1000)

    # -- figures ----------------------------------------------------------------------------

    def canaries(self) -> list[C.Canary]:
        return [c for d in self.finished.values() for c in d] + [t.c for t in self.pending]

    def figures(self, now: int) -> list[C.StoreFigure]:
        return C.summarize(self.canaries(), now, bounds=self.bounds, promises=self.promises)


class StoreScanner:
    """Where the canaries still are outside the table: the raw and bindings topics, the
    changelog, the data directory.  Blocking (kafka-python, file reads): run in a thread."""

    def __init__(self, *, settings: Any, names: Any, changelog: str) -> None:
        """``settings``: the Kafka clients and the data directory; ``changelog``: the table's
        changelog topic name."""
        self.settings = settings
        self.names = names
        self.changelog = changelog
        self._consumer: Any = None
        self.last_scan_s = 0.0  # CPU time of the last scan (the job's duty cap)

    def observe(self, todo: list[Tracked]) -> list[dict]:
        """Observations per canary.  Raw and bindings topics (delete policy) by offsets only: the
        raw record's offset is known from its produce ack; its bindings record was written before
        the table held it, so below the partition's end offset read at the first scan after that
        (a conservative mark).  Either is gone once the partition's log start passes its mark.
        The changelog (compacted) is read from the beginning, once per partition per scan, and
        only for canaries the table already let go (until then its sealed version must be there)."""
        from kafka import TopicPartition

        from .kafka_clients import Clients

        cpu0 = time.thread_time()  # the cap counts CPU, not the wait for the broker's answers
        if self._consumer is None:  # one consumer for every scan: making one costs more than a scan
            self._consumer = Clients.of(self.settings).consumer(client_id="ipanon-canary", consumer_timeout_ms=10_000)
        c = self._consumer
        out: list[dict] = [dict() for _ in todo]
        ok = False
        try:
            # one offsets request for every partition involved, whatever the number of canaries
            checks = []
            for i, t in enumerate(todo):
                for store, topic in (("raw", self.names.operator_raw(t.c.operator)), ("bindings", self.names.bindings)):
                    if store not in t.c.gone:
                        part = t.found[store][0] if store in t.found else t.partition
                        checks.append((i, t, store, TopicPartition(topic, part)))
            tps = sorted({x[3] for x in checks})
            if tps:
                ends = c.end_offsets(tps)
                begins = c.beginning_offsets(tps)
                for i, t, store, tp in checks:
                    if store not in t.found:
                        t.found[store] = (tp.partition, ends[tp] - 1)
                    out[i][store] = begins[tp] <= t.found[store][1]
            by_part: dict[int, list[int]] = {}
            for i, t in enumerate(todo):
                if "table" in t.c.gone and "changelog" not in t.c.gone:
                    by_part.setdefault(t.partition, []).append(i)
            for part, idx in by_part.items():
                keys = {todo[i].table_key: i for i in idx}
                here, tombs = _read_changelog(c, TopicPartition(self.changelog, part), set(keys))
                for k, i in keys.items():
                    out[i]["changelog"] = k in here
                    if k in tombs:
                        out[i]["tombstone"] = True
            root = Path(self.settings.data_dir)
            want = [i for i, t in enumerate(todo) if "disk" not in t.c.gone]
            if want:
                found = _on_disk(root, {n: i for i in want for n in (todo[i].table_key, todo[i].marker, todo[i].address)})
                for i in want:
                    out[i]["disk"] = i in found
            ok = True
        finally:
            if not ok:  # a consumer that failed mid-scan is not trusted with the next one
                self._consumer = None
                c.close()
            self.last_scan_s = time.thread_time() - cpu0
        return out


def _read_changelog(c: Any, tp: Any, keys: set) -> tuple[set, set]:
    """(keys with a sealed version in the partition, keys with a tombstone), reading ``tp`` from
    its beginning to its current end."""
    c.assign([tp])
    c.seek_to_beginning(tp)
    end = c.end_offsets([tp])[tp]
    here: set = set()
    tombs: set = set()
    while c.position(tp) < end:
        batch = c.poll(timeout_ms=5000)
        if not batch:
            break
        for r in batch.get(tp, ()):
            if r.key in keys:
                (tombs if r.value is None else here).add(r.key)
    return here, tombs


def _on_disk(root: Path, needles: dict) -> set:
    """The values of ``needles`` (bytes → canary index) whose bytes some file under ``root`` holds."""
    found: set = set()
    for f in root.rglob("*"):
        try:
            if f.is_file():
                data = f.read_bytes()
                found.update(i for n, i in needles.items() if n in data)
        except OSError:
            continue
    return found


def schedule(app: Any, job: CanaryJob) -> None:
    """In a worker: the inject, watch and scan timers (the sweeper's listener and the metrics
    collector are wired by the composition)."""
    app.timer(job.period_ms / 1000, name="ipanon.canary-inject")(job.inject)
    app.timer(WATCH_PERIOD_S, name="ipanon.canary-watch")(job.watch_timer)
    app.timer(job.scan_ms / 1000, name="ipanon.canary-scan")(job.scan)
