"""On the real broker: a worker whose mapping table lives on disk restarts from its store
and still answers exactly what was fed.

1. Restart truth with the store intact: bindings stream in, the worker is SIGKILLed mid-stream
   (a backlog piles up while it is down) and restarts on its intact store.  Every answer equals
   the model of what was fed (``test_mapping_rebalance.Feed``) and equals the answers of the same
   worker restarted on an *empty* data directory, i.e. restored from the changelog alone.
2. The stale-store attack: worker A holds every partition, B joins and takes some, A is
   SIGKILLed (its store keeps what it had), B takes everything and writes over A's keys, B
   leaves and A restarts on its old store.  A's answers for every partition it regains must be
   B's writes (the model's), and nothing A writes after the restart may go back on the
   changelog (a stale store republished).
3. A damaged store: the store directory opened to group/others, an SST file truncated, SST data
   blocks corrupted, the MANIFEST gone.  Each: a clear one-line error (no traceback) or a safe
   fallback (a full restore) — never a wrong answer.  (Corrupted data blocks are a test of their
   own: the store opens and meets the damage when it reads a block; the worker deletes the store
   and exits 70, and the test restarts it once, as its supervisor would: a full restore.)
4. The time-ordered schedule on disk: a worker is SIGKILLed before its mappings expire and
   restarts after they did; the first sweep tombstones them with no rebuild pass, every answer
   checked against the checker's reference model (``tests/checker/model.py``).
5. A changelog deleted and created again while a worker is down, then refilled past its
   checkpoints by another worker: the store must not be continued on it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.e2e.test_disk_erasure import changelog_values, ciphertext_hits, disk_worker, files_under, store_dir
from tests.e2e.test_mapping_rebalance import (OPERATOR, Feed, Feeder, Producer, answers, answers_off,
                                              changelog_violations, expected_rows)
from tests.e2e.test_operations import free_port
from tests.e2e.test_scale_out import partitions, twin

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ALL = {0, 1, 2, 3}


def caught_up(bootstrap, w) -> None:
    from agents.acl import worker_groups
    from agents.kafka_io import wait_group_caught_up

    groups = worker_groups(w.settings.app_id)
    assert wait_group_caught_up(bootstrap, groups["ingest"], w.topics.raw_radius, timeout_s=180)
    assert wait_group_caught_up(bootstrap, groups["mapping"], w.topics.bindings, timeout_s=180)


def restores(log: str) -> list[str]:
    """The worker's restore lines (what each restore read), for the failure messages."""
    return [ln for ln in log.splitlines() if "mapping table: restor" in ln]


def to_read(log: str) -> list[tuple[int, int]]:
    """(records to read, keys held) of each restore the log reports."""
    return [(int(a), int(b)) for a, b in re.findall(r"up to (\d+) records to read \((\d+) keys held\)", log)]


def tracebacks(log: str) -> list[str]:
    return [m.group(0) for m in re.finditer(r"Traceback[^\n]*\n(?:[ \t][^\n]*\n)*[^\n]*", log)]


def mapping_lag(bootstrap, w) -> int:
    """Bindings not yet committed by the mapping stage's consumer group."""
    from kafka import TopicPartition

    from agents.acl import worker_groups
    from agents.kafka_clients import Clients

    g = Clients(bootstrap).consumer(client_id="ipanon-reader", group_id=worker_groups(w.settings.app_id)["mapping"])
    try:
        tps = [TopicPartition(w.topics.bindings, p) for p in (g.partitions_for_topic(w.topics.bindings) or ())]
        ends = g.end_offsets(tps)
        return sum(ends[tp] - (g.committed(tp) or 0) for tp in tps)
    finally:
        g.close()


def _burst(n: int, now_s: int) -> tuple[list[dict], dict]:
    """``n`` closed sessions on addresses of their own (100.74/16), sent at once."""
    recs, model = [], {}
    for i in range(n):
        ip = f"100.74.{i // 250}.{i % 250 + 1}"
        sub = f"burst-{i}@isp.example"
        c = {"User-Name": sub, "Acct-Session-Id": f"B{i:06d}", "NAS-IP-Address": "192.0.2.10", "Framed-IP-Address": ip}
        start = now_s - 600 + i % 300
        recs += [{**c, "Acct-Status-Type": "Start", "Event-Timestamp": start},
                 {**c, "Acct-Status-Type": "Stop", "Event-Timestamp": start + 90, "Acct-Session-Time": 90}]
        model[ip] = (sub, start * 1000, (start + 90) * 1000, (start + 90) * 1000)
    return recs, model


# -- 1. restart truth with the store intact ---------------------------------------------------------

def test_sigkill_restart_on_the_intact_store_answers_as_the_model_and_as_a_fresh_restore(
        worker_factory, bootstrap):
    from stream.config import load_operators

    port = free_port()
    w = disk_worker(worker_factory, (OPERATOR,), extra=["--web-port", str(port)]).start()
    stale_ms = load_operators(w.operators_dir)[OPERATOR].sessions.lost_stop_window_ms
    wait_for(lambda: partitions(port) == ALL, timeout_s=150, what="the worker to own every partition")
    feed = Feed(int(time.time()), seed=17)
    feeder = Feeder(bootstrap, w.topics.raw_radius, feed)
    feeder.start()
    burst, burst_model = _burst(1500, int(time.time()))
    try:
        feeder.ticks(20)
        out = Producer(bootstrap, w.topics.raw_radius)
        out.send(burst)
        out.close()
        try:  # aim the kill into the mapping stage's work on the burst (partly committed)
            wait_for(lambda: 0 < mapping_lag(bootstrap, w) < len(burst), timeout_s=30, interval_s=0.05,
                     what="the mapping stage part-way through the burst")
        except AssertionError:
            pass
        killed_at = feed.tick
        w.stop(signal.SIGKILL)  # mid-stream: the mapping stage is applying batches
        print(f"SIGKILL with {mapping_lag(bootstrap, w)} bindings not committed by the mapping stage")
        feeder.ticks(10)        # a backlog while it is down
        log_before = len(w.log())
        w.start()
        wait_for(lambda: partitions(port) == ALL, timeout_s=150, what="the worker back on its store")
        feeder.ticks(15)
    finally:
        feeder.stop_now.set()
        feeder.join(180)
    assert feeder.error is None, feeder.error
    assert feed.spanning(killed_at), "no session spans the SIGKILL"
    model = {**feed.model, **burst_model}
    caught_up(bootstrap, w)
    sdir = store_dir(w)
    off = answers_off(bootstrap, w, model, stale_ms, "after the SIGKILL restart on the intact store")
    bad = changelog_violations(bootstrap, w, model)
    intact = answers(bootstrap, w, model, stale_ms)
    after_kill = w.log()[log_before:]
    assert not off and not bad, (
        f"restarted on its intact store: {len(off)} of {len(model)} answers differ from the model, e.g. "
        f"{off[:3]}; changelog: {len(bad)} keys wrong, e.g. {bad[:3]}; restores: {restores(after_kill)}")

    # the same worker on an empty data directory: restored from the changelog alone
    w.stop()
    aside = w.dir / "data.intact"
    (w.dir / "data").rename(aside)
    mark = len(w.log())
    w.start()
    wait_for(lambda: partitions(port) == ALL, timeout_s=150, what="the worker restored on an empty disk")
    fresh_off = answers_off(bootstrap, w, model, stale_ms, "restored from the changelog on an empty disk")
    fresh = answers(bootstrap, w, model, stale_ms)
    w.stop()
    differ = {ip: (intact[ip], fresh.get(ip)) for ip in intact if intact[ip] != fresh.get(ip)}
    assert not fresh_off and not differ, (
        f"fresh restore: {len(fresh_off)} answers differ from the model, e.g. {fresh_off[:3]}; "
        f"{len(differ)} differ between the intact store and the fresh restore, e.g. {list(differ.items())[:3]}")
    assert sdir.is_relative_to(w.dir / "data"), sdir
    assert not tracebacks(w.log()), tracebacks(w.log())[:2]
    # restart without a full restore: on its store the worker held keys and read only the
    # changelog after its checkpoint; on the empty disk it read it all
    (kill_read, kill_held), (fresh_read, fresh_held) = to_read(after_kill)[0], to_read(w.log()[mark:])[0]
    assert kill_held > 0 and fresh_held == 0 and kill_read < fresh_read, (
        f"restart on the intact store: {kill_read} records to read with {kill_held} keys held; on an empty disk: "
        f"{fresh_read} with {fresh_held}: {restores(after_kill)[:1]}")


# -- 2. the stale-store attack ------------------------------------------------------------------------

def test_a_worker_back_on_its_old_store_answers_with_the_writes_made_while_it_was_gone(
        worker_factory, bootstrap, request, monkeypatch):
    from stream.config import load_operators

    # the killed worker's static membership holds its partitions this long (10 s, not 30 s)
    monkeypatch.setenv("IPANON_SESSION_TIMEOUT_MS", "10000")
    pa, pb = free_port(), free_port()
    a = disk_worker(worker_factory, (OPERATOR,), extra=["--web-port", str(pa)]).start()
    b = twin(a, pb)
    request.addfinalizer(b.stop)
    stale_ms = load_operators(a.operators_dir)[OPERATOR].sessions.lost_stop_window_ms

    def split():
        x, y = partitions(pa), partitions(pb)
        return x is not None and y is not None and x and y and not x & y and x | y == ALL

    wait_for(lambda: partitions(pa) == ALL, timeout_s=150, what="A to own every partition")
    feed = Feed(int(time.time()), seed=18)
    feeder = Feeder(bootstrap, a.topics.raw_radius, feed)
    feeder.start()
    try:
        feeder.ticks(15)
        b.start()
        wait_for(split, timeout_s=150, what="B to take some partitions")
        held_by_b = partitions(pb)
        feeder.ticks(15)
        a.stop(signal.SIGKILL)  # A's store keeps its partitions as they were
        killed = feed.tick
        wait_for(lambda: partitions(pb) == ALL, timeout_s=150, what="B to take A's partitions")
        feeder.ticks(20)        # B writes over A's keys (Interims, Stops of A's sessions)
        b.stop()
        feeder.ticks(3)
        a.start()               # back on its old store
        wait_for(lambda: partitions(pa) == ALL, timeout_s=150, what="A back with every partition")
        feeder.ticks(10)
    finally:
        feeder.stop_now.set()
        feeder.join(180)
    assert feeder.error is None, feeder.error
    assert feed.spanning(killed), "no session spans A's absence"
    caught_up(bootstrap, a)
    off = answers_off(bootstrap, a, feed.model, stale_ms, "A back on its old store")
    bad = changelog_violations(bootstrap, a, feed.model)
    assert not off and not bad, (
        f"A back on its old store (B had held {sorted(held_by_b)}, then everything): {len(off)} of "
        f"{len(feed.model)} answers differ from the model, e.g. {off[:3]}; changelog: {len(bad)} keys wrong, "
        f"e.g. {bad[:4]}; A's restores: {restores(a.log())[-4:]}")
    assert not tracebacks(a.log()), tracebacks(a.log())[:2]


# -- 3. a damaged store -------------------------------------------------------------------------------

def _fed_sessions(n: int, now_s: int, tag: str, net: str = "100.72") -> tuple[list[dict], dict]:
    recs, model = [], {}
    for i in range(n):
        ip = f"{net}.{i // 200}.{i % 200 + 1}"
        sub = f"dmg-{tag}-{i}@isp.example"
        c = {"User-Name": sub, "Acct-Session-Id": f"D{tag}{i}", "NAS-IP-Address": "192.0.2.10", "Framed-IP-Address": ip}
        start = now_s - 200 + i % 50
        recs += [{**c, "Acct-Status-Type": "Start", "Event-Timestamp": start},
                 {**c, "Acct-Status-Type": "Stop", "Event-Timestamp": start + 60, "Acct-Session-Time": 60}]
        model[ip] = (sub, start * 1000, (start + 60) * 1000, (start + 60) * 1000)
    return recs, model


def _corrupt_blocks(sdir: Path) -> None:
    for p in sdir.glob("*.sst"):  # every data block damaged; the footer left as it was
        b = bytearray(p.read_bytes())
        for i in range(64, max(65, len(b) - 4096), 97):
            b[i] ^= 0xA5
        p.write_bytes(bytes(b))


def _corrupt_largest(sdir: Path) -> None:
    """Only the largest SST (a partition's data; the checkpoints' column family is the smallest):
    the checkpoints read at open are intact, the damage is met by a lookup or a write."""
    big = max(sdir.glob("*.sst"), key=lambda p: p.stat().st_size)
    b = bytearray(big.read_bytes())
    for i in range(64, max(65, len(b) - 4096), 97):
        b[i] ^= 0xA5
    big.write_bytes(bytes(b))


def _truncate_sst(sdir: Path) -> None:
    big = max(sdir.glob("*.sst"), key=lambda p: p.stat().st_size)
    os.truncate(big, big.stat().st_size // 2)


def _no_manifest(sdir: Path) -> None:
    for m in sdir.glob("MANIFEST-*"):
        m.unlink()


def _wal_garbage(sdir: Path) -> None:
    for p in sdir.glob("*.log"):
        with open(p, "ab") as f:
            f.write(os.urandom(4096))


def test_a_damaged_store_gives_a_clear_error_or_a_full_restore_never_a_wrong_answer(
        worker_factory, bootstrap, tmp_path):
    """Each damage to a copy of the same good store; each restart must end in one clear line and
    a non-zero exit, or in a worker whose every answer is the model's and which applies new
    bindings (a binding that reads a damaged value must not be dead-lettered as an internal
    error: it would be lost)."""
    _damaged_stores(worker_factory, bootstrap, tmp_path, [
        ("store directory mode 0755", lambda d: os.chmod(d, 0o755)),
        ("the largest SST file truncated to half", _truncate_sst),
        ("MANIFEST removed", _no_manifest),
        ("garbage appended to the WAL", _wal_garbage)])


def test_sst_data_blocks_corrupted_give_a_clear_error_or_a_full_restore_never_a_wrong_answer(
        worker_factory, bootstrap, tmp_path):
    """As above, with the SST files' data blocks damaged (sizes and footers intact): RocksDB opens
    the store and finds the damage only when it reads a block (a lookup, a binding, the sweeper,
    the compliance walk).  That read must neither answer nor dead-letter: the worker deletes the
    store and exits 70 with one CRITICAL line (``agents.table_disk.store_failed``); restarted once
    (its supervisor's job), it restores every partition from the changelog and answers right."""
    _damaged_stores(worker_factory, bootstrap, tmp_path, [("SST data blocks corrupted", _corrupt_blocks),
                                                          ("the largest SST's data blocks corrupted", _corrupt_largest)])


def _damaged_stores(worker_factory, bootstrap, tmp_path, cases: list) -> None:
    import shutil

    from agents.kafka_io import read_all
    from agents.lookup_client import lookup_many
    from tests.e2e.test_erasure import produce

    port = free_port()
    w = disk_worker(worker_factory, (OPERATOR,), extra=["--web-port", str(port)]).start()
    wait_for(lambda: partitions(port) == ALL, timeout_s=150, what="the worker to own every partition")
    tag = uuid.uuid4().hex[:6]
    recs, model = _fed_sessions(300, int(time.time()), tag)
    produce(bootstrap, w.topics.raw_radius, "radius-json", recs, tmp_path, OPERATOR)
    caught_up(bootstrap, w)
    off = answers_off(bootstrap, w, model, 0, "before any damage")
    assert not off, off[:3]
    w.stop()
    sdir = store_dir(w)
    # every column family's memtable into SST files, as the worker's erasure tick does from time
    # to time: the mappings are then in SSTs, whose blocks the cases damage, not only in the WAL
    # (else "the largest SST" may be the checkpoints', met at open: not the read path's case)
    from agents.disk_store import DiskStore

    with DiskStore(sdir, bound=w.settings.disk_bound()) as st:
        st.flush()
    pristine = tmp_path / "pristine-store"
    shutil.copytree(sdir, pristine, symlinks=True)
    outcomes: dict[str, str] = {}
    failures: dict[str, str] = {}
    round_ = [0]

    def running_on_damaged(what: str) -> list[str]:
        # (each address asked up to its session's end: the new sessions below start later)
        wrong = answers_off(bootstrap, w, model, 0, what, timeout_s=60, to_end=True)
        if wrong:
            return [f"{len(wrong)} of {len(model)} answers not the model's, e.g. {wrong[:2]}"]
        # new bindings on the damaged partitions: a new session on each of 40 stored addresses
        round_[0] += 1
        now_s = int(time.time())
        again = [{"User-Name": f"dmg-{tag}-r{round_[0]}-{i}@isp.example", "Acct-Session-Id": f"R{tag}{round_[0]}{i}",
                  "NAS-IP-Address": "192.0.2.10", "Framed-IP-Address": ip, "Acct-Status-Type": "Start",
                  "Event-Timestamp": now_s - 5} for i, ip in enumerate(sorted(model)[:40])]
        n_dead = len(read_all(bootstrap, w.topics.deadletter, timeout_s=10))
        produce(bootstrap, w.topics.raw_radius, "radius-json", again, tmp_path, OPERATOR)
        from agents.acl import worker_groups
        from agents.kafka_io import wait_group_caught_up

        assert wait_group_caught_up(bootstrap, worker_groups(w.settings.app_id)["mapping"], w.topics.bindings,
                                    timeout_s=60), "the mapping stage did not catch up with 40 new bindings in 60 s"
        dead = read_all(bootstrap, w.topics.deadletter, timeout_s=10)[n_dead:]
        if dead:
            reasons = sorted({json.loads(r.value).get("reason") for r in dead})
            return [f"{len(dead)} of {len(again)} new bindings dead-lettered ({reasons}): lost"]
        at = (now_s - 5) * 1000
        qs = [{"operator": OPERATOR, "ip": r["Framed-IP-Address"], "from_ms": at, "to_ms": at + 1} for r in again]
        got = lookup_many(bootstrap, w.topics, qs, key=w.lookup_key, timeout_s=60)
        not_applied = [q["ip"] for q, r in zip(qs, again) if [h["subscriber"] for h in
                       (got.get(q["id"]) or {}).get("holders") or ()] != [r["User-Name"]]]
        return [f"{len(not_applied)} of {len(again)} new bindings not answered"] if not_applied else []

    def damaged(what: str, damage) -> None:
        shutil.rmtree(sdir)
        shutil.copytree(pristine, sdir, symlinks=True)
        os.chmod(sdir, 0o700)
        damage()
        mark = len(w.log())
        w.start()
        restarted: dict = {}  # the supervisor's restart: what the worker said, where its log resumed

        def settled():
            if w.proc.poll() is not None:
                return "exited"
            return "running" if partitions(port) == ALL else None

        def supervisor_restarts(run_problems: list[str]) -> bool:
            """A read met a damaged block (``MappingTable.store_failed``): the worker deleted its
            store and exited 70 after one CRITICAL line, before answering or dead-lettering
            anything from the damage.  Its supervisor (systemd, Kubernetes) starts it again once,
            as here: it must restore every partition from the changelog and then pass every
            check.  Tolerated before the restart: only answers or bindings not applied (the worker
            was gone), never a wrong answer or a dead letter."""
            if restarted or w.proc.poll() != 70:
                return False
            crit = [ln for ln in w.log()[mark:].splitlines()
                    if "[CRITICAL] mapping table: the disk store" in ln and "is damaged" in ln]
            if len(crit) != 1 or sdir.exists() or any("wrong holder" in p or "dead-lettered" in p for p in run_problems):
                return False
            restarted.update(line=f"exit 70 at a read: {crit[0].split('] ', 3)[-1][:160]}; restarted", at=len(w.log()))
            w.start()
            return True

        while True:
            try:
                state = wait_for(settled, timeout_s=180, what=f"{what}: the worker to exit or to own every partition")
            except AssertionError as e:
                failures[what] = str(e)
                w.stop()
                return
            problems = []
            if state == "exited":
                if supervisor_restarts([]):
                    continue
                log = w.log()[mark:]
                lines = [ln for ln in log.splitlines() if ln.startswith("ipanon: ")]
                if w.proc.returncode == 0:
                    problems.append("exited with 0 on a damaged store")
                if not lines:
                    problems.append(f"exited {w.proc.returncode} without an `ipanon: …` line: {log[-800:]!r}")
                outcomes[what] = f"exit {w.proc.returncode}: {lines[-1] if lines else '?'}"
            else:
                run: list[str] = []
                try:
                    run += running_on_damaged(what)
                except AssertionError as e:  # a wait that timed out: the worker is stuck on it (or gone)
                    run.append(f"stuck: {str(e)[:300]}")
                if run and supervisor_restarts(run):
                    continue
                problems += run
                log = w.log()[mark:]
                outcomes[what] = f"ran; restores: {restores(log)[-1:]}"
                w.stop()
            break
        if restarted:
            outcomes[what] = f"{restarted['line']}; {outcomes[what]}"
            after = to_read(w.log()[restarted["at"]:])
            if not after or after[0][1] != 0:
                problems.append(f"restarted after the exit at a read, not a full restore: {restores(w.log()[mark:])}")
        tb = tracebacks(w.log()[mark:])
        if tb:
            problems.append(f"{len(tb)} tracebacks in the log, e.g. {tb[0][-600:]!r}")
        if problems:
            failures[what] = "; ".join(problems)

    for what, damage in cases:
        damaged(what, lambda: damage(sdir))
    print(json.dumps(outcomes, indent=1))
    assert not failures, f"damaged stores: {json.dumps(failures, indent=1)}\noutcomes: {json.dumps(outcomes, indent=1)}"


# -- 4. the schedule on disk: expiry due during the downtime -----------------------------------------

def test_keys_due_while_the_worker_was_down_expire_at_its_first_sweep_without_a_rebuild(
        worker_factory, broker, bootstrap, tmp_path):
    from agents.kafka_io import read_all
    from agents.mapping_table import SCHEDULE_BUCKET_MS
    from agents.vault import Vault
    from stream.model import parse_network
    from tests.checker import history as H
    from tests.checker import model as M
    from tests.checker.driver import Checker, Params
    from tests.e2e.test_erasure import INGEST_LAG_MS, fast_profile

    reports: list[str] = []
    ck = Checker(Params(seed=17, detail=5, wait_s=180.0), broker, tmp_path / "ck", reports.append)
    op = f"due{uuid.uuid4().hex[:6]}"
    w = disk_worker(worker_factory, ((op, fast_profile(op)),), ingest_lag_ms=INGEST_LAG_MS).start()
    rules = ck._rules(w, [op])
    bound = ck._bound_ms(w)
    assert ck.ready(w), "the worker never answered"
    t0 = time.time_ns() // 1_000_000 // 1000 * 1000
    due_addrs = [f"100.73.1.{i + 1}" for i in range(8)]
    kept_addrs = [f"100.73.2.{i + 1}" for i in range(4)]
    recs = []
    for i, addr in enumerate(due_addrs + kept_addrs):
        base = {"User-Name": f"due-{op}-{i}@isp.example", "Acct-Session-Id": f"DUE{i:04d}",
                "NAS-IP-Address": "192.0.2.241", "Framed-IP-Address": addr}
        steps = [(t0 - 20_000, "Start")] + ([(t0 - 1000 - 500 * i, "Stop")] if addr in due_addrs else [])
        for at, st in steps:
            a = {**base, "Acct-Status-Type": st, "Event-Timestamp": at // 1000}
            if st == "Stop":
                a["Acct-Session-Time"] = (at - (t0 - 20_000)) // 1000
            recs.append(H.Raw(200_000_000 + len(recs), "radius", "radius-json", "nas-due", op,
                              json.dumps(a).encode(), note=f"{st.lower()} {addr}"))
    h = H.History(17, t0, recs, {op: H.Pools(radius_v4=due_addrs + kept_addrs)}, (t0 - 60_000, t0))
    ck.send(w, recs)
    model = M.Model(M.apply_history(recs, rules, ck.sent_at, 0), rules, bound)
    assert not model.a.too_late, "records too late when sent"
    assert ck.caught_up(w, [w]), "the worker did not catch up"
    sealed = changelog_values(bootstrap, w)  # every version written so far, for the disk scan
    probe = lambda addrs: [{"operator": op, "ip": a, "port": None, "from_ms": t0 - 10_000, "to_ms": t0 - 9_999}  # noqa: E731
                           for a in addrs]
    ck.check_lookups(w, h, model, probe(due_addrs + kept_addrs), "before the kill")
    assert ck.res["mismatches"] == 0, reports

    ttl, stale = rules[op].ttl_ms, rules[op].stale_after_ms
    due_at = {x.holder: M.iv.expiry_ms(x, ttl_ms=ttl, stale_after_ms=stale)
              for k, ivs in model.a.keys.items() for x in ivs if k[2] in due_addrs}
    first, last = min(due_at.values()), max(due_at.values())
    assert time.time() * 1000 < first, "the setup took longer than the TTL: nothing would fall due while down"
    w.stop(signal.SIGKILL)
    mark = len(w.log())
    time.sleep(max(0.0, (last + SCHEDULE_BUCKET_MS - time.time() * 1000) / 1000) + 1)
    w.start()
    assert ck.ready(w), "the worker never answered after the restart"

    v = Vault.open_or_create(op, w.keys, ttl_ms=ttl, grace_ms=0, now_ms=int(time.time() * 1000), destroy=False)
    due_keys = {v.key("ip", parse_network(a)) for a in due_addrs}
    kept_keys = {v.key("ip", parse_network(a)) for a in kept_addrs}

    def tombstoned():
        recs_ = read_all(bootstrap, f"{w.settings.app_id}-mappings-changelog", timeout_s=10)
        last_of = {}
        for r in recs_:
            last_of[r.key] = r.value
        return {k for k in due_keys if k in last_of and last_of[k] is None}, {k for k in kept_keys if last_of.get(k) is None}
    wait_for(lambda: tombstoned()[0] == due_keys, timeout_s=60 + bound / 1000,
             what="tombstones of every key due while the worker was down")
    seen_ms = time.time() * 1000
    gone, kept_gone = tombstoned()
    assert not kept_gone, f"{len(kept_gone)} keys not due were tombstoned"
    ck.check_lookups(w, h, model, probe(due_addrs), "after the restart, due while down", expired=True)
    ck.check_lookups(w, h, model, probe(kept_addrs), "after the restart, not due")
    assert ck.res["mismatches"] == 0, "\n".join(reports)
    log = w.log()[mark:]
    rebuilt = [ln for ln in log.splitlines() if "schedule rebuilt" in ln or "rebuilding the schedule" in ln]
    assert not rebuilt, f"the restart rebuilt the schedule: {rebuilt}"
    assert not tracebacks(log), tracebacks(log)[:2]

    # and the store forgets them within B_disk of the sweeper's delete (before the tombstones
    # were seen), although they were written before the restart
    time.sleep(max(0.0, (seen_ms + w.settings.disk_bound().bound_ms - time.time() * 1000) / 1000) + 1)
    files = files_under(w.dir / "data")
    left = ciphertext_hits(files, {k: sealed[k] for k in due_keys})
    ids_left = [k for k in due_keys if any(k[-14:] in b for b in files.values())]
    now_sealed = changelog_values(bootstrap, w)  # the open sessions were re-sealed since
    kept_here = ciphertext_hits(files, {k: sealed[k] + now_sealed.get(k, []) for k in kept_keys})
    w.stop()
    assert not left and not ids_left and set(kept_here) == kept_keys, (
        f"B_disk after the first sweep: {len(left)} of {len(due_keys)} expired keys' sealed values still in "
        f"{sorted({f for fs in left.values() for f in fs})}, {len(ids_left)} key ids still on disk; "
        f"{len(kept_here)} of {len(kept_keys)} kept keys' values found (the scan sees the store)")


# -- 5. a store whose changelog was deleted and created again ---------------------------------------

def _end_offsets(bootstrap, topic: str) -> dict[int, int]:
    from kafka import TopicPartition

    from agents.kafka_clients import Clients

    c = Clients(bootstrap).consumer(client_id="ipanon-reader")
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        return {tp.partition: o for tp, o in c.end_offsets(tps).items()}
    finally:
        c.close()


def test_a_store_is_not_continued_on_a_changelog_created_again_and_refilled(
        worker_factory, bootstrap, tmp_path, request, monkeypatch):
    """The deployment's table is reset while worker A is down (its changelog deleted and
    created again, empty); worker B of the same deployment, on an empty disk, fills the new
    changelog past A's checkpoints.  A, back on its old store, must answer what the changelog
    holds — B's sessions, none of the reset ones — as a worker restored on an empty disk would:
    a checkpoint is an offset of *one* topic, and on another topic of the same name it points
    into records the store never saw."""
    from kafka import KafkaAdminClient

    from agents.runtime import apply_topics
    from tests.e2e.test_erasure import produce

    monkeypatch.setenv("IPANON_SESSION_TIMEOUT_MS", "10000")
    pa, pb = free_port(), free_port()
    a = disk_worker(worker_factory, (OPERATOR,), extra=["--web-port", str(pa)]).start()
    b = twin(a, pb)
    request.addfinalizer(b.stop)
    wait_for(lambda: partitions(pa) == ALL, timeout_s=150, what="A to own every partition")
    now_s = int(time.time())
    recs1, reset = _fed_sessions(200, now_s, "r1")
    produce(bootstrap, a.topics.raw_radius, "radius-json", recs1, tmp_path, OPERATOR)
    caught_up(bootstrap, a)
    assert not answers_off(bootstrap, a, reset, 0, "A before the reset")
    a.stop()
    changelog = f"{a.settings.app_id}-mappings-changelog"
    ends1 = _end_offsets(bootstrap, changelog)

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics([changelog])
        wait_for(lambda: changelog not in admin.list_topics(), timeout_s=60, what="the changelog deleted")
    finally:
        admin.close()
    wait_for(lambda: _try_apply(apply_topics, a.settings), timeout_s=60, what="the changelog created again")

    b.start()
    wait_for(lambda: partitions(pb) == ALL, timeout_s=150, what="B to own every partition")
    recs2, fresh_model = _fed_sessions(600, now_s, "r2", net="100.76")
    produce(bootstrap, a.topics.raw_radius, "radius-json", recs2, tmp_path, OPERATOR)
    caught_up(bootstrap, b)
    assert not answers_off(bootstrap, b, fresh_model, 0, "B on the new changelog")
    b.stop()
    ends2 = _end_offsets(bootstrap, changelog)
    assert all(ends2[p] > ends1[p] for p in ends1), (ends1, ends2)  # past any checkpoint A can have

    mark = len(a.log())
    a.start()
    wait_for(lambda: partitions(pa) == ALL, timeout_s=150, what="A back on its old store")
    off = answers_off(bootstrap, a, fresh_model, 0, "A back: the new changelog's sessions", timeout_s=60)
    stale = {ip: rows for ip, rows in answers(bootstrap, a, reset, 0).items() if rows[0][0] != "status"}
    log = a.log()[mark:]
    a.stop()
    assert not off and not stale, (
        f"A back on its store after its changelog was created again: {len(off)} of {len(fresh_model)} of the "
        f"new changelog's sessions wrong, e.g. {off[:2]}; {len(stale)} of {len(reset)} reset sessions still "
        f"answered, e.g. {list(stale.items())[:2]}; restores: {restores(log)[:2]}; changelog end offsets "
        f"before the reset {ends1}, after {ends2}")


def _try_apply(apply_topics, settings) -> bool:
    try:
        apply_topics(settings)
        return True
    except Exception:  # the deletion is still settling on the broker
        return False
