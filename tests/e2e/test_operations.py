"""Operations end to end on the real broker: a running worker's ``/metrics`` and ``/status``;
Debian's Prometheus scrapes it and the compliance series moves as a mapping ages and expires;
headless Chromium renders the status page (screenshot) showing the worker's real figures.

Profile: the seed operator Connect2IP (24 h promise).  A shorter test promise would be faster
but the statistics keyring refuses key epochs shorter than ~4.9 h today (it ratchets from epoch
0 = 1970 and allows 100 000 steps; reported to the lead).  So the test reads the worker's TTL
from ``/status.json`` and sends a session that *ended* ``TTL − 45 s`` ago: its compliance ratio
starts near ``(TTL − 45 s) / 24 h`` ≥ 0.9 (the alert goes pending), rises with the clock, and
drops to almost 0 when the sweeper expires the session at ``end + TTL``, about 45 s later.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

OPERATOR = "connect2ip"
PROMISE_S = 86_400.0
MARGIN_S = 45


def free_port() -> int:
    from agents.broker import free_port as outside_ephemeral_range

    return outside_ephemeral_range()


def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def get_json(url: str):
    try:
        return json.loads(get(url))
    except Exception:
        return None


def metric(text: str, name: str, **labels) -> list[float]:
    """Values of ``name`` whose labels include ``labels`` (Prometheus text format)."""
    out = []
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            out.append(float(value))
    return out


def radius(user, session, ip, kind, at, session_time=None):
    r = {"User-Name": user, "Acct-Status-Type": kind, "Acct-Session-Id": session,
         "NAS-IP-Address": "192.0.2.10", "Framed-IP-Address": ip, "Event-Timestamp": at}
    if session_time is not None:
        r["Acct-Session-Time"] = session_time
    return r


def produce(bootstrap, topic, records, tmp_path, operator=OPERATOR, name="feed.jsonl"):
    feed = tmp_path / name
    feed.write_text("".join(json.dumps(r) + "\n" for r in records))
    rc = subprocess.run([sys.executable, "-m", "agents.cli", "produce", "--format", "radius-json", "--operator",
                         operator, "--topic", topic, "--bootstrap", bootstrap, str(feed)],
                        cwd=REPO, capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr


def start_prometheus(tmp_path: Path, target: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    (tmp_path / "prom").mkdir()
    shutil.copy(REPO / "deploy" / "prometheus" / "ipanon-rules.yml", tmp_path / "prom" / "ipanon-rules.yml")
    (tmp_path / "prom" / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "rule_files: [ipanon-rules.yml]\n"
        "scrape_configs:\n  - job_name: ipanon\n    static_configs:\n"
        f"      - targets: ['{target}']\n")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prom' / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'prom' / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--storage.tsdb.retention.time=1h"],
        stdout=open(tmp_path / "prom" / "prometheus.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def stop(proc: subprocess.Popen) -> None:
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def prom_query(base: str, q: str) -> list:
    d = get_json(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": q}))
    return d["data"]["result"] if d and d.get("status") == "success" else []


def chromium(args: list[str], timeout: float = 90) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--hide-scrollbars", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed (apt-get install prometheus)")
def test_prometheus_sees_compliance_move_as_mappings_age_and_expire(worker_factory, bootstrap, tmp_path):
    port = free_port()
    # session A ended ~23 h ago: the worker plans for that ingest lag, else ingest dead-letters
    # its Stop as too-late (docs/ingest.md, "Late records").  That lag leaves the 24 h statistics
    # promise a stats retention of ~28 min, which the plan refuses for 1 h buckets (records
    # stamped with their bucket start would be deleted on arrival): 10 min buckets here.
    profile = (REPO / "config" / "operators" / f"{OPERATOR}.toml").read_text().replace('bucket = "1h"', 'bucket = "10m"')
    assert 'bucket = "10m"' in profile
    w = worker_factory(operators=((OPERATOR, profile),), extra=["--web-port", str(port)],
                       ingest_lag_ms=int(23.5 * 3600_000)).start()
    base = f"http://127.0.0.1:{port}"
    first = wait_for(lambda: get_json(base + "/status.json"), timeout_s=150, what="the worker's web server")
    ttl_s = first["operators"][OPERATOR]["ttl_ms"] // 1000
    assert first["operators"][OPERATOR]["promise_ms"] == PROMISE_S * 1000 and ttl_s < PROMISE_S
    prom, pbase = start_prometheus(tmp_path, f"127.0.0.1:{port}")
    try:
        now = int(time.time())
        a_end = now - ttl_s + MARGIN_S  # expires MARGIN_S from now
        produce(bootstrap, w.topics.raw_radius, [
            radius("a@c2ip.example", "S-A", "100.64.0.1", "Start", a_end - 100),
            radius("a@c2ip.example", "S-A", "100.64.0.1", "Stop", a_end, session_time=100),
            radius("b@c2ip.example", "S-B", "100.64.0.2", "Start", now - 60),
            radius("b@c2ip.example", "S-B", "100.64.0.2", "Stop", now - 30, session_time=30),
            radius("c@c2ip.example", "S-C", "100.64.0.3", "Start", now - 10),
        ], tmp_path)
        sent = time.time()

        def status():
            # the page shows the last finished walk, and the five records may reach the table in
            # more than one batch: wait for a walk that saw all of them (B's Stop included)
            s = get_json(base + "/status.json")
            ok = s and s["operators"][OPERATOR]["live"] == 3 and s["operators"][OPERATOR]["current"] == 1
            return s if ok else None

        s = wait_for(status, timeout_s=40, what="three live mappings, one of them current, on the status page")
        op = s["operators"][OPERATOR]
        assert (ttl_s - MARGIN_S) / PROMISE_S <= op["compliance_ratio"] < (ttl_s + 5) / PROMISE_S
        text = get(base + "/metrics").decode()
        assert metric(text, "ipanon_mappings_live", operator=OPERATOR) == [3.0]
        assert metric(text, "ipanon_promise_seconds", operator=OPERATOR, purpose="lawful_access") == [PROMISE_S]
        assert metric(text, "ipanon_ttl_seconds", operator=OPERATOR) == [float(first["operators"][OPERATOR]["ttl_ms"]) / 1000]
        assert metric(text, "ipanon_records_in_total", role="raw", source="radius-json", operator=OPERATOR) == [5.0]
        assert metric(text, "ipanon_events_in_total") == [5.0]
        for needle in ("100.64.0.", "@c2ip.example", "S-A"):
            assert needle not in text  # no raw identifier in any label
        lag = metric(text, "ipanon_consumer_lag_records", role="raw")
        # (3 shared raw topics + the operator's own raw topic) × 4 partitions, all assigned here
        assert len(lag) == 4 * 4 and all(v >= 0 for v in lag)
        assert metric(text, "ipanon_processing_seconds_count", role="raw") == [5.0]
        # bindings are timed when their batch is acknowledged, which may come after the table
        # shows them: wait for a scrape that has all five (never more processed than fed)
        wait_for(lambda: sum(metric(get(base + "/metrics").decode(), "ipanon_processing_seconds_count",
                                    role="bindings")) >= 5, timeout_s=30, what="five bindings timed")
        # the sweeper timer's first pass can come after the first records are processed
        last_sweep = wait_for(lambda: metric(get(base + "/metrics").decode(),
                                             "ipanon_sweeper_last_run_timestamp_seconds")[0] or None,
                              timeout_s=30, what="a completed sweeper pass")
        assert time.time() - last_sweep < 30
        assert metric(text, "ipanon_mapping_updates_total", outcome="opened")[0] >= 3
        assert metric(text, "ipanon_records_out_total", role="bindings")[0] >= 5
        # the sensor's count of records sent to the stats topic equals the stats agent's own count
        # (bindings of session A, 23 h old, may fall in a destroyed statistics key epoch)
        # (sent once the producer buffer flushes, so compare on a fresh scrape until they agree)
        def stats_agree():
            t = get(base + "/metrics").decode()
            out = metric(t, "ipanon_stats_records_out_total")
            return out and out[0] >= 1 and metric(t, "ipanon_records_out_total", role="stats") == out

        wait_for(stats_agree, timeout_s=20, what="records sent to the stats topic == stats records counted")

        def ratio_now():
            r = prom_query(pbase, f'ipanon_compliance_ratio{{operator="{OPERATOR}"}}')
            return float(r[0]["value"][1]) if r else None

        wait_for(lambda: (ratio_now() or 0) >= 0.9, timeout_s=30, what="Prometheus to scrape a ratio ≥ 0.9")
        wait_for(lambda: any(a["labels"]["alertname"] == "IpanonComplianceRatioHigh"
                             for a in get_json(pbase + "/api/v1/alerts")["data"]["alerts"]),
                 timeout_s=30, what="the compliance alert to be pending")
        wait_for(lambda: (r := ratio_now()) is not None and r < 0.01, timeout_s=MARGIN_S + 60,
                 what="the ratio to drop after the oldest mapping expires")
        assert time.time() - sent >= MARGIN_S - 10  # not before its expiry instant (end + TTL)
        time.sleep(2)
        series = get_json(f"{pbase}/api/v1/query_range?" + urllib.parse.urlencode(
            {"query": f'ipanon_compliance_ratio{{operator="{OPERATOR}"}}', "start": sent - 5,
             "end": time.time(), "step": 1}))
        values = [float(v) for _, v in series["data"]["result"][0]["values"]]
        high = [v for v in values if v >= 0.9]
        assert len(high) >= 10 and values[-1] < 0.01
        assert high[-1] > high[0]  # the oldest mapping aged while it was present
        expired = prom_query(pbase, "ipanon_intervals_expired_total")
        assert expired and float(expired[0]["value"][1]) >= 1
        s = get_json(base + "/status.json")
        assert s["operators"][OPERATOR]["live"] == 2 and s["expired"] >= 1 and s["recent_expiries"]
    finally:
        stop(prom)


@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason="chromium not installed (apt-get install chromium)")
def test_status_page_in_headless_chromium_shows_real_figures(worker_factory, bootstrap, tmp_path):
    port = free_port()
    # u1's Stop is 2 h old: the worker plans for that ingest lag (see above)
    w = worker_factory(operators=(OPERATOR, "framsteget"), extra=["--web-port", str(port)],
                       ingest_lag_ms=3 * 3600_000).start()
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: get_json(base + "/status.json"), timeout_s=150, what="the worker's web server")
    now = int(time.time())
    records = [radius(f"u{i}@c2ip.example", f"S-{i}", f"100.64.1.{i}", "Start", now - 20 * i) for i in range(1, 8)]
    records += [radius("u1@c2ip.example", "S-1", "100.64.1.1", "Stop", now - 7200, session_time=100)]
    produce(bootstrap, w.topics.raw_radius, records + [{"not": "radius"}], tmp_path)
    produce(bootstrap, w.topics.raw_radius, [radius("k@fs.example", "K-1", "198.51.100.9", "Start", now - 5)],
            tmp_path, operator="framsteget", name="fs.jsonl")
    wait_for(lambda: (s := get_json(base + "/status.json")) and s["operators"][OPERATOR]["live"] == 7
             and s["operators"]["framsteget"]["live"] == 1 and s["rejected"], timeout_s=60, what="figures")
    time.sleep(5)  # a few samples for the charts
    s = get_json(base + "/status.json")

    dom = chromium(["--virtual-time-budget=3000", "--dump-dom", base + "/status"])
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    assert "Connect2IP" in page and "Framsteget" in page
    events = int(page.split('<b id="events-in">', 1)[1].split("<", 1)[0])
    assert events >= s["events_in"] >= 9  # the parsed records reached the page through the browser
    ratio = float(page.split('data-ratio="', 1)[1].split('"', 1)[0])
    assert 7200 / PROMISE_S - 0.01 < ratio < 7300 / PROMISE_S  # the Stop 2 h ago, of a 24 h promise
    rejected = page.split('id="rejected"', 1)[1].split("</ul>", 1)[0]
    assert any(reason in rejected for reason in s["rejected"])
    assert page.count('<svg class="spark"') >= 5  # inline charts, no external assets
    assert "http://" not in page.replace(base, "") and "https://" not in page
    for needle in ("100.64.1.", "@c2ip.example", "198.51.100.9"):
        assert needle not in page

    shot = tmp_path / "status.png"
    r = chromium(["--window-size=1280,900", f"--screenshot={shot}", base + "/status"])
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == 1280
    assert len(png) > 20_000  # a rendered page, not a blank image
    if os.environ.get("IPANON_UPDATE_SCREENSHOT"):
        shutil.copy(shot, REPO / "docs" / "status-page.png")
