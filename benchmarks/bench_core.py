"""µs of pure core work per event at ``--mappings`` live mappings (target 20 µs).
Figures: docs/benchmarks.md "Per-event core work".

The worker's per-event work without Kafka, step by step as its stages do it, on one operator's
dict table filled with ``--mappings`` sealed live mappings (RADIUS sessions, one per IPv4
address; the fill is setup and is not timed):

- ``encode``: ingest's output of one binding (``binding_wire.encode`` and its routing key);
- ``decode``: ``binding_wire.decode`` of the record (the mapping stage; today's stats stage
  decodes the same record once more, which this counts once);
- ``key``: the keyed table key (``Vault.key``);
- ``open``: the table read and ``Vault.open`` (a miss for a Start on a new address);
- ``apply``: ``stream.mapping.apply`` (no legal holds);
- ``seal``: ``Vault.seal_value`` of what it says to write, and the dict store;
- ``stats_build``: the stats stage's record-id input (``Binding.to_json``, docs/statistics.md)
  and ``StatsBuilder.build_many`` per batch of ``--batch`` (pseudonyms, record build, ids);
- ``stats_out``: each record's JSON and the batch's cell contributions, as ``agents.stats_agent.handle``
  writes them (``record_json``; ``ContributionEncoder.cells``: one message per cell of the batch).

Events (``--events``, on distinct addresses, so address caches see the worker's worst case): a
third Starts on new addresses (table miss, opened), a third Interim-Updates and a third Stops of
the live sessions (table hit, extended / closed).  Each step is timed over all events in
**process CPU time**, best of ``--repeat``; ``total_us`` is the same work run batch by batch in
the worker's order (best of ``--repeat``), ``steps_sum_us`` the sum of the steps.  The table is
put back after every repeat.  Address scheme: the operator profile's (``--scheme`` overrides).

    python benchmarks/bench_core.py                      # 1M mappings, ~1 min of setup
    python benchmarks/bench_core.py --scheme ipcrypt-pfx
    python benchmarks/bench_core.py --smoke              # tiny sizes, for the test suite
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import ipaddress
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.compiled_core import status as core_status  # noqa: E402
from agents.vault import Vault, period_for  # noqa: E402
from stream import binding_wire, mapping, model  # noqa: E402
from stream import intervals as iv  # noqa: E402
from stream.aggregate import ContributionEncoder  # noqa: E402
from stream.config import AddressScheme, load_operators  # noqa: E402
from stream.errors import CryptoError  # noqa: E402
from stream.keyring import Keyring, epoch_of  # noqa: E402
from stream.model import Binding  # noqa: E402
from stream.stats import StatsBuilder, record_json, record_timestamp_ms  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OPERATOR = "connect2ip"
T0 = 1_795_300_000_000
NAS = "192.0.2.10"
BASE = int(ipaddress.IPv4Address("100.64.0.0"))
TTL_MS = 24 * 3_600_000
TARGET_US = 20.0
STEPS = ("encode", "decode", "key", "open", "apply", "seal", "stats_build", "stats_out")


def subscriber(i: int) -> str:
    return f"kund-{i:07d}@isp.example"


def session(i: int) -> str:
    return f"{NAS}/S-{i:08x}"


def fill(vault: Vault, n: int, now: int, stale_ms: int) -> dict[bytes, bytes]:
    """``n`` live RADIUS sessions (opened in the last hour, last seen since), sealed as the
    worker seals them (``Vault.seal_value``: its epoch rule, the table key as AAD)."""
    table: dict[bytes, bytes] = {}
    key, seal = vault.key, vault.seal_value
    for i in range(n):
        net = model._v4_host(BASE + i)
        start = now - 3_600_000 + (i % 3_000_000)
        ivs = (iv.Interval(start, None, subscriber(i), session(i), NAS, start + 60_000),)
        k = key("ip", net)
        table[k] = seal(k, net, ivs, ttl_ms=TTL_MS, stale_after_ms=stale_ms, now_ms=now)[0]
    return table


def events(n_events: int, n_maps: int, now: int, rng: random.Random) -> list[Binding]:
    """A third Starts on new addresses, a third Interims and a third Stops of live sessions,
    shuffled, every event on its own address."""
    live = rng.sample(range(n_maps), min(n_maps, 2 * n_events // 3 + 1))
    out = []
    for j in range(n_events):
        at = now - 1_000 + j % 1000
        if j % 3 == 0:
            i = n_maps + j
            out.append(Binding("radius", "start", OPERATOR, model._v4_host(BASE + i), subscriber(i), session(i),
                               NAS, at))
        else:
            i = live[j - j // 3 - 1]
            act = "update" if j % 3 == 1 else "stop"
            out.append(Binding("radius", act, OPERATOR, model._v4_host(BASE + i), subscriber(i), session(i),
                               NAS, at, octets_in=1000 * j if act == "stop" else None,
                               octets_out=3000 * j if act == "stop" else None,
                               session_time_s=3600 if act == "stop" else None))
    rng.shuffle(out)
    return out


class Core:
    """The steps, each over a list of events (the worker's per-record code, without Kafka)."""

    def __init__(self, vault: Vault, table: dict, rules: mapping.Rules, builder: StatsBuilder, now: int,
                 batch: int) -> None:
        self.vault, self.table, self.rules, self.builder, self.now, self.batch = \
            vault, table, rules, builder, now, batch
        self.outcomes: dict[str, int] = {}
        self.records = 0
        self.contributions = ContributionEncoder()

    def encode(self, bs: list[Binding]) -> list[bytes]:
        rk = iv.routing_key
        enc = binding_wire.encode
        return [(rk(b.operator, b.ip).encode(), enc(b))[1] for b in bs]

    def decode(self, raws: list[bytes]) -> list[Binding]:
        dec = binding_wire.decode
        return [dec(r) for r in raws]

    def key(self, bs: list[Binding]) -> list[bytes]:
        key, slot = self.vault.key, iv.slot_of
        return [key(slot(b), b.ip) for b in bs]

    def open(self, keys: list[bytes]) -> list[iv.Intervals]:
        get, op = self.table.get, self.vault.open
        out = []
        for k in keys:
            raw = get(k)
            if raw is None:
                out.append(())
                continue
            try:
                out.append(op(k, raw)[1])
            except CryptoError:
                out.append(())
        return out

    def apply(self, olds: list[iv.Intervals], bs: list[Binding]) -> list[mapping.Change]:
        ap, hp, now, rules = mapping.apply, mapping.hold_predicate, self.now, self.rules
        out = []
        for old, b in zip(olds, bs):
            c = ap(old, b, now, rules, is_held=hp(None, b.operator, b.ip, now))
            out.append(c)
            self.outcomes[c.outcome] = self.outcomes.get(c.outcome, 0) + 1
        return out

    def seal(self, keys: list[bytes], bs: list[Binding], changes: list[mapping.Change]) -> None:
        seal, table, now, r = self.vault.seal_value, self.table, self.now, self.rules
        for k, b, c in zip(keys, bs, changes):
            if not c.write:
                continue
            if c.intervals:
                table[k] = seal(k, b.ip, c.intervals, ttl_ms=r.ttl_ms, stale_after_ms=r.stale_after_ms,
                                now_ms=now)[0]
            else:
                table.pop(k, None)

    def stats_build(self, bs: list[Binding], raws: list[bytes]) -> list:
        build, n = self.builder.build_many, self.batch
        is_json = binding_wire.is_json
        out = []
        for i in range(0, len(bs), n):
            chunk, rchunk = bs[i:i + n], raws[i:i + n]
            ids = [r if is_json(r) else b.to_json() for b, r in zip(chunk, rchunk)]
            out += build(chunk, ids)
        return out

    def stats_out(self, built: list) -> list:
        now, bucket, n = self.now, self.builder.bucket_ms, self.batch
        out = []
        for i in range(0, len(built), n):
            cells = []
            for x in built[i:i + n]:
                rec = x.record
                ts = record_timestamp_ms(rec["bucket_ms"], now, bucket)
                cells.append((x, ts))
                out.append((rec["id"].encode(), record_json(rec).encode(), ts))
            out += self.contributions.cells(cells)
        self.records += len(built)
        return out

    def worker_order(self, bs: list[Binding]) -> None:
        """Every step, batch by batch, as the stages run them (encode at ingest; the mapping
        stage per record; the stats stage per batch)."""
        n = self.batch
        for i in range(0, len(bs), n):
            raws = self.encode(bs[i:i + n])
            got = self.decode(raws)
            keys = self.key(got)
            self.seal(keys, got, self.apply(self.open(keys), got))
            self.stats_out(self.stats_build(got, raws))


def _clear_caches() -> None:
    """Address caches start cold for every repeat (every event names a new address anyway)."""
    binding_wire._NET_CACHE.clear()
    model._NET_CACHE.clear()


def measure(core: Core, bs: list[Binding], repeat: int) -> dict:
    table = core.table
    keys0 = core.key(bs)
    saved = {k: table.get(k) for k in keys0}

    def restore() -> None:
        for k, v in saved.items():
            if v is None:
                table.pop(k, None)
            else:
                table[k] = v
        core.outcomes.clear()
        core.records = 0
        _clear_caches()

    best = dict.fromkeys(STEPS, float("inf"))
    pt = time.process_time
    for _ in range(repeat):
        restore()
        t = pt()
        raws = core.encode(bs)
        t1 = pt()
        got = core.decode(raws)
        t2 = pt()
        keys = core.key(got)
        t3 = pt()
        olds = core.open(keys)
        t4 = pt()
        changes = core.apply(olds, got)
        t5 = pt()
        core.seal(keys, got, changes)
        t6 = pt()
        built = core.stats_build(got, raws)
        t7 = pt()
        core.stats_out(built)
        t8 = pt()
        for s, d in zip(STEPS, (t1 - t, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t7 - t6, t8 - t7)):
            best[s] = min(best[s], d)
        assert got == bs and keys == keys0
    outcomes, records = dict(core.outcomes), core.records
    total = float("inf")
    for _ in range(repeat):
        restore()
        t = pt()
        core.worker_order(bs)
        total = min(total, pt() - t)
    if dict(core.outcomes) != outcomes or core.records != records:
        raise AssertionError("the worker-order run did not do what the step run did")
    restore()
    n = len(bs)
    steps = {s: round(best[s] / n * 1e6, 2) for s in STEPS}
    total_us = round(total / n * 1e6, 2)
    return {"steps_us": steps, "steps_sum_us": round(sum(steps.values()), 2), "total_us": total_us,
            "target_us": TARGET_US, "met": total_us <= TARGET_US, "outcomes": outcomes, "records": records}


def setup(n_maps: int, scheme: str | None, batch: int):
    pol = load_operators(REPO / "config" / "operators")[OPERATOR]
    if scheme:
        st = dataclasses.replace(pol.statistics, address=AddressScheme.parse(scheme, where="bench"))
        pol = dataclasses.replace(pol, statistics=st)
    now = T0
    stale = pol.sessions.lost_stop_window_ms
    period = period_for(TTL_MS)
    ring = Keyring.create(OPERATOR, bytes(range(32)), purpose="lawful_access", epoch=0)
    vault = Vault(OPERATOR, Path("/nonexistent/bench_core.ratchet"), ring, now - now % period, period, 0)
    rules = mapping.rules_of(pol, ttl_ms=TTL_MS, stale_after_ms=stale)
    stats_ring = Keyring.create(OPERATOR, bytes(range(1, 33)), epoch=epoch_of(T0, pol.key_epoch_ms))
    builder = StatsBuilder(pol, stats_ring)
    t = time.monotonic()
    table = fill(vault, n_maps, now, stale)
    return Core(vault, table, rules, builder, now, batch), pol, time.monotonic() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mappings", type=int, default=1_000_000)
    ap.add_argument("--events", type=int, default=30_000)
    ap.add_argument("--batch", type=int, default=2000, help="the stats stage's batch (the worker's batch_size)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--scheme", help="statistics address scheme (default: the operator profile's)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--gc", choices=("default", "freeze"), default="default",
                    help="freeze: gc.freeze() after the fill, so the collector no longer walks the table "
                         "(what a worker could do after its restore; shows the collector's share)")
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    if a.smoke:
        a.mappings, a.events, a.repeat, a.batch = 3000, 300, 1, 100
    core, pol, fill_s = setup(a.mappings, a.scheme, a.batch)
    if a.gc == "freeze":
        gc.collect()
        gc.freeze()
    bs = events(a.events, a.mappings, core.now, random.Random(a.seed))
    fig = {"bench": "core", "smoke": a.smoke, "mappings": a.mappings, "events": a.events, "batch": a.batch,
           "repeat": a.repeat, "gc": a.gc, "operator": OPERATOR, "scheme": pol.statistics.address.kind,
           **measure(core, bs, a.repeat), "table_size": len(core.table), "fill_s": round(fill_s, 1),
           "machine": {"cores": os.cpu_count(), "load1": round(os.getloadavg()[0], 2),
                       "load5": round(os.getloadavg()[1], 2), "python": platform.python_version(),
                       "core": "compiled" if core_status().active else "interpreted"}}
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
