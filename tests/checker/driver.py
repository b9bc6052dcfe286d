"""The checker's driver: a generated history through real ``ipanon worker`` processes on a real
broker, with restarts of every kind, every answer compared with the reference model.

``run(params, broker, workdir)`` returns one dict of figures (the benchmark prints it as its
JSON line; the short test asserts on it).  Mismatch reports (seed, the history of every table
key the answer depends on, both answers) go to ``report``.

Phases:
1. main: the seed operators' profiles; the history is sent in chunks; in the middle of a chunk
   (the worker busy) one fault is injected: SIGTERM restart, SIGKILL restart, a second worker
   joining or leaving the group, or a broker restart.  After each chunk the driver waits until
   ingest and the mapping agent have committed everything sent, then asks lookups and compares.
   At the end: the statistics topic and the dead-letter topic against the history.
2. expiry: a profile with a 60 s promise in a deployment of its own (its promise sets the
   retention of every topic of its deployment); sessions ending now; lookups before expiry, a
   SIGTERM restart, then lookups after expiry + the sweeper's bound must find nothing.
"""

from __future__ import annotations

import json
import random
import re
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from stream.config import load_operators
from stream.model import ip_text

from . import history as H
from . import model as M

KINDS = ("sigterm", "sigkill", "twin", "broker")
#: a record is ingested at most this long after it was sent (lateness verdicts are checked
#: for both instants; a record whose verdict differs is counted as ``boundary_records``)
SLACK_MS = 10 * 60_000
#: the main deployment's ingest lag: records may arrive this long after their mapping ended
#: (the generated histories span 5 h before the run starts, and a long run lasts up to an hour)
MAIN_INGEST_LAG_MS = 8 * 3_600_000


@dataclass
class Params:
    seed: int = 1
    events: int = 1500
    restarts: int = 4
    lookups: int = 200
    kinds: tuple = KINDS
    operators: tuple = ("connect2ip", "framsteget")
    expiry_sessions: int = 12
    expiry_phase: bool = True
    wait_s: float = 300.0
    detail: int = 5               # mismatches reported in full
    restart_probe: int = 60       # extra lookups right after each fault, just after interval ends


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def ask(bootstrap: str, topics, queries: list[dict], timeout_s: float, key: bytes) -> tuple[dict, int, int]:
    """The one call of the worker's lookup path: {id: answer}, send and receive instants.
    (When the lookup path changes, only this function changes.)"""
    from agents.lookup_client import lookup_many

    sent = now_ms()
    got = lookup_many(bootstrap, topics, queries, key=key, timeout_s=timeout_s)
    return got, sent, now_ms()


class Checker:
    def __init__(self, params: Params, broker, workdir: Path, report: Callable[[str], None]) -> None:
        self.p = params
        self.broker = broker
        self.dir = Path(workdir)
        self.report = report
        self.rng = random.Random(params.seed * 7919 + 1)
        self.res = {"seed": params.seed, "histories": 0, "events": 0, "lookups": 0, "mismatches": 0,
                    "restarts": 0, "restart_kinds": {}, "unanswered": 0, "stats_missing": 0,
                    "stats_extra": 0, "stats_duplicates": 0, "dlq_missing": 0, "dlq_wrong_reason": 0,
                    "dlq_unexpected": 0, "expiry_checked": 0, "expiry_violations": 0,
                    "end_unknown_answers": 0, "mismatch_kinds": {}, "seconds": 0.0}
        self.detailed = 0
        self.sent_at: dict = {}   # Raw seq -> when it was sent
        self.coords: dict = {}    # (topic, partition, offset) -> Raw seq
        self.parsed: dict = {}    # Raw seq -> bindings (the model's parse, done once)

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def _count(self, key: str, what: str, n: int = 1) -> None:
        self.res[key] = self.res.get(key, 0) + n
        mk = self.res["mismatch_kinds"]
        if key != "mismatches":
            return
        mk[what] = mk.get(what, 0) + n

    def mismatch(self, what: str, text: str) -> None:
        self._count("mismatches", what)
        if self.detailed < self.p.detail:
            self.detailed += 1
            self.report(f"MISMATCH ({what}) seed={self.p.seed}\n{text}")

    def _worker(self, name: str, operators: list, ingest_lag_ms: int):
        from tests.conftest import WorkerProcess

        prefix = f"ck{self.p.seed}{name}{uuid.uuid4().hex[:6]}"
        return WorkerProcess(self.bootstrap, self.dir / name, prefix, operators, [], heartbeat_ms=1000,
                             ingest_lag_ms=ingest_lag_ms)

    def _rules(self, w, ops: list) -> dict:
        pols = load_operators(w.operators_dir)
        ttl_over = w.settings.ttl_ms_override
        out = {}
        for op in ops:
            ttl = w.plan.retention[op].ttl_ms
            if ttl_over is not None:
                ttl = min(ttl, ttl_over)
            out[op] = M.OperatorRules(op, pols[op], ttl, M.stale_after_ms(pols[op]),
                                      promise_ms=pols[op].lawful_access.promise_ms,
                                      bindings_bound_ms=_budget(w.plan, w.topics.bindings))
        return out

    def _bound_ms(self, w) -> int:
        from agents.mapping_table import SCHEDULE_BUCKET_MS

        return int(w.settings.sweep_interval_s * 1000) + SCHEDULE_BUCKET_MS

    def send(self, w, records: list) -> None:
        from agents import topics as T
        from agents.kafka_io import producer

        # retries ride out a leader election after a broker restart; one request in flight
        # (kafka_io.producer) keeps each source's order through them
        p = producer(self.bootstrap, retries=200, retry_backoff_ms=300)
        futs = []
        try:
            at = now_ms()
            for r in records:
                futs.append((r, p.send(w.topics.raw_by_family[r.family], key=r.source.encode(), value=r.value,
                                       headers=[(T.H_FORMAT, r.fmt.encode()), (T.H_OPERATOR, r.operator.encode()),
                                                (T.H_SOURCE, r.source.encode())])))
                self.sent_at[r.seq] = at
            p.flush(timeout=120)
            for r, f in futs:
                md = f.get(timeout=60)
                self.coords[(md.topic, md.partition, md.offset)] = r.seq
        finally:
            p.close()
        self.res["events"] += len(records)

    def caught_up(self, w, workers: list, stats: bool = False) -> bool:
        from agents.acl import worker_groups
        from agents.kafka_io import wait_group_caught_up

        groups = worker_groups(w.settings.app_id)
        alive = lambda: any(x.proc is not None and x.proc.poll() is None for x in workers)  # noqa: E731
        deadline = time.monotonic() + self.p.wait_s
        for t in w.topics.raw:
            if not wait_group_caught_up(self.bootstrap, groups["ingest"], t, alive=alive,
                                        timeout_s=max(1.0, deadline - time.monotonic())):
                return False
        if not wait_group_caught_up(self.bootstrap, groups["mapping"], w.topics.bindings, alive=alive,
                                    timeout_s=max(1.0, deadline - time.monotonic())):
            return False
        if stats:
            # statistics are made at ingest and sent in its batch, acknowledged before the batch's
            # raw offsets are committed: the ingest group caught up above means they are out.
            # The stats group is only an upgrade drain's (agents.stats_drain): a deployment that
            # began on this release never commits there, and nothing it waits on lives there.
            committed = _committed(self.bootstrap, groups["stats"], w.topics.bindings)
            if any(off is not None for off in committed.values()):
                self.mismatch("stats-group", f"the stats group committed {committed} on a fresh deployment "
                              f"(an upgrade drain ran where there was nothing to drain)\n{_tail(w)}")
        return True

    # -- faults -----------------------------------------------------------------------------

    def fault(self, kind: str, w, state: dict, while_down: Callable[[], None] = lambda: None) -> str:
        """Inject one fault; ``while_down`` runs while the worker (or broker) is down: records
        sent then wait as a backlog, which the restarted worker takes in large batches."""
        if kind == "sigterm":
            w.stop(signal.SIGTERM)
            while_down()
            w.start()
        elif kind == "sigkill":
            w.stop(signal.SIGKILL)
            while_down()
            w.start()
        elif kind == "twin":
            if state.get("twin") is None:
                state["twin"] = w.twin(2).start()
                kind = "twin-join"
            else:
                state.pop("twin").stop(signal.SIGTERM)
                kind = "twin-leave"
        elif kind == "broker":
            # an outage of a running worker (one that starts during the outage exits with a
            # traceback: reported, not what this fault is about)
            self.ready(w)
            self.broker.stop()
            time.sleep(1.0)
            self.broker.start(quiet=True)
            self.leaders(w)
            while_down()  # (the broker must be up to take them; the worker is reconnecting)
        else:
            raise ValueError(kind)
        self.res["restarts"] += 1
        rk = self.res["restart_kinds"]
        rk[kind] = rk.get(kind, 0) + 1
        return kind

    def ready(self, w) -> bool:
        """Wait until the worker answers a lookup (it has started and recovered)."""
        probe = {"operator": sorted(w.plan.retention)[0], "ip": "100.127.255.255", "port": None,
                 "from_ms": 0, "to_ms": 1}
        got, _, _ = ask(self.bootstrap, w.topics, [probe], timeout_s=self.p.wait_s, key=w.lookup_key)
        return bool(got)

    def leaders(self, w, timeout_s: float = 120.0) -> None:
        """Wait until every partition of the worker's topics has a leader again."""
        from kafka import KafkaConsumer

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                c = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None)
                try:
                    names = [*w.topics.raw, w.topics.bindings, w.topics.lookup_requests, w.topics.lookup_responses]
                    ok = True
                    for n in names:
                        parts = c.partitions_for_topic(n) or set()
                        ok = ok and bool(parts) and all(
                            (c._client.cluster.leader_for_partition(_tp(n, q)) or -1) >= 0 for q in parts)
                finally:
                    c.close()
                if ok:
                    return
            except Exception:  # the broker is still coming up
                pass
            time.sleep(0.5)

    # -- lookups ----------------------------------------------------------------------------

    def queries(self, h: H.History, ops: list, n: int, model: Optional[M.Model] = None,
                edge_share: float = 0.35) -> list[dict]:
        """Lookups at random instants: over the generated span, and (with ``model``) near the
        ends of the model's intervals, where a stale or a missing end shows."""
        rng = self.rng
        hi = h.span[1]
        lo = h.t0_ms - (H.shape_for(self.p.events, len(ops)).span_ms + H.HOUR)
        ends = []
        if model is not None:
            ends = [(k, x) for k, ivs in model.a.keys.items() for x in ivs if x.end_ms is not None]
        out = []
        for _ in range(n):
            op = rng.choice(ops)
            P = h.pools[op]
            if ends and rng.random() < edge_share:
                (kop, slot, net), x = rng.choice(ends)
                t = x.end_ms + (rng.randint(0, 15 * H.MIN) if rng.random() < 0.8 else -rng.randint(1, 60_000))
                port = None
                if slot == "nat":
                    port = rng.randint(x.port_first, x.port_last) if x.port_first is not None else None
                ip = net.split("/")[0]
                if "/" in net:  # a delegated prefix: an address inside it
                    import ipaddress

                    pn = ipaddress.ip_network(net)
                    ip = str(pn.network_address + rng.randrange(pn.num_addresses))
                out.append({"operator": kop, "ip": ip, "port": port, "from_ms": t,
                            "to_ms": t + (1 if rng.random() < 0.8 else rng.randint(H.MIN, H.HOUR))})
                continue
            kind = rng.choices(("v4", "v4span", "v6", "dhcp", "natport", "natnoport", "unused", "toolate", "stale"),
                               (30, 10, 10, 12, 16, 5, 3, 3, 6))[0]
            t = rng.randint(lo, hi)
            to = t + 1 if rng.random() < 0.8 else t + rng.randint(1, 3 * H.HOUR)
            q = {"operator": op, "port": None, "from_ms": t, "to_ms": to}
            if kind in ("v4", "v4span"):
                q["ip"] = rng.choice(P.radius_v4)
                if kind == "v4span":
                    q["to_ms"] = t + rng.randint(H.MIN, 6 * H.HOUR)
            elif kind == "v6" and P.radius_v6:
                import ipaddress

                net = ipaddress.ip_network(rng.choice(P.radius_v6))
                q["ip"] = str(net.network_address + rng.randrange(net.num_addresses))
            elif kind == "dhcp" and P.dhcp_v4:
                q["ip"] = rng.choice(P.dhcp_v4)
            elif kind in ("natport", "natnoport") and P.nat:
                public, blocks = rng.choice(P.nat)
                q["ip"] = public
                if kind == "natport":
                    lo_p, hi_p = rng.choice(blocks)
                    q["port"] = rng.randint(lo_p, hi_p)
            elif kind == "stale" and P.lost_old:
                # around the end of the lost-Stop window of a session a day old
                q["ip"] = rng.choice(P.lost_old)
                q["from_ms"] = h.t0_ms - rng.randint(95 * H.MIN, 150 * H.MIN)
                q["to_ms"] = q["from_ms"] + (1 if rng.random() < 0.7 else rng.randint(H.MIN, H.HOUR))
            elif kind == "toolate" and P.too_late:
                q["ip"] = rng.choice(P.too_late)
                q["from_ms"], q["to_ms"] = h.t0_ms - 1000 * H.DAY, h.t0_ms
            else:
                q["ip"] = rng.choice(P.unused or P.radius_v4)
            out.append(q)
        return out

    def check_lookups(self, w, h: H.History, model: M.Model, queries: list[dict], when: str,
                      expired: bool = False) -> None:
        """Ask ``queries`` and compare each answer with the model.  ``expired``: every mapping
        asked about is past its expiry instant + the sweeper's bound, so the model must answer
        "no data" and a worker answer naming a holder is an expiry violation."""
        if not queries:
            return
        qs = [dict(q) for q in queries]
        got, sent, recv = ask(self.bootstrap, w.topics, qs, timeout_s=self.p.wait_s, key=w.lookup_key)
        self.res["lookups"] += len(qs)
        for q in qs:
            ans = got.get(q["id"])
            exp = model.expect(q, sent, recv)
            if ans is None:
                self.res["unanswered"] += 1
                self.mismatch("unanswered", f"{when}: no answer to {_q(q)}")
                continue
            if ans.get("status") == M.END_UNKNOWN or ans.get("end_unknown"):
                self.res["end_unknown_answers"] += 1
            if expired and exp.answers != [("no-data", None, (), ())]:
                self.mismatch("expiry-model", f"{when}: the model still holds {_q(q)} at {sent}: {exp.answers}")
            elif expired and not model.accepts(exp, ans):
                self.res["expiry_violations"] += 1
                self.mismatch("expiry", f"{when}: answerable after its expiry instant + {model.bound_ms} ms: "
                              f"{_q(q)}\n  worker: {json.dumps(ans)}\n" + self.key_histories(h, model, exp.keys))
            elif not model.accepts(exp, ans):
                self.mismatch(f"lookup:{_kind(exp, ans)}", f"{when}: {_q(q)}\n  worker: {json.dumps(ans)}\n"
                              f"  model:  {exp.answers}{' (past the lost-Stop window)' if exp.past_window else ''}\n"
                              + self.key_histories(h, model, exp.keys))

    def key_histories(self, h: H.History, model: M.Model, keys: list) -> str:
        out = []
        by_seq = {r.seq: r for r in h.records}
        for k in dict.fromkeys(keys):
            out.append(f"  history of {k[0]}|{k[1]}|{k[2]} (send order):")
            for s in model.a.log.get(k, ()):
                r = by_seq.get(s)
                for b in model.a.bindings.get(s, ()):
                    if b.action != "reset" and (b.ip is None or ip_text(b.ip) != k[2]):
                        continue
                    who = b.subscriber or (str(b.inside_ip) if b.inside_ip else "")
                    out.append(f"    #{s:<6} {b.action:<6} at={b.at_ms} {who} session={b.session} "
                               f"st={b.session_time_s} until={b.until_ms} ports={b.port_first}-{b.port_last}"
                               f"  [{r.note if r else ''}]")
            out.append(f"  model intervals: {[_iv(x) for x in model.a.keys.get(k, ())]}")
        return "\n".join(out)

    # -- the phases -----------------------------------------------------------------------------

    def main_phase(self) -> None:
        p = self.p
        ops = list(p.operators)
        w = self._worker("main", ops, MAIN_INGEST_LAG_MS)
        shape = H.shape_for(p.events, len(ops))
        h = H.generate(p.seed, now_ms(), ops, shape)
        rules = self._rules(w, ops)
        bound = self._bound_ms(w)
        state: dict = {}
        workers = [w]
        w.start()
        try:
            kinds = [p.kinds[i % len(p.kinds)] for i in range(p.restarts)]
            self.rng.shuffle(kinds)
            if "twin" in kinds and kinds.count("twin") % 2:  # every join is followed by a leave
                kinds.append("twin")
            rounds = len(kinds) + 1
            recs = h.records
            per_round = max(1, (p.lookups - p.restart_probe * (len(kinds) + 3)) // (2 * rounds + 1))
            sent = 0

            def settle_and_ask(when: str, n: int, probe: int = 0) -> None:
                if not self.caught_up(w, workers):
                    self.mismatch("stalled", f"{when}: the worker did not catch up within {p.wait_s:.0f} s"
                                  f"\n{_tail(w)}")
                    return
                # the model knows the whole history; it answers from the records sent so far
                sent_h = H.History(h.seed, h.t0_ms, recs[:sent], h.pools, h.span)
                part = self.model(sent_h.records, rules, bound)
                qs = self.queries(h, ops, n, part)
                if probe:  # right after a restart: just after the ends the restored table must know
                    qs += self.queries(h, ops, probe, part, edge_share=1.0)
                self.check_lookups(w, sent_h, part, qs, when)

            for i in range(rounds):
                chunk = recs[i * len(recs) // rounds:(i + 1) * len(recs) // rounds]
                if i < len(kinds):
                    cut = self.rng.randint(len(chunk) // 4, len(chunk) // 2)
                    down = self.rng.randint(cut, 3 * len(chunk) // 4)
                    self.send(w, chunk[:cut])

                    def backlog(part=chunk[cut:down]) -> None:
                        self.send(w, part)

                    # while the worker is busy with the chunk
                    kind = self.fault(kinds[i], w, state, backlog)
                    if kind in ("twin-join", "twin-leave"):
                        backlog()
                    sent += down
                    if state.get("twin") is not None and state["twin"] not in workers:
                        workers.append(state["twin"])
                    settle_and_ask(f"right after {kind} #{self.res['restarts']} (round {i})", per_round,
                                   probe=p.restart_probe)
                    self.send(w, chunk[down:])
                    sent += len(chunk) - down
                    settle_and_ask(f"round {i}, after {kind}", per_round)
                else:
                    self.send(w, chunk)
                    sent += len(chunk)
                    settle_and_ask(f"final round {i}", per_round)
            # a last restart: the whole history read back from the changelog
            kind = self.fault("sigterm", w, state)
            settle_and_ask(f"right after the final {kind}", per_round, probe=3 * p.restart_probe)
            if state.get("twin") is not None:
                state.pop("twin").stop(signal.SIGTERM)
            if not self.caught_up(w, [w], stats=True):
                self.mismatch("stalled", f"end: the worker did not catch up\n{_tail(w)}")
            model = self.model(h.records, rules, bound)
            self.res["histories"] += len(model.a.keys)
            self.res["too_late_records"] = len(model.a.too_late) + sum(r.kind == "too-late" for r in recs)
            self.res["boundary_records"] = len(model.a.boundary)
            wrong = [r.seq for r in recs if r.kind == "too-late" and r.seq not in model.a.too_late]
            if wrong:
                self.mismatch("generator", f"records meant to be too late are not by the rule: {wrong[:10]}")
            self.check_lookups(w, h, model, self.queries(h, ops, per_round), "end")
            self.check_outputs(w, h, model, rules)
        finally:
            for x in workers:
                x.stop(signal.SIGTERM)

    def model(self, records: list, rules: dict, bound: int) -> M.Model:
        return M.Model(M.apply_history(records, rules, self.sent_at, SLACK_MS, self.parsed), rules, bound)

    def check_outputs(self, w, h: H.History, model: M.Model, rules: dict) -> None:
        """Statistics: one record per accepted binding (ids from the operator's key), none for
        anything else.  Dead letters: every bad and too-late record, with its reason; nothing
        else."""
        from agents.kafka_io import read_all
        from agents.stats_agent import record_ids
        from stream.keyring import epoch_of

        by_op: dict = {}
        for r in h.records:
            if r.kind == "good":
                by_op.setdefault(r.operator, []).extend(
                    b for b in model.a.bindings[r.seq] if b.action != "reset" and b.ip is not None)
        required, allowed = set(), set()
        horizon = now_ms() - w.settings.ingest_lag_ms
        for op, bs in by_op.items():
            pol = rules[op].policy
            ids = record_ids(w.seeds[op], pol, bs)
            assert len(ids) == len(bs), "record_ids left bindings out"
            live = epoch_of(horizon, pol.key_epoch_ms)
            for b, i in zip(bs, ids):
                allowed.add(i)
                if epoch_of(b.at_ms, pol.key_epoch_ms) >= live:  # older epochs may be destroyed
                    required.add(i)
        got: dict = {}
        for rec in read_all(self.bootstrap, w.topics.stats, timeout_s=30):
            try:
                i = json.loads(rec.value)["id"]
            except (ValueError, KeyError, TypeError):
                i = f"unreadable:{rec.value[:40]!r}"
            got[i] = got.get(i, 0) + 1
        missing, extra = required - got.keys(), got.keys() - allowed
        self.res["stats_missing"] = len(missing)
        self.res["stats_extra"] = len(extra)
        self.res["stats_duplicates"] = sum(n - 1 for n in got.values())
        if missing:
            self.mismatch("stats-missing", f"{len(missing)} accepted bindings have no statistics record "
                          f"({len(got)} ids on the topic, {len(required)} required)")
        if extra:
            self.mismatch("stats-extra", f"{len(extra)} statistics records for no accepted binding "
                          f"(too-late or bad records let through?)")

        dlq: dict = {}
        for rec in read_all(self.bootstrap, w.topics.deadletter, timeout_s=30):
            try:
                d = json.loads(rec.value)
                where = (d["topic"], int(d["partition"]), int(d["offset"]))
            except (ValueError, KeyError, TypeError):
                self.mismatch("dlq-unreadable", f"dead letter without its record's coordinates: {rec.value[:200]!r}")
                continue
            dlq.setdefault(where, set()).add(d.get("reason"))
        expect = {}
        for r in h.records:
            if r.kind == "bad":
                expect[r.seq] = model.a.rejected.get(r.seq)
            elif r.kind == "too-late" or r.seq in model.a.too_late:
                expect[r.seq] = "too-late"
        seq_where = {s: c for c, s in self.coords.items()}
        by_seq = {r.seq: r for r in h.records}
        for s, want in expect.items():
            r = by_seq[s]
            reasons = dlq.get(seq_where.get(s))
            if not reasons:
                self.res["dlq_missing"] += 1
                self.mismatch(f"dlq-missing:{r.kind}", f"#{r.seq} ({r.note}, expected reason {want}) is not in "
                              f"the dead-letter topic: {r.value[:160]!r}")
            elif want is not None and reasons != {want}:
                self.res["dlq_wrong_reason"] += 1
                self.mismatch("dlq-reason", f"#{r.seq} ({r.note}) dead-lettered as {sorted(reasons)}, "
                              f"expected {want}")
        for where, reasons in dlq.items():
            s = self.coords.get(where)
            if s is None or s not in expect:
                self.res["dlq_unexpected"] += 1
                r = by_seq.get(s)
                self.mismatch("dlq-unexpected", f"dead letter {sorted(reasons)} at {where} for a record that "
                              f"must be accepted: {(r.note, r.value[:200]) if r else 'not a record the checker sent'}")

    def expiry_phase(self) -> None:
        """No mapping answerable after its expiry instant + the sweeper's bound."""
        from tests.conftest import REPO

        p = self.p
        op = f"fast{p.seed % 10000}"
        text = (REPO / "config" / "operators" / "connect2ip.toml").read_text()
        text = re.sub(r'^name = ".*"$', f'name = "{op}"', text, flags=re.M)
        text = re.sub(r'^promise = ".*"$', 'promise = "60s"', text, count=1, flags=re.M)
        w = self._worker("expiry", [(op, text)], 15_000)
        rules = self._rules(w, [op])
        bound = self._bound_ms(w)
        w.start()
        try:
            # the sessions end just before they are sent: wait until the worker answers first
            probe = {"operator": op, "ip": "100.110.255.255", "port": None, "from_ms": 0, "to_ms": 1}
            got, _, _ = ask(self.bootstrap, w.topics, [probe], timeout_s=p.wait_s, key=w.lookup_key)
            if not got:
                self.mismatch("stalled", f"expiry phase: the worker never answered\n{_tail(w)}")
                return
            t0 = now_ms() // 1000 * 1000
            recs = []
            addrs = [f"100.110.{p.seed % 250}.{i + 1}" for i in range(p.expiry_sessions)]
            for i, addr in enumerate(addrs):
                start, end = t0 - 20_000 - 1000 * i, t0 - 1000 - 1000 * (i % 3)
                base = {"User-Name": f"exp-{p.seed}-{i}@isp.example", "Acct-Session-Id": f"EXP{i:04d}",
                        "NAS-IP-Address": "192.0.2.240", "Framed-IP-Address": addr}
                for at, st in ((start, "Start"), (end, "Stop")):
                    a = {**base, "Acct-Status-Type": st, "Event-Timestamp": at // 1000}
                    if st == "Stop":
                        a["Acct-Session-Time"] = (end - start) // 1000
                    recs.append(H.Raw(100_000_000 + len(recs), "radius", "radius-json", "nas-expiry", op,
                                      json.dumps(a).encode(), note=f"{st.lower()} {i}"))
            h = H.History(p.seed, t0, recs, {op: H.Pools(radius_v4=addrs)}, (t0 - 60_000, t0))
            self.send(w, recs)
            model = M.Model(M.apply_history(recs, rules, self.sent_at, 0), rules, bound)
            self.res["histories"] += len(model.a.keys)
            if model.a.too_late:
                self.mismatch("generator", f"expiry phase: {len(model.a.too_late)} records too late when sent")
            if not self.caught_up(w, [w]):
                self.mismatch("stalled", f"expiry phase: the worker did not catch up\n{_tail(w)}")
                return
            qs = [{"operator": op, "ip": a, "port": None, "from_ms": t0 - 10_000, "to_ms": t0 - 9_999}
                  for a in addrs]
            self.check_lookups(w, h, model, qs, "expiry phase, before expiry")
            self.fault("sigterm", w, {})
            last = max(M.iv.expiry_ms(x, ttl_ms=rules[op].ttl_ms, stale_after_ms=rules[op].stale_after_ms)
                       for ivs in model.a.keys.values() for x in ivs)
            time.sleep(max(0.0, (last + bound - now_ms()) / 1000) + 0.5)
            self.res["expiry_checked"] += len(qs)
            self.check_lookups(w, h, model, qs, "expiry phase, after expiry", expired=True)
        finally:
            w.stop(signal.SIGTERM)

    def run(self) -> dict:
        t = time.monotonic()
        self.main_phase()
        if self.p.expiry_phase:
            self.expiry_phase()
        self.res["seconds"] = round(time.monotonic() - t, 1)
        return self.res


def _committed(bootstrap: str, group: str, topic: str) -> dict:
    """partition → what ``group`` committed on ``topic`` (None: nothing); never joins."""
    from kafka import KafkaConsumer

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: c.committed(_tp(topic, p)) for p in sorted(c.partitions_for_topic(topic) or ())}
    finally:
        c.close()


def _tp(topic: str, partition: int):
    from kafka import TopicPartition

    return TopicPartition(topic, partition)


def _budget(plan, name: str) -> Optional[int]:
    """The deletion bound the plan allows topic ``name`` (what the lateness rule counts)."""
    for t in plan.topics:
        if t.name == name:
            b = getattr(t, "budget_ms", None)
            return b if b is not None else t.bound_ms
    return None


def _q(q: dict) -> str:
    port = f":{q['port']}" if q.get("port") is not None else ""
    return f"{q['operator']} {q['ip']}{port} [{q['from_ms']}, {q['to_ms']})"


def _iv(x) -> str:
    return f"[{x.start_ms}, {x.end_ms}) {x.holder} last={x.last_ms} until={x.until_ms} nas={x.nas}"


def _kind(exp: M.Expected, ans: dict) -> str:
    want = {a[0] for a in exp.answers}
    return f"{'/'.join(sorted(want))}->{ans.get('status')}"


def _tail(w, n: int = 15) -> str:
    try:
        return "\n".join(w.log().splitlines()[-n:])
    except OSError:
        return ""


def run(params: Params, broker, workdir: Path, report: Callable[[str], None] = print) -> dict:
    return Checker(params, broker, workdir, report).run()
