"""Repeated Kafka client errors (a broker outage) are rate-limited to one line per interval and
kind, with a count; nothing is lost from the count, and other loggers are untouched.

Reference model: per kind (logger, level, template) the first record and then the first after
each ``interval`` pass; every dropped record is reported by the next passing one of its kind."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import textwrap

from agents.logfilter import RepeatFilter
from tests.conftest import REPO


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


def _record(name, msg, *args, level=logging.ERROR):
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_an_outage_worth_of_errors_becomes_a_few_lines_with_counts():
    clock = Clock()
    f = RepeatFilter(interval_s=10.0, clock=clock)
    kinds = [("aiokafka.conn", "Unable connect to node with id %s: %s"),
             ("kafka.client", "Node %s connection failed (%s) -- refreshing metadata"),
             ("faust.transport.drivers.aiokafka", "Heartbeat failed for group %s: %s")]
    total = 153_767
    passed = []
    for i in range(total):
        clock.t = 39.0 * i / total                   # a 39 s outage
        name, msg = kinds[i % 3]
        r = _record(name, msg, i % 4, "ConnectionError")
        if f.filter(r):
            passed.append((name, r.getMessage()))
    # reference: per kind a line at t=0, 10, 20, 30 (first record at or after each window end)
    assert len(passed) == 3 * 4
    reported = sum(int(m.group(1)) for _, text in passed for m in [re.search(r"\[(\d+) more like this", text)] if m)
    unreported = sum(state[1] for state in f._seen.values())   # dropped since each kind's last line
    assert len(passed) + reported + unreported == total and f.suppressed == reported + unreported
    assert passed[0][1] == "Unable connect to node with id 0: ConnectionError"   # the first as it was


def test_other_loggers_and_info_lines_are_never_limited():
    f = RepeatFilter(interval_s=10.0, clock=Clock())
    assert all(f.filter(_record("ipanon.stats", "stats: one binding failed (%s)", "X")) for _ in range(100))
    assert all(f.filter(_record("aiokafka.conn", "connected", level=logging.INFO)) for _ in range(100))
    assert all(f.filter(_record("kafkaesque", "not a client logger")) for _ in range(100))
    assert f.suppressed == 0


def test_one_decision_per_record_across_handlers():
    f = RepeatFilter(interval_s=10.0, clock=Clock())
    r1, r2 = _record("kafka.conn", "down"), _record("kafka.conn", "down")
    assert f.filter(r1) and f.filter(r1)            # a second handler sees the same verdict
    assert not f.filter(r2) and not f.filter(r2)
    assert f.suppressed == 1


def test_the_worker_installs_it_where_it_sets_up_logging(tmp_path):
    """The worker's own Worker class, its own logging set-up, a log file: 50 000 connection
    errors from three client loggers write at most a line per kind (in a child process, so the
    logging set-up touches nothing of this one)."""
    log = tmp_path / "worker.log"
    code = textwrap.dedent(f"""
        import logging, faust
        from agents.commands.worker import worker_class
        app = faust.App("lrl", broker="kafka://127.0.0.1:1", web_enabled=False)
        w = worker_class()(app, loglevel="info", logfile={str(log)!r}, quiet=True, redirect_stdouts=False)
        w._setup_logging()
        from agents.logfilter import RepeatFilter
        (f,) = {{x for h in logging.root.handlers for x in h.filters if isinstance(x, RepeatFilter)}}
        t = [0.0]
        f.clock = lambda: t[0]          # 50 000 errors over 39 s of the filter's time
        for i in range(50_000):
            t[0] = 39.0 * i / 50_000
            logging.getLogger(("aiokafka.conn", "kafka.client", "faust.transport")[i % 3]).error(
                "Unable connect to node with id %s: %s", i % 4, "ConnectionError")
        logging.getLogger("ipanon").error("an ipanon line is never limited")
        logging.getLogger("ipanon").error("an ipanon line is never limited")
    """)
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Logging error" not in p.stderr + log.read_text()   # the count line formats cleanly
    lines = [l for l in log.read_text().splitlines() if "Unable connect" in l]
    assert len(lines) == 3 * 4, len(lines)                       # per kind: t = 0, 10, 20, 30 s
    counted = [int(m) for l in lines for m in re.findall(r"\[(\d+) more like this in the last 10 s", l)]
    assert len(counted) == 3 * 3 and sum(counted) + len(lines) <= 50_000
    assert log.read_text().count("an ipanon line is never limited") == 2
