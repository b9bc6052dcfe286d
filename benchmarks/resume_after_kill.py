"""How soon a busy worker processes again after it is killed and restarted.

A feeder produces RADIUS Start records (current event times, a new address each) for the whole
run.  The worker is killed (SIGKILL, or SIGTERM with ``--signal term``) once it is processing,
restarted at once, and the clock runs from the restart until both stages write again:

- the stats stage: the stats topic's end offsets grow (ingest → bindings → stats);
- the mapping stage: the table's changelog grows by more than one heartbeat round.

Without static group membership a restarted member waited for its killed self's session to time
out before the group gave it partitions (≈ 60 s with Faust's defaults).  Prints ONE JSON line:
per-restart seconds to resume for each stage, and their maximum.

    python benchmarks/resume_after_kill.py                  # 5 SIGKILLs, own throw-away broker
    python benchmarks/resume_after_kill.py --kills 3 --signal term --bootstrap 127.0.0.1:9092
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._harness import OPERATOR, Worker, broker, machine  # noqa: E402


def _ends(consumer, topic: str) -> int:
    from kafka import TopicPartition

    parts = consumer.partitions_for_topic(topic) or set()
    return sum(consumer.end_offsets([TopicPartition(topic, p) for p in parts]).values())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap")
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--signal", choices=["kill", "term"], default="kill")
    ap.add_argument("--rate", type=int, default=200, help="records per second fed")
    ap.add_argument("--timeout", type=float, default=120.0, help="give up on one restart after this long")
    args = ap.parse_args(argv)
    sig = signal.SIGKILL if args.signal == "kill" else signal.SIGTERM

    from kafka import KafkaConsumer

    from agents.kafka_io import producer

    with broker(args.bootstrap) as (bootstrap, _):
        w = Worker(bootstrap, Path(tempfile.mkdtemp(prefix="ipanon-resume-")))
        stop = threading.Event()
        fed = [0]

        def feed() -> None:
            p = producer(bootstrap)
            i = 0
            while not stop.is_set():
                t0 = time.monotonic()
                for _ in range(max(1, args.rate // 10)):
                    rec = {"User-Name": f"resume-{i}@isp.example", "Acct-Status-Type": "Start",
                           "Acct-Session-Id": f"R{i}", "NAS-IP-Address": "192.0.2.1",
                           "Framed-IP-Address": f"100.{64 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}",
                           "Event-Timestamp": int(time.time())}
                    p.send(w.topics.raw_radius, key=b"resume-feed", value=json.dumps(rec).encode(),
                           headers=[("ipanon-format", b"radius-json"), ("ipanon-operator", OPERATOR.encode())])
                    i += 1
                p.flush()
                fed[0] = i
                time.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))
            p.close()

        c = KafkaConsumer(bootstrap_servers=bootstrap)
        feeder = threading.Thread(target=feed, daemon=True)
        w.start()
        feeder.start()
        stats_s, mapping_s = [], []
        try:
            for k in range(args.kills):
                base = _ends(c, w.topics.stats)
                deadline = time.monotonic() + args.timeout
                while _ends(c, w.topics.stats) <= base + args.rate:  # processing, not just starting
                    if time.monotonic() > deadline:
                        raise SystemExit(f"worker not processing before kill {k + 1}:\n{w.log_tail()}")
                    time.sleep(0.2)
                time.sleep(1.0)
                w.proc.send_signal(sig) if sig == signal.SIGTERM else w.proc.kill()
                w.proc.wait(60)
                s0, m0 = _ends(c, w.topics.stats), _ends(c, w.changelog)
                t0 = time.monotonic()
                w.start()
                got_s = got_m = None
                while got_s is None or got_m is None:
                    now = time.monotonic()
                    if now - t0 > args.timeout:
                        break
                    if got_s is None and _ends(c, w.topics.stats) > s0:
                        got_s = now - t0
                    if got_m is None and _ends(c, w.changelog) > m0 + 8:
                        got_m = now - t0
                    time.sleep(0.1)
                stats_s.append(None if got_s is None else round(got_s, 2))
                mapping_s.append(None if got_m is None else round(got_m, 2))
        finally:
            stop.set()
            feeder.join(10)
            w.stop()
            c.close()
        done = [x for x in stats_s + mapping_s if x is not None]
        print(json.dumps({
            "bench": "resume_after_kill", "signal": args.signal, "restarts": args.kills, "fed": fed[0],
            "stats_resume_s": stats_s, "mapping_resume_s": mapping_s,
            "max_resume_s": max(done) if len(done) == len(stats_s + mapping_s) else None,
            "timed_out": len(stats_s + mapping_s) - len(done), "machine": machine(),
        }))
        return 0 if len(done) == len(stats_s + mapping_s) else 1


if __name__ == "__main__":
    sys.exit(main())
