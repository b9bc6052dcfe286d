"""``ipanon demo`` — the whole system on an embedded local broker, checked against the truth.

Steps (each shown as progress on stderr):
1. start a fresh local Kafka broker in a temporary directory (``agents.broker``);
2. create the topics, generate demo keys (mode 0600) for the seed operators;
3. start ``ipanon worker`` as a child process;
4. generate synthetic RADIUS accounting for every seed operator (``stream.synth``: Start /
   Interim / Stop, IPv4 with delegated IPv6 prefixes, addresses re-used by other subscribers)
   plus a few malformed records, and feed them with ``ipanon produce`` — the same command an
   operator uses;
5. wait until every binding has reached the stats topic and every bad record the dead-letter
   topic;
6. ask the worker "who had address X at T" for a sample of (address, instant) pairs and
   compare with the generator's ground truth; scan the stats topic for raw identifiers;
7. print a summary (``--json``: one JSON object) and stop everything it started.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BAD_RECORDS = [
    b'{"User-Name": "broken", "Acct-Status-Type": "Start"',                          # bad-json
    b'{"User-Name": "x", "Acct-Session-Id": "1", "NAS-IP-Address": "192.0.2.1"}',   # missing status
    b'{"User-Name": "x", "Acct-Status-Type": "Start", "Acct-Session-Id": "2", "NAS-IP-Address": "192.0.2.1",'
    b' "Framed-IP-Address": "100.64.999.1", "Event-Timestamp": 1795340000}',          # bad-address
]



#: the longest the demo's synthetic records arrive after their session ended (its history span)
DEMO_INGEST_LAG_MS = 3 * 3_600_000

def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="run the whole pipeline on an embedded local broker and check it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        epilog="examples:\n  ipanon demo\n  ipanon demo --json --lookups 500",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object with the figures")
    p.add_argument("--lookups", type=int, default=200, help="lookups to check (default 200)")
    p.add_argument("--addresses", type=int, default=12, help="IPv4 addresses per operator (default 12)")
    p.add_argument("--seed", type=int, default=7, help="random seed of the synthetic traffic")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the worker (default 600)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, broker data)")
    p.set_defaults(func=run)


class _Progress:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.t0 = time.monotonic()

    def step(self, msg: str) -> None:
        if not self.quiet:
            print(f"[{time.monotonic() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from stream.synth import generate

    from ..broker import REPO_ROOT, LocalBroker
    from ..cli import CliError
    from ..kafka_io import count, count_records, read_all, wait_group_caught_up
    from ..keystore import ensure_demo_keys
    from ..lookup_client import lookup_many
    from ..runtime import apply_topics, operator_names
    from ..settings import Settings
    from ..topics import Topics

    prog = _Progress(quiet=False)
    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="ipanon-demo-"))
    broker = LocalBroker(work / "broker")
    worker = None
    ok = False
    try:
        prog.step("starting the local Kafka broker (Apache Kafka from Maven Central) …")
        bootstrap = broker.start(quiet=False).bootstrap
        prog.step(f"broker up at {bootstrap}")
        operators_dir = REPO_ROOT / "config" / "operators"
        operators = operator_names(operators_dir)
        topics = Topics("ipanon")
        keys = work / "keys"
        # the demo replays about 3 h of history at once, so its raw records arrive up to 3 h after
        # the sessions they end: the plan must budget that lag (raw topics keep data 3 h less),
        # or the worker rightly dead-letters the old Stops as too late for the promise
        settings = Settings(bootstrap=bootstrap, operators_dir=operators_dir, keys_dir=keys,
                            data_dir=work / "worker", heartbeat_ms=5000, ingest_lag_ms=DEMO_INGEST_LAG_MS)
        plan = apply_topics(settings)
        ensure_demo_keys(keys, operators)
        strictest = min(plan.retention.values(), key=lambda r: r.promise_ms)
        prog.step(f"{len(plan.topics)} topics created with retention computed from the promises "
                  f"(strictest: {strictest.operator}, TTL {strictest.ttl_ms / 3_600_000:.1f} h); "
                  f"demo keys for {len(operators)} operators: {', '.join(operators)}")

        log = open(work / "worker.log", "wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        worker = subprocess.Popen(
            [sys.executable, "-m", "agents.cli", "worker", "--bootstrap", bootstrap,
             "--operators", str(operators_dir), "--keys", str(keys), "--data-dir", str(work / "worker"),
             "--web-port", "0", "--heartbeat-ms", "5000", "--ingest-lag-ms", str(DEMO_INGEST_LAG_MS),
             "--loglevel", "warning"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT, start_new_session=True)
        prog.step(f"worker started (pid {worker.pid}, log {work / 'worker.log'})")

        from stream.config import load_operators as load_policies

        policies = load_policies(operators_dir)
        now_ms = int(time.time() * 1000)
        traffic = generate(operators, now_ms=now_ms, seed=args.seed, addresses_per_operator=args.addresses,
                           identity={n: p.identity.radius_attribute for n, p in policies.items()})
        expected_bindings = sum(len([k for k in ("Framed-IP-Address", "Delegated-IPv6-Prefix") if k in r])
                                for recs in traffic.records.values() for r in recs)
        # Junet, Hektor mobil and "003" use traffic data for statistics only with consent: grant it
        # for the demo's subscribers (through the same CLI an operator's CRM would call), or
        # their records rightly never reach the stats topic.
        needs_consent = sorted(n for n, pol in policies.items() if pol.statistics.consent_required)
        for op in needs_consent:
            # consent is given by the subscriber as the operator identifies them (Hektor mobil:
            # Calling-Station-Id, the others User-Name)
            attr = policies[op].identity.radius_attribute
            subs = sorted({r[attr] for r in traffic.records[op] if attr in r})
            rc = subprocess.run(
                [sys.executable, "-m", "agents.cli", "consent", "grant", "--operator", op, "--keys", str(keys),
                 "--bootstrap", bootstrap, "-"], input="".join(x + "\n" for x in subs),
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
            if rc.returncode != 0:
                raise CliError(f"ipanon consent grant failed: {rc.stderr.strip().splitlines()[-1:]}")
        if needs_consent:
            prog.step(f"consent granted for the demo subscribers of {', '.join(needs_consent)} "
                      f"(their profiles require it for statistics)")
        feed = work / "feed"
        feed.mkdir()
        t_feed = time.monotonic()
        for op, recs in traffic.records.items():
            f = feed / f"{op}.jsonl"
            with open(f, "wb") as out:
                for r in recs:
                    out.write(json.dumps(r).encode() + b"\n")
                if op == operators[0]:
                    out.write(b"\n".join(BAD_RECORDS) + b"\n")
            rc = subprocess.run(
                [sys.executable, "-m", "agents.cli", "produce", "--format", "radius-json",
                 "--operator", op, "--topic", topics.raw_radius, "--bootstrap", bootstrap, str(f)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
            if rc.returncode != 0:
                raise CliError(f"ipanon produce failed: {rc.stderr.strip().splitlines()[-1:]}")
        events_in = traffic.record_count + len(BAD_RECORDS)
        prog.step(f"fed {events_in} RADIUS records ({len(BAD_RECORDS)} deliberately malformed) "
                  f"for {len(traffic.records)} operators")

        deadline = time.monotonic() + args.timeout
        last = -1
        while True:
            stats_out = count(bootstrap, topics.stats)
            rejected = count_records(bootstrap, topics.deadletter)
            if stats_out != last:
                prog.step(f"worker progress: {stats_out}/{expected_bindings} stats records, {rejected} dead-lettered")
                last = stats_out
            if stats_out >= expected_bindings and rejected >= len(BAD_RECORDS):
                break
            if rejected > len(BAD_RECORDS):  # a fed record the demo meant to be good was refused: say why now
                from collections import Counter

                reasons = Counter(json.loads(r.value).get("reason") for r in read_all(bootstrap, topics.deadletter))
                raise CliError(f"the worker dead-lettered {rejected} records, only {len(BAD_RECORDS)} were meant to "
                               f"be bad: " + ", ".join(f"{n} {k}" for k, n in reasons.most_common())
                               + f"; see {work / 'worker.log'} (use --keep)")
            if worker.poll() is not None:
                raise CliError(f"worker exited with code {worker.returncode}; see {work / 'worker.log'} (use --keep)")
            if time.monotonic() > deadline:
                raise CliError(f"worker did not process everything within {args.timeout:.0f}s "
                               f"({stats_out}/{expected_bindings}); see {work / 'worker.log'} (use --keep)")
            time.sleep(0.5)
        # the statistics come from their own consumer group: wait until the mapping agent's group
        # has committed the bindings too, so the lookups below ask a table that has them all
        if not wait_group_caught_up(bootstrap, settings.app_id, topics.bindings,
                                    timeout_s=max(1.0, deadline - time.monotonic()),
                                    alive=lambda: worker.poll() is None):
            raise CliError(f"the mapping table did not take every binding within {args.timeout:.0f}s; "
                           f"see {work / 'worker.log'} (use --keep)")
        processing_s = time.monotonic() - t_feed

        rng = random.Random(args.seed)
        queries = list(traffic.queries(args.lookups, rng))
        reqs = [{"operator": q["operator"], "ip": q["ip"], "port": None,
                 "from_ms": q["at_ms"], "to_ms": q["at_ms"] + 1} for q in queries]
        prog.step(f"checking {len(reqs)} lookups against the generator's ground truth …")
        answers = lookup_many(bootstrap, topics, reqs, timeout_s=60)
        correct = 0
        wrong = []
        for q, r in zip(queries, reqs):
            a = answers.get(r["id"])
            got = None
            if a and a.get("status") == "ok" and len(a.get("holders", [])) == 1:
                got = a["holders"][0]["subscriber"]
            elif a and a.get("status") == "no-data":
                got = None
            else:
                wrong.append({"query": r, "answer": a})
                continue
            if got == q["expect"]:
                correct += 1
            else:
                wrong.append({"query": r, "answer": a, "expected": q["expect"]})

        # leak check on the analysts' topic: no subscriber id or address we fed appears raw
        stats_bytes = b"\n".join(rec.value for rec in read_all(bootstrap, topics.stats))
        needles = {t.subscriber for t in traffic.truth} | {t.v4 for t in traffic.truth}
        leaks = sum(1 for n in needles if n.encode() in stats_bytes)

        summary = {
            "events_in": events_in,
            "bindings": count_records(bootstrap, topics.bindings),
            "stats_out": stats_out,
            "rejected": rejected,
            "lookups_checked": len(reqs),
            "lookups_correct": correct,
            "lookups_answered": len(answers),
            "stats_raw_identifier_hits": leaks,
            "operators": len(traffic.records),
            "processing_s": round(processing_s, 2),
            "elapsed_s": round(time.monotonic() - t_start, 2),
        }
        ok = correct == len(reqs) and leaks == 0
        if args.json:
            print(json.dumps(summary))
        else:
            print()
            print("ipanon demo — summary")
            print(f"  operators           {summary['operators']} (config/operators)")
            print(f"  events in           {events_in}  ({len(BAD_RECORDS)} malformed → dead-letter: {rejected})")
            print(f"  bindings            {summary['bindings']}  (IPv4 + delegated IPv6 prefixes)")
            print(f"  stats records out   {stats_out}  (subscriber pseudonymised; raw-identifier hits: {leaks})")
            print(f"  lookups correct     {correct}/{len(reqs)}  (checked against the generator's truth)")
            print(f"  processing          {processing_s:.1f}s; total {summary['elapsed_s']:.1f}s")
            print(f"  result              {'OK' if ok else 'MISMATCH'}")
        for w in wrong[:5]:
            print(f"ipanon demo: lookup mismatch: {json.dumps(w)}", file=sys.stderr)
        return 0 if ok else 1
    finally:
        prog.step("stopping worker and broker …")
        if worker is not None and worker.poll() is None:
            try:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(10)
            except ProcessLookupError:
                pass
        broker.stop()
        if args.keep or not ok:
            prog.step(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
