"""``ipanon demo`` — the whole system on an embedded local broker, checked against the truth.

Steps (each shown as progress on stderr):
1. start a fresh local Kafka broker in a temporary directory (``agents.broker``);
2. create the topics, generate demo keys (mode 0600) for the seed operators;
3. start ``ipanon worker`` as a child process, and a second, short-TTL worker (its own topic
   prefix ``ipanon-expiry``, table TTL of seconds) to show a mapping being forgotten;
4. generate synthetic traffic for every seed operator (``stream.synth``): RADIUS accounting
   (Start / Interim / Stop, IPv4 with delegated IPv6 prefixes, addresses re-used by other
   subscribers), Kea DHCP leases, and A10 CGNAT port blocks whose inside addresses are RADIUS-
   or DHCP-held, plus a few malformed records; feed them with ``ipanon produce`` — the same
   command an operator uses;
5. wait until every binding has reached the bindings and stats topics and every bad record the
   dead-letter topic; show a few pseudonymised statistics and k-anonymous aggregate records;
6. ask as an authority would, through the guarded query desk: signed LEK requests by
   se-police-demo for (address, instant) pairs and for CGNAT public address + port at an
   instant, and an IPRED request by rights-demo approved by two staff members (alice-demo,
   bob-demo) through ``ipanon query submit|approve|fetch``; open every sealed answer with the
   authority's key and compare with the generator's ground truth;
7. on the short-TTL worker: a session found by a lawful request, then — once its TTL has
   passed — the same request answered "no data": not retained;
8. verify the audit chain (``ipanon audit verify``, anchored); scan the stats topic for raw
   identifiers;
9. print a summary (``--json``: one JSON object) and stop everything it started (``--keep``:
   leave the worker and broker running and print what to try next).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import socket
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
#: the short-TTL worker's table TTL: long enough to see the mapping first, short enough to wait out
DEMO_TTL_MS = 15_000
EXPIRY_PREFIX = "ipanon-expiry"
POLICE, RIGHTS, STAFF = "se-police-demo", "rights-demo", ("alice-demo", "bob-demo")
DHCP_ADDRESSES = 4
BLOCKS_PER_OPERATOR = 3
NAT_LOOKUPS = 10


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="run the whole pipeline on an embedded local broker and check it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        epilog="examples:\n  ipanon demo\n  ipanon demo --json --lookups 80\n  ipanon demo --keep",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object with the figures")
    p.add_argument("--lookups", type=int, default=60,
                   help="address lookups to check, each a signed request within the demo authority's "
                        "rate limit (default 60)")
    p.add_argument("--addresses", type=int, default=12, help="IPv4 addresses per operator (default 12)")
    p.add_argument("--seed", type=int, default=7, help="random seed of the synthetic traffic")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the worker (default 600)")
    p.add_argument("--keep", action="store_true",
                   help="leave the worker and broker running (and the temporary directory) and print "
                        "the status page and commands to try")
    p.set_defaults(func=run)


class _Progress:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.t0 = time.monotonic()

    def step(self, msg: str) -> None:
        if not self.quiet:
            print(f"[{time.monotonic() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run one ``ipanon`` command in this process (the same code path as the shell; no
    interpreter start-up per call), its output captured."""
    import contextlib
    import io

    from ..cli import main

    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    try:
        if stdin is not None:
            sys.stdin = io.StringIO(stdin)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(list(args))
    finally:
        sys.stdin = old_stdin
    return subprocess.CompletedProcess(list(args), rc, out.getvalue(), err.getvalue())


def _cli_ok(*args: str, stdin: str | None = None) -> str:
    from ..cli import CliError

    rc = _cli(*args, stdin=stdin)
    if rc.returncode != 0:
        raise CliError(f"ipanon {' '.join(args[:2])} failed: {rc.stderr.strip().splitlines()[-1:]}")
    return rc.stdout


def _start_worker(work: Path, name: str, bootstrap: str, operators_dir: Path, keys: Path, extra: list[str]):
    from ..broker import REPO_ROOT

    # every record is fed at once, none comes later: an hour's aggregate bucket may close a
    # minute after its end instead of after the 3 h ingest lag (its default grace)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "IPANON_AGGREGATES_GRACE_MS": "60000"}
    log = open(work / f"{name}.log", "wb")
    return subprocess.Popen(
        [sys.executable, "-m", "agents.cli", "worker", "--bootstrap", bootstrap,
         "--operators", str(operators_dir), "--keys", str(keys), "--data-dir", str(work / name),
         "--heartbeat-ms", "5000", "--ingest-lag-ms", str(DEMO_INGEST_LAG_MS), "--loglevel", "warning", *extra],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT,
        start_new_session=True)


def _stop(proc) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:
        pass


class _Desk:
    """An authority's side of the guarded path, in process: sign requests, send them to the
    inbox, collect the replies and open the sealed answers with the authority's key."""

    def __init__(self, bootstrap: str, prefix: str, keydir: Path) -> None:
        from ..topics import Topics

        self.bootstrap, self.topics, self.keydir = bootstrap, Topics(prefix), keydir
        self.seen: dict[str, dict] = {}

    def ask(self, authority: str, basis: str, items: list[dict]) -> list[str]:
        """``items``: {"ip", "port", "from_ms", "to_ms"}; returns the request ids, in order."""
        from stream import access

        from ..kafka_io import producer
        from .keys import load_private

        sk = load_private(self.keydir / f"{authority}.sign.pem", "ed25519")
        prod = producer(self.bootstrap)
        ids = []
        try:
            for it in items:
                number = f"demo-{secrets.token_hex(6)}"
                body = access.request_body(authority=authority, request_number=number, basis=basis,
                                           case_ref=f"DEMO-{number[5:]}", address=it["ip"], port=it.get("port"),
                                           from_ms=it["from_ms"], to_ms=it["to_ms"],
                                           issued_ms=int(time.time() * 1000), nonce=secrets.token_hex(16))
                prod.send(self.topics.query_requests, key=authority.encode(), value=access.sign_request(sk, body))
                ids.append(f"{authority}/{number}")
            prod.flush(60)
        finally:
            prod.close()
        return ids

    def results(self, authority: str, ids: list[str], *, timeout_s: float) -> dict[str, dict]:
        """request id → the opened answer's ``result``, or {"refused": reason} (missing: no reply in time)."""
        from stream.access import open_answer

        from ..kafka_io import read_all
        from .keys import load_private

        ek = load_private(self.keydir / f"{authority}.enc.pem", "x25519")
        want = set(ids)
        out: dict[str, dict] = {}
        deadline = time.monotonic() + timeout_s
        while True:
            for r in read_all(self.bootstrap, self.topics.query_responses):
                m = json.loads(r.value)
                rid = m.get("request_id")
                if rid not in want or rid in out:
                    continue
                if m.get("type") == "answer":
                    out[rid] = open_answer(ek, m)["result"]
                elif m.get("status") in ("refused", "expired"):
                    out[rid] = {"refused": m.get("reason") or m.get("status")}
            if len(out) == len(want) or time.monotonic() > deadline:
                return out
            time.sleep(0.5)


def _subscribers(result: dict) -> list[str] | None:
    """The subscribers an opened answer names (``None`` for an answer that is neither a match nor no data)."""
    if result.get("no_data"):
        return []
    if set(result) == {"matches"}:
        return sorted({m["subscriber"] for m in result["matches"]})
    return None


def _await_replies(bootstrap: str, topic: str, rid: str, done, *, timeout_s: float) -> list[dict]:
    """The replies to ``rid`` once ``done(replies)`` holds (or what there is at the timeout)."""
    from ..kafka_io import read_all

    deadline = time.monotonic() + timeout_s
    while True:
        ms = [m for m in (json.loads(r.value) for r in read_all(bootstrap, topic)) if m.get("request_id") == rid]
        if done(ms) or time.monotonic() > deadline:
            return ms
        time.sleep(0.5)


def _wait_desk(bootstrap: str, prefix: str, deadline: float, alive) -> None:
    from ..cli import CliError
    from ..kafka_io import count
    from ..topics import Topics

    # a brand-new consumer group reads only what arrives after it is positioned: send once the
    # desk has written its first snapshot
    while count(bootstrap, Topics(prefix).query_state) < 1:
        if not alive():
            raise CliError(f"a worker exited before its query desk was live (prefix {prefix})")
        if time.monotonic() > deadline:
            raise CliError(f"the query desk (prefix {prefix}) did not start in time")
        time.sleep(0.5)


def run(args: argparse.Namespace) -> int:
    from stream.access import Registry
    from stream.config import load_operators as load_policies
    from stream.synth import generate

    from ..broker import REPO_ROOT, LocalBroker
    from ..cli import CliError
    from ..kafka_io import count, count_records, read_all, wait_group_caught_up
    from ..keystore import ensure_demo_keys
    from ..runtime import apply_topics, operator_names
    from ..settings import Settings
    from ..topics import Topics

    burst = Registry.load(REPO_ROOT / "config" / "authorities").authorities[POLICE].burst
    if not 1 <= args.lookups <= burst - NAT_LOOKUPS:
        raise CliError(f"--lookups {args.lookups}: every lookup is a signed request and {POLICE} may send "
                       f"{burst} at once; use 1 to {burst - NAT_LOOKUPS}")
    prog = _Progress(quiet=False)
    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="ipanon-demo-"))
    broker = LocalBroker(work / "broker")
    worker = expiry_worker = None
    ok = kept = False
    try:
        prog.step("starting the local Kafka broker (Apache Kafka from Maven Central) …")
        bootstrap = broker.start(quiet=False).bootstrap
        prog.step(f"broker up at {bootstrap}")
        operators_dir = REPO_ROOT / "config" / "operators"
        operators = operator_names(operators_dir)
        topics = Topics("ipanon")
        keys, expiry_keys = work / "keys", work / "keys-expiry"
        # the demo replays about 3 h of history at once, so its raw records arrive up to 3 h after
        # the sessions they end: the plan must budget that lag (raw topics keep data 3 h less),
        # or the worker rightly dead-letters the old Stops as too late for the promise
        settings = Settings(bootstrap=bootstrap, operators_dir=operators_dir, keys_dir=keys,
                            data_dir=work / "worker", heartbeat_ms=5000, ingest_lag_ms=DEMO_INGEST_LAG_MS)
        plan = apply_topics(settings)
        apply_topics(Settings(bootstrap=bootstrap, operators_dir=operators_dir, keys_dir=expiry_keys,
                              data_dir=work / "worker-expiry", heartbeat_ms=5000, ingest_lag_ms=DEMO_INGEST_LAG_MS,
                              app_id=EXPIRY_PREFIX, topic_prefix=EXPIRY_PREFIX, ttl_ms_override=DEMO_TTL_MS))
        ensure_demo_keys(keys, operators)
        ensure_demo_keys(expiry_keys, operators)
        # the authorities' and staff's demo keys, copied with mode 0600 (a clone may leave them 0644)
        authority_keys = work / "authority-keys"
        authority_keys.mkdir(mode=0o700)
        for f in (REPO_ROOT / "config" / "keys" / "demo").glob("*.pem"):
            shutil.copyfile(f, authority_keys / f.name)
            os.chmod(authority_keys / f.name, 0o600)
        strictest = min(plan.retention.values(), key=lambda r: r.promise_ms)
        prog.step(f"{len(plan.topics)} topics created with retention computed from the promises "
                  f"(strictest: {strictest.operator}, TTL {strictest.ttl_ms / 3_600_000:.1f} h); "
                  f"demo keys for {len(operators)} operators: {', '.join(operators)}")

        web_port = _free_port()
        worker = _start_worker(work, "worker", bootstrap, operators_dir, keys, ["--web-port", str(web_port)])
        expiry_worker = _start_worker(work, "worker-expiry", bootstrap, operators_dir, expiry_keys,
                                      ["--web-port", "0", "--app-id", EXPIRY_PREFIX, "--topic-prefix", EXPIRY_PREFIX,
                                       "--ttl-ms", str(DEMO_TTL_MS)])
        prog.step(f"worker started (pid {worker.pid}, log {work / 'worker.log'}); a second worker with a "
                  f"{DEMO_TTL_MS // 1000} s table TTL on prefix {EXPIRY_PREFIX} (pid {expiry_worker.pid})")

        policies = load_policies(operators_dir)
        now_ms = int(time.time() * 1000)
        traffic = generate(operators, now_ms=now_ms, seed=args.seed, addresses_per_operator=args.addresses,
                           identity={n: p.identity.radius_attribute for n, p in policies.items()},
                           dhcp_addresses=DHCP_ADDRESSES, blocks_per_operator=BLOCKS_PER_OPERATOR)
        radius_bindings = sum(len([k for k in ("Framed-IP-Address", "Delegated-IPv6-Prefix") if k in r])
                              for recs in traffic.records.values() for r in recs)
        expected_bindings = radius_bindings + traffic.dhcp_count + traffic.nat_count
        # Junet, Hektor mobil and "003" use traffic data for statistics only with consent: grant it
        # for the demo's subscribers (through the same CLI an operator's CRM would call), or
        # their records rightly never reach the stats topic.
        needs_consent = sorted(n for n, pol in policies.items() if pol.statistics.consent_required)
        for op in needs_consent:
            # consent is given by the subscriber as the operator identifies them (Hektor mobil:
            # Calling-Station-Id, the others User-Name; DHCP clients by hwaddr)
            attr = policies[op].identity.radius_attribute
            subs = sorted({r[attr] for r in traffic.records[op] if attr in r}
                          | {t.subscriber for t in traffic.leases if t.operator == op})
            _cli_ok("consent", "grant", "--operator", op, "--keys", str(keys), "--bootstrap", bootstrap, "-",
                    stdin="".join(x + "\n" for x in subs))
        if needs_consent:
            prog.step(f"consent granted for the demo subscribers of {', '.join(needs_consent)} "
                      f"(their profiles require it for statistics)")
        feed = work / "feed"
        feed.mkdir()
        t_feed = time.monotonic()
        for op in traffic.records:
            f = feed / f"{op}.jsonl"
            with open(f, "wb") as out:
                for r in traffic.records[op]:
                    out.write(json.dumps(r).encode() + b"\n")
                if op == operators[0]:
                    out.write(b"\n".join(BAD_RECORDS) + b"\n")
            _cli_ok("produce", "--format", "radius-json", "--operator", op, "--topic", topics.raw_radius,
                    "--bootstrap", bootstrap, str(f))
            (feed / f"{op}-kea-leases4.csv").write_text("\n".join(traffic.dhcp[op]) + "\n")
            _cli_ok("produce", "--format", "kea-csv", "--operator", op, "--topic", topics.raw_dhcp,
                    "--bootstrap", bootstrap, str(feed / f"{op}-kea-leases4.csv"))
            if traffic.nat.get(op):
                (feed / f"{op}-cgnat.log").write_text("\n".join(traffic.nat[op]) + "\n")
                _cli_ok("produce", "--format", "a10", "--operator", op, "--topic", topics.raw_nat,
                        "--bootstrap", bootstrap, str(feed / f"{op}-cgnat.log"))
        events_in = traffic.record_count + traffic.dhcp_count + traffic.nat_count + len(BAD_RECORDS)
        prog.step(f"fed {traffic.record_count} RADIUS records ({len(BAD_RECORDS)} more deliberately malformed), "
                  f"{traffic.dhcp_count} Kea DHCP lease rows and {traffic.nat_count} A10 CGNAT port-block lines "
                  f"for {len(traffic.records)} operators")

        deadline = time.monotonic() + args.timeout
        last = None
        while True:
            stats_out = count(bootstrap, topics.stats)
            bindings = count_records(bootstrap, topics.bindings)
            rejected = count_records(bootstrap, topics.deadletter)
            if (stats_out, bindings) != last:
                prog.step(f"worker progress: {bindings}/{expected_bindings} bindings, {stats_out} stats records, "
                          f"{rejected} dead-lettered")
                last = (stats_out, bindings)
            if bindings >= expected_bindings and stats_out >= radius_bindings and rejected >= len(BAD_RECORDS):
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
                               f"({bindings}/{expected_bindings} bindings); see {work / 'worker.log'} (use --keep)")
            time.sleep(0.5)
        # the statistics come from their own consumer group: wait until the mapping stage's group
        # has committed the bindings too, so the lookups below ask a table that has them all
        if not wait_group_caught_up(bootstrap, f"{settings.app_id}-mapping", topics.bindings,
                                    timeout_s=max(1.0, deadline - time.monotonic()),
                                    alive=lambda: worker.poll() is None):
            raise CliError(f"the mapping table did not take every binding within {args.timeout:.0f}s; "
                           f"see {work / 'worker.log'} (use --keep)")
        processing_s = time.monotonic() - t_feed
        stats_out = count(bootstrap, topics.stats)

        # -- expiry, part 1: a session on the short-TTL worker, found while it is retained -------
        _wait_desk(bootstrap, EXPIRY_PREFIX, deadline, lambda: expiry_worker.poll() is None)
        exp_op, exp_ip, exp_sub = operators[0], "100.64.250.1", "demo-expiring@isp.example"
        exp_now = int(time.time())
        exp_attr = policies[exp_op].identity.radius_attribute
        exp_recs = [{"User-Name": exp_sub, "Calling-Station-Id": exp_sub, "Acct-Status-Type": st,
                     "Acct-Session-Id": "EXPIRY-1", "NAS-IP-Address": "192.0.2.9", "Framed-IP-Address": exp_ip,
                     "Event-Timestamp": ts} for st, ts in (("Start", exp_now - 30), ("Stop", exp_now - 1))]
        exp_expect = exp_recs[0][exp_attr]
        (feed / "expiry.jsonl").write_text("".join(json.dumps(r) + "\n" for r in exp_recs))
        _cli_ok("produce", "--format", "radius-json", "--operator", exp_op, "--topic", Topics(EXPIRY_PREFIX).raw_radius,
                "--bootstrap", bootstrap, str(feed / "expiry.jsonl"))
        exp_q = {"ip": exp_ip, "port": None, "from_ms": (exp_now - 30) * 1000, "to_ms": (exp_now - 1) * 1000}
        exp_desk = _Desk(bootstrap, EXPIRY_PREFIX, authority_keys)
        exp_stop_ms = (exp_now - 1) * 1000
        exp_before = None
        # ask until found, while the TTL still leaves time to see it
        while exp_before is None and time.time() * 1000 < exp_stop_ms + DEMO_TTL_MS - 3000:
            [erid] = exp_desk.ask(POLICE, "lek-law-enforcement", [exp_q])
            res = exp_desk.results(POLICE, [erid], timeout_s=10).get(erid, {})
            if _subscribers(res) == [exp_expect]:
                exp_before = res
        prog.step(f"short-TTL worker: {exp_ip} ({exp_op}) session found by a lawful request: "
                  f"{'yes' if exp_before else 'NO'}; its TTL ends "
                  f"{max(0.0, (exp_stop_ms + DEMO_TTL_MS) / 1000 - time.time()):.0f} s from now")

        # -- lawful lookups through the guarded desk (LEK: no approval needed) -------------------
        _wait_desk(bootstrap, "ipanon", deadline, lambda: worker.poll() is None)
        desk = _Desk(bootstrap, "ipanon", authority_keys)
        rng = random.Random(args.seed)
        queries = list(traffic.queries(args.lookups, rng))
        nat_queries = list(traffic.nat_queries(NAT_LOOKUPS, rng))
        prog.step(f"{POLICE} sends {len(queries)} signed requests for an address at an instant and "
                  f"{len(nat_queries)} for a CGNAT public address + port at an instant …")
        ids = desk.ask(POLICE, "lek-law-enforcement",
                       [{"ip": q["ip"], "port": q.get("port"), "from_ms": q["at_ms"], "to_ms": q["at_ms"] + 1}
                        for q in (*queries, *nat_queries)])
        answers = desk.results(POLICE, ids, timeout_s=120)
        wrong: list[dict] = []

        def check(q: dict, rid: str) -> bool:
            res = answers.get(rid)
            got = _subscribers(res) if res is not None else None
            if got == ([q["expect"]] if q["expect"] is not None else []):
                return True
            wrong.append({"request": rid, "query": q, "result": res})
            return False

        correct = sum(check(q, rid) for q, rid in zip(queries, ids))
        nat_correct = sum(check(q, rid) for q, rid in zip(nat_queries, ids[len(queries):]))
        prog.step(f"answers opened with {POLICE}'s key: {correct}/{len(queries)} address lookups and "
                  f"{nat_correct}/{len(nat_queries)} CGNAT public:port lookups match the generator's truth")

        # -- IPRED: a rights holder's court order, two staff approvals, the CLI as people use it --
        ipred = nat_queries[0]
        number = f"demo-ipred-{secrets.token_hex(4)}"
        rid = f"{RIGHTS}/{number}"
        kafka = ["--bootstrap", bootstrap, "--prefix", "ipanon"]
        _cli_ok("query", "submit", "--authority", RIGHTS, "--key", str(authority_keys / f"{RIGHTS}.sign.pem"),
                "--basis", "ipred-court-order", "--case", "PMÖ 4711-26", "--address", ipred["ip"],
                "--port", str(ipred["port"]), "--from", str(ipred["at_ms"]), "--to", str(ipred["at_ms"] + 1),
                "--number", number, *kafka)
        _cli_ok("query", "status", rid, "--wait", "30", *kafka)
        _cli_ok("query", "approve", rid, "--staff", STAFF[0], "--key", str(authority_keys / f"{STAFF[0]}.sign.pem"),
                *kafka)
        # four eyes: one approval leaves the request pending, with no answer
        one_approval = _await_replies(bootstrap, topics.query_responses, rid,
                                      lambda ms: any(m.get("approvals") == 1 for m in ms), timeout_s=30)
        pending_after_one = (any(m.get("status") == "pending" and m.get("approvals") == 1 for m in one_approval)
                             and not any(m.get("type") == "answer" for m in one_approval))
        prog.step(f"IPRED request {rid} by {RIGHTS}: after {STAFF[0]}'s approval "
                  f"{'still pending (1 of 2), no answer' if pending_after_one else 'NOT pending as it should be'}")
        _cli_ok("query", "approve", rid, "--staff", STAFF[1], "--key", str(authority_keys / f"{STAFF[1]}.sign.pem"),
                *kafka)
        fetched = _cli("query", "fetch", rid, "--key", str(authority_keys / f"{RIGHTS}.enc.pem"), "--wait", "60",
                       *kafka)
        ipred_res = json.loads(fetched.stdout)["result"] if fetched.returncode == 0 else None
        ipred_ok = pending_after_one and ipred_res is not None and _subscribers(ipred_res) == [ipred["expect"]]
        if not ipred_ok:
            wrong.append({"request": rid, "query": ipred, "result": ipred_res, "stderr": fetched.stderr[-300:]})
        prog.step(f"IPRED request {rid} for {ipred['ip']}:{ipred['port']} approved by {' and '.join(STAFF)}, "
                  f"answer fetched with {RIGHTS}'s key: {'matches' if ipred_ok else 'DOES NOT match'} the truth")
        lawful_checked = len(nat_queries) + 1
        lawful_correct = nat_correct + int(ipred_ok)

        # -- expiry, part 2: the same question after the TTL: not retained -----------------------
        expired_gone = 0
        wait_s = (exp_stop_ms + DEMO_TTL_MS) / 1000 - time.time()
        if wait_s > 0:
            prog.step(f"waiting {wait_s:.0f} s for the short-TTL mapping to expire …")
            time.sleep(wait_s)
        exp_after = None
        exp_t0 = time.monotonic()
        while exp_before is not None and time.monotonic() - exp_t0 < 60:
            [erid] = exp_desk.ask(POLICE, "lek-law-enforcement", [exp_q])
            exp_after = exp_desk.results(POLICE, [erid], timeout_s=20).get(erid)
            if exp_after and exp_after.get("no_data"):
                expired_gone = 1
                break
            time.sleep(2)
        prog.step(f"after its {DEMO_TTL_MS // 1000} s TTL the same lawful request is answered "
                  f"{'“no data”: not retained' if expired_gone else f'{exp_after} (EXPECTED no data)'}")

        # -- audit chain, statistics, aggregates, leaks ------------------------------------------
        verify = _cli("audit", "verify", "--bootstrap", bootstrap, "--prefix", "ipanon",
                      "--anchor-key", str(keys / "audit-anchor.pub"))
        audit_ok = verify.returncode == 0
        prog.step("audit chain: " + ((verify.stdout or verify.stderr).strip().splitlines() or ["no output"])[-1])

        agg_deadline = time.monotonic() + 60
        while count(bootstrap, topics.aggregates) == 0 and time.monotonic() < agg_deadline:
            time.sleep(1)  # the past hours' buckets close once their bindings have been idle a while
        stats = [r.value for r in read_all(bootstrap, topics.stats)]
        aggregates = [r.value for r in read_all(bootstrap, topics.aggregates)]
        # leak check on the analysts' topics: no subscriber id or address we fed appears raw
        analyst_bytes = b"\n".join(stats + aggregates)
        needles = ({t.subscriber for t in (*traffic.truth, *traffic.leases)}
                   | {t.v4 for t in (*traffic.truth, *traffic.leases)} | {b.public for b in traffic.blocks})
        leaks = sum(1 for n in needles if n.encode() in analyst_bytes)
        if not args.json:
            sample = random.Random(args.seed).sample(stats, min(3, len(stats)))
            print("pseudonymised statistics (sample of the stats topic):", file=sys.stderr)
            for v in sample:
                print("  " + v.decode(errors="replace")[:200], file=sys.stderr)
            print(f"k-anonymous aggregates ({len(aggregates)} so far; buckets with fewer than k subscribers "
                  f"are withheld):", file=sys.stderr)
            for v in aggregates[:3]:
                print("  " + v.decode(errors="replace")[:200], file=sys.stderr)

        summary = {
            "events_in": events_in,
            "radius_in": traffic.record_count + len(BAD_RECORDS),
            "dhcp_in": traffic.dhcp_count,
            "cgnat_in": traffic.nat_count,
            "bindings": count_records(bootstrap, topics.bindings),
            "stats_out": stats_out,
            "aggregates_out": len(aggregates),
            "rejected": rejected,
            "lookups_checked": len(queries),
            "lookups_correct": correct,
            "lookups_answered": sum(1 for rid in ids[:len(queries)] if rid in answers),
            "lawful_checked": lawful_checked,
            "lawful_correct": lawful_correct,
            "expired_checked": 1,
            "expired_gone": expired_gone,
            "audit_ok": audit_ok,
            "stats_raw_identifier_hits": leaks,
            "operators": len(traffic.records),
            "processing_s": round(processing_s, 2),
            "elapsed_s": round(time.monotonic() - t_start, 2),
        }
        ok = (correct == len(queries) and lawful_correct == lawful_checked and expired_gone == 1
              and audit_ok and leaks == 0)
        if args.json:
            print(json.dumps(summary))
        else:
            print()
            print("ipanon demo — summary")
            print(f"  operators           {summary['operators']} (config/operators)")
            print(f"  events in           {events_in}: RADIUS {summary['radius_in']}, Kea DHCP {traffic.dhcp_count}, "
                  f"CGNAT {traffic.nat_count}  ({len(BAD_RECORDS)} malformed → dead-letter: {rejected})")
            print(f"  bindings            {summary['bindings']}  (IPv4, delegated IPv6 prefixes, leases, port blocks)")
            print(f"  stats records out   {stats_out}  (subscriber pseudonymised; raw-identifier hits: {leaks}); "
                  f"k-anonymous aggregates {len(aggregates)}")
            print(f"  lookups correct     {correct}/{len(queries)}  (signed LEK requests, sealed answers, "
                  f"checked against the generator's truth)")
            print(f"  lawful requests     {lawful_correct}/{lawful_checked}  (CGNAT public:port at an instant; "
                  f"one IPRED approved by two staff)")
            print(f"  expiry              {expired_gone}/1 mapping not retained after its {DEMO_TTL_MS // 1000} s TTL")
            print(f"  audit chain         {'verified' if audit_ok else 'BROKEN'}")
            print(f"  processing          {processing_s:.1f}s; total {summary['elapsed_s']:.1f}s")
            print(f"  result              {'OK' if ok else 'MISMATCH'}")
        for w in wrong[:5]:
            print(f"ipanon demo: mismatch: {json.dumps(w, default=str)}", file=sys.stderr)
        if not audit_ok:
            print(f"ipanon demo: audit verify: {verify.stdout}{verify.stderr}", file=sys.stderr)
        if args.keep:
            kept = True
            ex = next((q for q in queries if q["expect"]), queries[0]) if queries else nat_queries[0]
            print(f"\nstill running (broker {bootstrap}, worker pid {worker.pid}); status page: "
                  f"http://127.0.0.1:{web_port}/status\ntry next:\n"
                  f"  export IPANON_BOOTSTRAP={bootstrap}\n"
                  f"  ipanon query submit --authority {POLICE} --key {authority_keys / (POLICE + '.sign.pem')} \\\n"
                  f"      --basis lek-law-enforcement --case TRY-1 --address {ex['ip']} "
                  + (f"--port {ex['port']} " if ex.get("port") is not None else "")
                  + f"--from {ex['at_ms']} --to {ex['at_ms'] + 1} --number try-1 "
                  f"--bootstrap {bootstrap}\n"
                  f"      # the generator says: {ex['expect'] or 'nobody'}\n"
                  f"  ipanon query fetch {POLICE}/try-1 --key {authority_keys / (POLICE + '.enc.pem')} --wait 30 "
                  f"--bootstrap {bootstrap}\n"
                  f"  ipanon audit verify --anchor-key {keys / 'audit-anchor.pub'} --bootstrap {bootstrap}\n"
                  f"  ipanon audit show {rid} --bootstrap {bootstrap}\n"
                  f"  ipanon report compliance --operator connect2ip --from now-1h --out {work / 'report'} "
                  f"--keys {keys} --data-dir {work / 'worker'} --heartbeat-ms 5000 --ingest-lag-ms {DEMO_INGEST_LAG_MS} "
                  f"--metrics-url http://127.0.0.1:{web_port}/metrics --bootstrap {bootstrap}\n"
                  f"  ipanon report verify {work / 'report'} --key {keys / 'connect2ip.report.pub'}\n"
                  f"stop them with: kill -TERM -{worker.pid}; ipanon broker stop --dir {work / 'broker'}  "
                  f"(files in {work})", file=sys.stderr if args.json else sys.stdout)
        return 0 if ok else 1
    finally:
        _stop(expiry_worker)
        if not kept:
            prog.step("stopping worker and broker …")
            _stop(worker)
            broker.stop()
        if args.keep or not ok:
            prog.step(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
