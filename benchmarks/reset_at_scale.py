"""A NAS reset (RADIUS Accounting-On) on a large table, on a real broker and a real ``ipanon worker``.

Not a ``bench_`` script and not in the test suite: it times a worker process and watches its
group membership, which no test should assert on.  What it does, on one broker (``--bootstrap``
or a throw-away local one) and one worker process with a short group session
(``--session-timeout-ms``, default 6000: the broker's ``group.min.session.timeout.ms``):

1. ``--sessions`` RADIUS sessions (one address each, all open, ``--nases`` NASes in turn) are
   written straight into the worker's changelog, sealed exactly as the mapping stage writes them
   (``bench_state.Encoder.entry_revisit``: the vault's key, ``seal_value``, the revisit header);
2. reset R1 (an Accounting-On of NAS 1, radius-json on the raw topic) is produced *before* the
   worker starts, so it reaches the mapping stage right after the table restore: in memory mode
   while the schedule rebuild still runs (the reset index not trusted yet: the scanning path),
   in disk mode on the scanning path anyway;
3. the worker starts (``--store memory|disk``); after R1 and (memory mode) the schedule rebuild,
   ``--live`` RADIUS Starts on every NAS go through the whole worker (ingest → bindings →
   mapping), then reset R2 (NAS 2): in memory mode the indexed path;
4. for each reset: wall (produce → the worker counted ``ipanon_mapping_updates_total{outcome="reset"}``
   once per partition), worker CPU in that window, the path (``ipanon_table_resets_total{path}``;
   absent before 5a476e4), the longest answer time of a probe thread hitting the worker's web
   server every 50 ms (the web server runs in the worker's event loop: a blocked loop answers
   late), then a quiet wait of two session timeouts; then the changelog records written since
   just before the reset are read and opened with the vault: every key of that NAS's open
   sessions must carry the interval closed at the reset's time, and no other key may be written;
5. from the worker's log: fence stalls ("the event loop did not run for X s"), "revoked after a
   stall" (its partitions lost, queued writes dropped), any revoke at all, ingest-group
   rebalances; ``fenced_writes`` from ``/metrics`` (``ipanon_worker_events_total{name}``).

``--repo DIR``: run the worker from another checkout (e.g. a worktree of an older commit); the
fill, the probes and the check run from this one (the table format is the same).

Prints exactly one JSON line.  The machine is shared: give ``uptime`` with the figures.

    python benchmarks/reset_at_scale.py --sessions 1000000 --store memory
    python benchmarks/reset_at_scale.py --sessions 1000000 --store disk --repo /path/to/old/worktree
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as H  # noqa: E402
import bench_state as BS  # noqa: E402

import agents  # noqa: F401,E402  (first: serves the compiled core when it matches the sources)
from stream import intervals as iv  # noqa: E402

FILL_BASE = 0x64400000      # 100.64.0.0 and up: the filled sessions
LIVE_BASE = 0x0AC80000      # 10.200.0.0 and up: the live Starts


def nas_of(i: int, nases: int) -> str:
    return f"192.0.2.{i % nases + 1}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- fill --------------------------------------------------------------------------------------


def fill(bootstrap: str, w: H.Worker, n: int, nases: int, now_ms: int) -> tuple[float, dict]:
    """``n`` open RADIUS sessions into ``w``'s changelog; returns (seconds, NAS → set of keys)."""
    from agents.mapping_table import partition_for

    enc = BS.Encoder(w, now_ms)
    parts = w.settings.partitions
    t0 = now_ms - 30 * 60_000
    by_nas: dict[str, set] = {}

    def rows():
        for i in range(n):
            nas = nas_of(i, nases)
            net = ipaddress.IPv4Network((FILL_BASE + i, 32))
            start = t0 + i % 600_000
            ivl = iv.Interval(start_ms=start, end_ms=None, holder=f"kund-{i}@isp.example",
                              session=f"{nas}/{i:08X}", nas=nas, last_ms=start)
            key, value, hdr = enc.entry_revisit("ip", net, (ivl,), now_ms)
            by_nas.setdefault(nas, set()).add(key)
            yield partition_for(iv.routing_key(H.OPERATOR, net).encode(), parts), key, value, hdr

    t = time.perf_counter()
    asyncio.run(BS.fill_changelog(bootstrap, w.changelog, rows()))
    return time.perf_counter() - t, by_nas


def radius(status: str, nas: str, at_s: int, i: Optional[int] = None) -> tuple[str, bytes]:
    rec = {"Acct-Status-Type": status, "NAS-IP-Address": nas, "Event-Timestamp": at_s}
    if i is not None:
        rec.update({"User-Name": f"live-{i}@isp.example", "Acct-Session-Id": f"L{i:08X}",
                    "Calling-Station-Id": f"02:00:5f:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}",
                    "Framed-IP-Address": str(ipaddress.IPv4Address(LIVE_BASE + i))})
    return "radius-json", json.dumps(rec).encode()


# -- the worker, watched ------------------------------------------------------------------------


class Probe(threading.Thread):
    """GET a path of the worker's web server every ``every_s``: each answer's time (the server
    runs in the worker's event loop, so a blocked loop answers late)."""

    def __init__(self, port: int, every_s: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/ipanon-loop-probe"
        self.every_s = every_s
        self.samples: list[tuple[float, float]] = []  # (sent, seconds)
        self.stop_flag = False

    def run(self) -> None:
        while not self.stop_flag:
            t = time.time()
            try:
                urllib.request.urlopen(self.url, timeout=60).read()
            except urllib.error.HTTPError:
                pass  # 404: answered
            except OSError:
                time.sleep(self.every_s)
                continue
            self.samples.append((t, time.time() - t))
            time.sleep(self.every_s)

    def worst(self, t0: float, t1: float) -> Optional[float]:
        xs = [d for t, d in self.samples if t0 <= t <= t1 or (t < t0 and t + d >= t0)]
        return round(max(xs), 3) if xs else None


def metrics(port: int) -> dict:
    """Every sample of ``/metrics`` as {"name{labels}": value}."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60).read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, v = line.rpartition(" ")
            try:
                out[name] = float(v)
            except ValueError:
                pass
    return out


def metric(m: dict, metric_name: str, **labels: str) -> float:
    want = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for k, v in m.items():
        if k.split("{", 1)[0] == metric_name and all(w in k for w in want):
            total += v
    return total


def wait_for(pred, timeout_s: float, what: str, every_s: float = 0.25, w: Optional[H.Worker] = None):
    end = time.time() + timeout_s
    while time.time() < end:
        r = pred()
        if r:
            return r
        if w is not None and not w.alive():
            raise SystemExit(f"worker exited while waiting for {what}:\n{w.log_tail()}")
        time.sleep(every_s)
    raise SystemExit(f"timed out waiting for {what}" + (f":\n{w.log_tail()}" if w else ""))


def log_text(w: H.Worker) -> str:
    try:
        return w.log_path.read_text(errors="replace")
    except OSError:
        return ""


def end_offsets(bootstrap: str, topic: str, parts: int) -> dict:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        return {p: off for (tp, off) in c.end_offsets([TopicPartition(topic, p) for p in range(parts)]).items()
                for p in [tp.partition]}
    finally:
        c.close()


def changelog_since(bootstrap: str, w: H.Worker, start: dict, ends: dict) -> list[tuple[bytes, Optional[bytes]]]:
    """(key, value) of every changelog record from ``start`` to ``ends`` (partition → offset)."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, max_poll_records=5000)
    out = []
    try:
        tps = [TopicPartition(w.changelog, p) for p in start if ends[p] > start[p]]
        if not tps:
            return out
        c.assign(tps)
        for tp in tps:
            c.seek(tp, start[tp.partition])
        left = {tp.partition for tp in tps}
        deadline = time.time() + 300
        while left and time.time() < deadline:
            for tp, rs in c.poll(timeout_ms=1000).items():
                for r in rs:
                    if r.offset < ends[tp.partition]:
                        out.append((r.key, r.value))
                    if r.offset + 1 >= ends[tp.partition]:
                        left.discard(tp.partition)
    finally:
        c.close()
    return out


def check(w: H.Worker, records, expected: set, nas: str, at_ms: int) -> dict:
    """What the reset wrote: every expected key closed at ``at_ms``, nothing else touched."""
    from agents.app import vault_grace_ms
    from agents.kafka_io import HEARTBEAT_KEY
    from agents.runtime import keys_dir
    from agents.vault import Vault

    vault = Vault.open_or_create(H.OPERATOR, keys_dir(w.settings), ttl_ms=w.plan.retention[H.OPERATOR].ttl_ms,
                                 grace_ms=vault_grace_ms(w.settings), now_ms=int(time.time() * 1000))
    last: dict[bytes, Optional[bytes]] = {}
    writes = 0
    for k, v in records:
        if k == HEARTBEAT_KEY:
            continue
        writes += 1
        last[k] = v
    closed = wrong = 0
    others = [k for k in last if k not in expected]
    for k in expected:
        raw = last.get(k)
        if raw is None:
            continue
        _, ivs = vault.open(k, raw)
        mine = [i for i in ivs if i.nas == nas]
        if mine and all(i.end_ms == at_ms for i in mine):
            closed += 1
        else:
            wrong += 1
    return {"expected": len(expected), "closed": closed, "missing": len(expected) - closed - wrong,
            "wrong_end": wrong, "others_touched": len(others), "changelog_writes": writes,
            "duplicate_writes": writes - len(last)}


# -- one run ------------------------------------------------------------------------------------


_STALL = re.compile(r"fence: the event loop did not run for ([\d.]+) s")
_RESTORED = re.compile(r"mapping table: restored (\d+) records .* in ([\d.]+) s")
_REBUILT = re.compile(r"sweeper: schedule rebuilt from the store: (\d+) keys \(([\d.]+) s\)")


def log_figures(text: str) -> dict:
    stalls = [float(x) for x in _STALL.findall(text)]
    return {"fence_stalls": len(stalls), "fence_stall_max_s": max(stalls) if stalls else None,
            "revoked_after_stall": text.count("revoked after a stall"),
            "mapping_revokes": len(re.findall(r"mapping: partitions \[[^\]]*\] revoked", text)),
            "membership_held": text.count("membership held through the stall"),
            "faust_rebalances": text.count("Restarting"),
            # the batch stages' own groups (ingest, aggregate) heartbeat from the event loop
            "group_sessions_expired": text.count("Heartbeat session expired"),
            "group_joins": text.count("Joined group"),
            "tracebacks": text.count("Traceback")}


def run(args, bootstrap: str, workdir: Path) -> dict:
    port = free_port()
    w = H.Worker(bootstrap, workdir, partitions=args.partitions)
    w.args[w.args.index("--web-port") + 1] = str(port)
    w.env["IPANON_SESSION_TIMEOUT_MS"] = str(args.session_timeout_ms)
    w.env["IPANON_TABLE_STORE"] = args.store
    w.args += ["--table-store", args.store]
    repo = Path(args.repo).resolve() if args.repo else H.REPO
    w.env["PYTHONPATH"] = str(repo)
    nases = [nas_of(i, args.nases) for i in range(args.nases)]
    now_ms = int(time.time() * 1000)
    out: dict = {"sessions": args.sessions, "nases": args.nases, "partitions": args.partitions, "store": args.store,
                 "session_timeout_ms": args.session_timeout_ms, "worker_repo": str(repo),
                 "worker_commit": subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                                                 capture_output=True, text=True).stdout.strip()}
    fill_s, by_nas = fill(bootstrap, w, args.sessions, args.nases, now_ms)
    out["fill_s"] = round(fill_s, 1)
    out["fill_per_s"] = round(args.sessions / fill_s)

    # R1 before the worker starts: the stage meets it right after the restore
    r1_at = int(time.time())
    H.produce(bootstrap, w.topics, [radius("Accounting-On", nases[0], r1_at)])
    r1_start = end_offsets(bootstrap, w.changelog, args.partitions)
    t_start = time.time()
    w.proc = subprocess.Popen(w.args, stdout=open(w.log_path, "ab"), stderr=subprocess.STDOUT, cwd=repo,
                              env=w.env, start_new_session=True)
    probe = Probe(port)
    probe.start()
    resets = []
    try:
        P = args.partitions
        m = wait_for(lambda: (lambda m: m if metric(m, "ipanon_mapping_updates_total", outcome="reset") >= P else None)(metrics(port)),
                     args.timeout, "reset R1 applied", w=w)
        t_r1 = time.time()
        cpu_r1 = H.cpu_s(w.pid)
        text = log_text(w)
        mr = _RESTORED.search(text)
        out["restore_records"] = int(mr.group(1)) if mr else None
        out["restore_s"] = float(mr.group(2)) if mr else None
        # R1's window: from the restored line (the stage reads it just after) to now
        r1 = {"reset": "R1", "nas": nases[0], "at_ms": r1_at * 1000, "phase": "right after the restore",
              "worker_start_to_applied_s": round(t_r1 - t_start, 1), "worker_cpu_to_applied_s": round(cpu_r1, 1),
              "path": {p: metric(m, "ipanon_table_resets_total", path=p) for p in ("indexed", "scanned")},
              "rebuilt_before_applied": _REBUILT.search(text) is not None,
              "probe_max_s_since_start": probe.worst(t_start, t_r1)}
        if args.store == "memory":
            wait_for(lambda: _REBUILT.search(log_text(w)), args.timeout, "schedule rebuilt", w=w)
            mr = _REBUILT.search(log_text(w))
            out["schedule_rebuild_keys"], out["schedule_rebuild_s"] = int(mr.group(1)), float(mr.group(2))
        time.sleep(2 * args.session_timeout_ms / 1000)  # what a stall would bring: a revoke, a re-read
        resets.append((r1, r1_start, end_offsets(bootstrap, w.changelog, P), by_nas[nases[0]]))

        # live Starts through the whole worker, then R2
        base = metric(metrics(port), "ipanon_mapping_updates_total")
        live_at = int(time.time())
        live = [radius("Start", nas_of(i, args.nases), live_at, i) for i in range(args.live)]
        H.produce(bootstrap, w.topics, live)
        wait_for(lambda: metric(metrics(port), "ipanon_mapping_updates_total") >= base + args.live, args.timeout,
                 "live Starts applied", w=w)
        from agents.app import vault_grace_ms
        from agents.runtime import keys_dir
        from agents.vault import Vault

        vault = Vault.open_or_create(H.OPERATOR, keys_dir(w.settings), ttl_ms=w.plan.retention[H.OPERATOR].ttl_ms,
                                     grace_ms=vault_grace_ms(w.settings), now_ms=int(time.time() * 1000))
        expected2 = set(by_nas[nases[1]]) | {vault.key("ip", ipaddress.IPv4Network((LIVE_BASE + i, 32)))
                                            for i in range(args.live) if nas_of(i, args.nases) == nases[1]}
        m0 = metrics(port)
        before = metric(m0, "ipanon_mapping_updates_total", outcome="reset")
        r2_start = end_offsets(bootstrap, w.changelog, args.partitions)
        time.sleep(1.1)  # the reset's second is after every live Start's
        r2_at = int(time.time())
        cpu0 = H.cpu_s(w.pid)
        t0 = time.time()
        H.produce(bootstrap, w.topics, [radius("Accounting-On", nases[1], r2_at)])
        m1 = wait_for(lambda: (lambda m: m if metric(m, "ipanon_mapping_updates_total", outcome="reset") >= before + P
                               else None)(metrics(port)), args.timeout, "reset R2 applied", every_s=0.1, w=w)
        t1 = time.time()
        r2 = {"reset": "R2", "nas": nases[1], "at_ms": r2_at * 1000, "phase": "after the rebuild, live traffic applied",
              "wall_s": round(t1 - t0, 2), "worker_cpu_s": round(H.cpu_s(w.pid) - cpu0, 2),
              "path": {p: metric(m1, "ipanon_table_resets_total", path=p) - metric(m0, "ipanon_table_resets_total", path=p)
                       for p in ("indexed", "scanned")},
              "probe_max_s": probe.worst(t0, t1)}
        time.sleep(2 * args.session_timeout_ms / 1000)
        resets.append((r2, r2_start, end_offsets(bootstrap, w.changelog, P), expected2))
        mend = metrics(port)
        out["reset_applications"] = metric(mend, "ipanon_mapping_updates_total", outcome="reset")
        out["resets_total"] = {p: metric(mend, "ipanon_table_resets_total", path=p) for p in ("indexed", "scanned")}
        out["fenced_writes"] = metric(mend, "ipanon_worker_events_total", name="fenced_writes")
        out["worker_alive"] = w.alive()
        out["worker_rss_mb"] = round(H.rss_kb(w.pid) / 1024)
    finally:
        probe.stop_flag = True
        w.stop()
    out.update(log_figures(log_text(w)))
    out["resets"] = []
    for r, start, stop, expected in resets:
        r.update(check(w, changelog_since(bootstrap, w, start, stop), expected, r["nas"], r["at_ms"]))
        out["resets"].append(r)
    out["probe_max_s_whole_run"] = max((d for _, d in probe.samples), default=None)
    out["log"] = str(w.log_path)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap")
    ap.add_argument("--sessions", type=int, default=1_000_000)
    ap.add_argument("--nases", type=int, default=8)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--live", type=int, default=4000, help="RADIUS Starts through the whole worker before R2")
    ap.add_argument("--store", choices=["memory", "disk"], default="memory")
    ap.add_argument("--session-timeout-ms", type=int, default=6000)
    ap.add_argument("--repo", help="checkout the worker runs from (default: this one)")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--dir", help="work directory (default: a new temporary one)")
    args = ap.parse_args()
    if args.sessions < args.nases or args.nases < 2:
        ap.error("need at least two NASes and a session per NAS")
    m0 = H.machine()
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="ipanon-reset-"))
    with H.broker(args.bootstrap) as (bootstrap, _):
        out = run(args, bootstrap, workdir)
    out["machine_start"] = m0
    out["load_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
