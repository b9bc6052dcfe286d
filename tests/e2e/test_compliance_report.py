"""``ipanon report compliance|verify`` on the real broker.

One real worker (connect2ip and framsteget, a 20 s table TTL) is fed RADIUS through the real
ingest path, asked lawful requests (answered, refused, pending), given a legal hold that is set
and released, and left until a mapping expires.  The report written from it is compared with
figures read independently (``ipanon topics plan --json``, the audit topic, the key state),
checked for the fed identities, verified, and verified again after one byte of each file flips.
A subscriber id that is a personal number then makes the separation check fail, in red.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import time
from pathlib import Path
from typing import Optional

import pytest

from tests.conftest import REPO, WorkerProcess, wait_for
from tests.e2e.test_query_agent import (cli, feed_radius, free_port, make_registry, radius, replies, request, send,
                                        sign_pem, start_and_wait_for_desk)

pytestmark = pytest.mark.broker

OP = "connect2ip"
SUBS = {"alice-c2ip@kund.example": "100.64.77.1", "bob-c2ip@kund.example": "100.64.77.2",
        "carol-c2ip@kund.example": "100.64.77.3"}
PNR_SUBSCRIBER = "19121212-1212"   # Skatteverket's published test personal number (valid check digit)


def chromium_exe():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def deployment(bootstrap, tmp_path_factory):
    """The worker, its registry, the traffic, the requests, the hold — and the first report."""
    import subprocess  # noqa: F401 - the worker is a child process (WorkerProcess)

    tmp = tmp_path_factory.mktemp("report")
    keys = make_registry(tmp / "reg")
    saved = {k: os.environ.get(k) for k in ("IPANON_AUTHORITIES", "IPANON_STAFF")}
    os.environ["IPANON_AUTHORITIES"] = str(tmp / "reg" / "authorities")
    os.environ["IPANON_STAFF"] = str(tmp / "reg" / "staff")
    port = free_port()
    w = WorkerProcess(bootstrap, tmp / "w", f"r{os.getpid() % 100000}x{int(time.time()) % 100000}", [OP, "framsteget"],
                      ["--ttl-ms", "20000", "--web-port", str(port)])
    try:
        start_and_wait_for_desk(w, bootstrap)
        T = w.topics
        start_ms = int(time.time() * 1000) - 60_000
        t = int(time.time())
        records = []
        for i, (sub, addr) in enumerate(SUBS.items()):
            records.append(radius(sub, addr, "Start", t - 40 + i, f"S-{i}"))
        # alice's session ends now: past the 20 s TTL it expires, and the sweeper writes a tombstone
        records.append(radius("alice-c2ip@kund.example", SUBS["alice-c2ip@kund.example"], "Stop", t - 2, "S-0"))
        feed_radius(bootstrap, T.raw_radius, records, tmp)
        wait_for(lambda: _changelog(bootstrap, w, values=True) >= 3, timeout_s=120, what="the mappings written")

        ms = t * 1000
        pem = {n: sign_pem(tmp / "reg", keys, n) for n in ("police-t", "s1", "s2")}
        _, lek = request(keys, "police-t", 1, address=SUBS["bob-c2ip@kund.example"], from_ms=ms - 30_000, to_ms=ms)
        _, wrong = request(keys, "police-t", 2, basis="ipred-court-order", from_ms=ms - 30_000, to_ms=ms)
        _, ipred = request(keys, "ipred-t", 3, basis="ipred-court-order", from_ms=ms - 30_000, to_ms=ms)
        send(bootstrap, T.query_requests, [("police-t", lek), ("police-t", wrong), ("ipred-t", ipred)])
        wait_for(lambda: (r := replies(bootstrap, T.query_responses)) and {"police-t/1", "police-t/2", "ipred-t/3"} <= set(r),
                 timeout_s=120, what="the desk's replies")

        at = ("--prefix", T.prefix, "--bootstrap", bootstrap)
        add = cli("hold", "add", "--authority", "police-t", "--key", pem["police-t"], "--operator", OP,
                  "--ip", SUBS["carol-c2ip@kund.example"], "--from", str(ms - 60_000), "--to", str(ms + 60_000),
                  "--case", "PM-19-26", "--until", str(ms + 600_000), *at, "--wait", "90")
        assert add.returncode == 0, add.stderr + add.stdout
        hold_id = add.stdout.split()[1]
        for s in ("s1", "s2"):
            ok = cli("hold", "approve", hold_id, "--staff", s, "--key", pem[s], *at, "--wait", "60")
            assert ok.returncode == 0, ok.stderr + ok.stdout
        time.sleep(1.5)  # in effect for a measurable while
        rel = cli("hold", "release", hold_id, "--authority", "police-t", "--key", pem["police-t"], *at, "--wait", "60")
        assert rel.returncode == 0 and "released" in rel.stdout, rel.stderr

        wait_for(lambda: _changelog(bootstrap, w, tombstones=True) >= 1, timeout_s=120,
                 what="alice's mapping expired (a tombstone on the changelog)")
        # the desk anchors its records with a checkpoint after each batch: wait for the one after the release
        wait_for(lambda: _last_audit(bootstrap, T.audit)["type"] == "checkpoint", timeout_s=60, what="a checkpoint")
        out = tmp / "report"
        rc = report_cli(w, out, start_ms, port)
        assert rc.returncode == 0, rc.stderr + rc.stdout
        yield {"w": w, "out": out, "start_ms": start_ms, "port": port, "hold_id": hold_id, "tmp": tmp,
               "stdout": rc.stdout}
    finally:
        w.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def report_cli(w, out: Path, start_ms: int, port: Optional[int]):
    metrics = ("--metrics-url", f"http://127.0.0.1:{port}/metrics") if port else ()
    return cli("report", "compliance", "--operator", OP, "--from", str(start_ms), "--to", "now", "--out", str(out),
               "--bootstrap", w.bootstrap, "--prefix", w.topics.prefix, "--app-id", w.settings.app_id,
               "--operators", str(w.operators_dir), "--keys", str(w.keys), "--data-dir", str(w.dir / "data"),
               "--heartbeat-ms", str(w.settings.heartbeat_ms), "--ingest-lag-ms", str(w.settings.ingest_lag_ms),
               *metrics)


def _changelog(bootstrap, w, *, values=False, tombstones=False) -> int:
    from agents.kafka_io import read_all

    recs = [r for r in read_all(bootstrap, f"{w.settings.app_id}-mappings-changelog")
            if r.key and r.key.startswith(OP.encode() + b"|")]
    return sum(1 for r in recs if (values and r.value is not None) or (tombstones and r.value is None))


def _last_audit(bootstrap, topic) -> dict:
    from agents.kafka_io import read_all

    recs = read_all(bootstrap, topic)
    return json.loads(recs[-1].value) if recs else {"type": None}


def _load(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def test_report_figures_match_independent_sources(deployment, bootstrap):
    w, out = deployment["w"], deployment["out"]
    r = _load(out)
    assert r["operator"]["name"] == OP and r["verdict"]["kept"] is True, r["verdict"]
    assert "every promise kept" in deployment["stdout"]

    # promises quote the profile's policy sentence
    import tomllib

    prof = tomllib.loads((w.operators_dir / f"{OP}.toml").read_text())
    assert r["promises"][0]["source"] == prof["purposes"]["lawful_access"]["source"].strip()
    assert r["promises"][0]["promise_ms"] == 24 * 3600_000

    # bounds: the numbers `ipanon topics plan` prints for the same deployment (one source)
    plan = cli("topics", "plan", "--json", "--bootstrap", bootstrap, "--prefix", w.topics.prefix, "--app-id",
               w.settings.app_id, "--operators", str(w.operators_dir), "--heartbeat-ms", str(w.settings.heartbeat_ms),
               "--ingest-lag-ms", str(w.settings.ingest_lag_ms))
    assert plan.returncode == 0, plan.stderr
    planned = {(x["topic"], x["purpose"]): x["bound_ms"] for x in json.loads(plan.stdout)["rows"] 
               if x["operator"] == OP and x["purpose"] is not None and not x["topic"].endswith("-raw-op-framsteget")}
    topics = {(s["store"], s["purpose"]): s["bound_ms"] for s in r["bounds"]["stores"] if s["kind"] == "topic"}
    assert topics == planned  # topics were created with that plan, so actual configs give the same bounds
    worst = json.loads(plan.stdout)["operators"][OP]["worst_case_ms"]
    assert [s["bound_ms"] for s in r["bounds"]["stores"] if s["kind"] == "disk"] == [worst]
    assert all(s["ok"] and s["bound_ms"] <= s["promise_ms"] for s in r["bounds"]["stores"])

    # canaries: none built yet, said plainly, no figure
    assert r["canaries"] == {"measured": False, "measurements": [], "statement": r["canaries"]["statement"]}
    assert r["canaries"]["statement"].startswith("No canary measurements in this period")

    # lawful requests: by basis and outcome, read from the same trail the desk wrote
    # (police-t asking under IPRED is refused: the basis it asked under is the one counted)
    assert r["lawful_requests"]["by_basis"] == {
        "ipred-court-order": {"pending at the end of the period": 1, "refused: basis-not-allowed": 1},
        "lek-law-enforcement": {"answered: match": 1},
    }, r["lawful_requests"]
    assert r["lawful_requests"]["total"] == 3

    # the hold: one, released, in effect at least the 1.5 s we waited
    h = r["holds"]
    assert (h["count"], h["released"], h["active_at_end"], h["operator_not_recorded"]) == (1, 1, 0, 0), h
    assert h["longest_ms"] >= 1500

    # the audit chain: verified, and its head is the hash of the topic's last record
    from agents.kafka_io import read_all

    # (the desk may have appended a checkpoint since: the report's head is the record at its count)
    trail = [json.loads(x.value) for x in read_all(bootstrap, w.topics.audit)]
    a = r["audit"]
    assert a["ok"] is True and len(trail) >= a["records"] > 0
    last = trail[a["records"] - 1]
    assert a["head"] == last["hash"] and last["seq"] == a["records"] - 1
    assert a["last_checkpoint_seq"] == last["seq"] and last["type"] == "checkpoint"

    # epochs: the mapping key state on disk says which epochs are gone; recount them here
    # (the worker keeps destroying 1 s epochs: the file may be ahead of the report, never behind)
    data = (w.keys / f"{OP}.mapping.ratchet").read_bytes()
    origin, period = struct.unpack_from(">QQ", data)
    mapping = r["epochs"][0]
    oldest = mapping["oldest_live_epoch"]
    assert struct.unpack_from(">BQ", data, 16)[1] >= oldest and mapping["period_ms"] == period
    to_ms = r["period"]["to_ms"]
    expect = sum(1 for e in range(oldest) if deployment["start_ms"] <= origin + (e + 1) * period < to_ms)
    assert mapping["destroyed_in_period"] == expect > 0
    assert [x["epoch"] for x in mapping["listed"]] == [e for e in range(oldest)
                                                      if deployment["start_ms"] <= origin + (e + 1) * period < to_ms][:48]

    # expiries: alice's tombstone at least; the worker's counters were read
    assert r["expiries"]["tombstones_in_period"] >= 1
    assert r["expiries"]["worker"]["intervals_expired_total"] >= 1
    assert r["expiries"]["worker"]["epochs_shredded_total"]["lawful_access"] > 0

    # where the data is: the broker's own answer
    assert r["location"]["bootstrap"] == bootstrap and r["location"]["replication_factor"] == 1
    assert r["location"]["brokers"] and r["location"]["brokers"][0]["log_dirs"]

    # separation: checked on what was fed, and kept
    sp = r["separation"]
    assert sp["ok"] is True and sp["hit_count"] == 0
    assert sp["identity_fields"] == ["name", "postal_address", "personal_number"]
    scanned = {s["topic"]: s for s in sp["scanned"]}
    assert scanned[f"{w.topics.prefix}-bindings"]["records"] >= len(SUBS) + 1
    cl = scanned[f"{w.settings.app_id}-mappings-changelog"]
    assert cl["sealed_values"] >= 3 and cl["unsealed_values"] == 0 and cl["tombstones"] >= 1


def test_no_subscriber_or_address_in_either_file(deployment):
    out = deployment["out"]
    for name in ("report.json", "report.html", "manifest.json"):
        text = (out / name).read_text()
        for sub, addr in SUBS.items():
            assert sub not in text and sub.split("@")[0] not in text, (name, sub)
            assert addr not in text, (name, addr)
        assert "PM-19-26" not in text and "police-t" not in text and "ipred-t" not in text  # no case, no requester
    html = (out / "report.html").read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html)  # self-contained
    assert "<script" not in html


def test_verify_passes_then_fails_on_one_flipped_byte(deployment, tmp_path):
    w, out = deployment["w"], deployment["out"]
    pub = w.keys / f"{OP}.report.pub"
    assert oct(os.stat(w.keys / f"{OP}.report.key").st_mode & 0o777) == "0o600"
    ok = cli("report", "verify", str(out), "--key", str(pub))
    assert ok.returncode == 0, ok.stderr
    assert f"signed by {OP}'s report key" in ok.stdout and " at 20" in ok.stdout
    for name in ("report.json", "report.html"):
        copy = tmp_path / name.replace(".", "-")
        shutil.copytree(out, copy)
        data = bytearray((copy / name).read_bytes())
        i = len(data) // 2
        data[i] ^= 0x01
        (copy / name).write_bytes(bytes(data))
        bad = cli("report", "verify", str(copy), "--key", str(pub))
        assert bad.returncode == 1 and f"{name} was altered" in bad.stderr, (name, bad.stderr)
    # a report re-signed by another key (an attacker who rewrote the figures) fails against the trusted key
    forged = tmp_path / "forged"
    shutil.copytree(out, forged)
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from agents.commands.report import write_report

    write_report(forged, {**_load(out), "verdict": {"kept": True, "problems": []}},
                 ed25519.Ed25519PrivateKey.generate(), int(time.time() * 1000))
    bad = cli("report", "verify", str(forged), "--key", str(pub))
    assert bad.returncode == 1 and "does not verify with the trusted report key" in bad.stderr, bad.stderr
    # without a trusted key: a clear refusal, not a pass
    import subprocess
    import sys

    empty = tmp_path / "no-keys"
    empty.mkdir()
    nokey = subprocess.run([sys.executable, "-m", "agents.cli", "report", "verify", str(out)], cwd=REPO,
                           capture_output=True, text=True, env={**os.environ, "IPANON_KEYS": str(empty)})
    assert nokey.returncode == 2 and "--key" in nokey.stderr, nokey.stderr


@pytest.mark.skipif(chromium_exe() is None, reason="chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium_with_the_json_figures(deployment, tmp_path):
    import subprocess

    out = deployment["out"]
    r = _load(out)
    url = (out / "report.html").resolve().as_uri()
    base = [chromium_exe(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--hide-scrollbars"]
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=90)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    for sid in ("verdict", "promises", "bounds", "canaries", "epochs", "expiries", "holds", "requests", "audit",
                "location", "separation", "signature"):
        assert f'id="{sid}"' in page, sid
    figures = re.findall(r'<span data-figure="([^"]+)"[^>]*>([^<]*)</span>', page)
    assert len(figures) >= 25, figures
    import html as _html

    for path, text in figures:
        value = r
        for part in _html.unescape(path).split("."):
            value = value[int(part)] if isinstance(value, list) else value[part]
        if path == "verdict.kept":
            continue  # a word, compared below
        assert _html.unescape(text) == ("—" if value is None else str(value)), (path, text, value)
    assert "every promise kept" in page and 'data-value="true"' in page
    assert r["canaries"]["statement"] in _html.unescape(page)
    assert page.count('<svg class="chart"') == 1

    shot = tmp_path / "report.png"
    s = subprocess.run([*base, "--window-size=1100,1600", f"--screenshot={shot}", url], capture_output=True,
                       text=True, timeout=90)
    assert s.returncode == 0 and shot.exists(), s.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == 1100 and len(png) > 20_000
    if os.environ.get("IPANON_UPDATE_SCREENSHOT"):
        shutil.copy(shot, REPO / "docs" / "compliance-report.png")


def test_a_topic_reconfigured_after_start_turns_its_row_and_the_verdict_red(deployment):
    """``segment.ms`` raised on the bindings topic after the worker started: the report reads the
    topic's actual configs, so that store's bound exceeds the promise and the page says NOT KEPT."""
    from agents.kafka_admin import _alter, admin_client

    w, tmp = deployment["w"], deployment["tmp"]
    name = w.topics.bindings
    planned = w.plan.configs_for(name)
    admin = admin_client(w.bootstrap)
    try:
        # AlterConfigs replaces the topic's whole dynamic config: give the planned set, one value changed
        _alter(admin, name, {**planned, "segment.ms": str(7 * 86_400_000)})
        out = tmp / "report-segment"
        rc = report_cli(w, out, deployment["start_ms"], deployment["port"])
        assert rc.returncode == 0, rc.stderr
        assert "NOT KEPT" in rc.stdout and name in rc.stdout
        r = _load(out)
        bad = [s for s in r["bounds"]["stores"] if not s["ok"]]
        assert [s["store"] for s in bad] == [name] and bad[0]["bound_ms"] > bad[0]["promise_ms"] == 24 * 3600_000
        assert r["verdict"]["kept"] is False and len(r["verdict"]["problems"]) == 1
        row = (out / "report.html").read_text().split(f"<code>{name}</code>", 1)[1].split("</tr>", 1)[0]
        assert '<span class="notkept">NOT KEPT</span>' in row
    finally:
        _alter(admin, name, planned)
        admin.close()


def test_a_personal_number_next_to_an_address_fails_the_separation_check(deployment):
    w, tmp = deployment["w"], deployment["tmp"]
    t = int(time.time())
    feed_radius(w.bootstrap, w.topics.raw_radius, [radius(PNR_SUBSCRIBER, "100.64.77.9", "Start", t - 1, "P-1")], tmp)
    from agents.kafka_io import read_all

    wait_for(lambda: any(PNR_SUBSCRIBER.encode() in (r.value or b"") for r in read_all(w.bootstrap, w.topics.bindings)),
             timeout_s=60, what="the binding on the bindings topic")
    out = tmp / "report-pnr"
    rc = report_cli(w, out, deployment["start_ms"], deployment["port"])
    assert rc.returncode == 0, rc.stderr
    assert "NOT KEPT" in rc.stdout
    r = _load(out)
    sp = r["separation"]
    assert sp["ok"] is False and r["verdict"]["kept"] is False
    assert {(h["field"], h["topic"]) for h in sp["hits"]} == {("personal_number", f"{w.topics.prefix}-bindings")}
    page = (out / "report.html").read_text()
    assert "SEPARATION NOT KEPT" in page and 'class="notkept"' in page
    for name in ("report.json", "report.html"):
        text = (out / name).read_text()
        assert PNR_SUBSCRIBER not in text and "191212121212" not in text and "100.64.77.9" not in text


def test_a_stopped_sweeper_leaves_keys_past_due_and_the_report_says_so_in_red(deployment):
    """Last (it stops the worker): with nobody destroying epoch keys, the key state on disk still
    derives epochs whose destruction was due; the report counts them and turns red."""
    w, tmp = deployment["w"], deployment["tmp"]
    out = tmp / "report-stopped"
    before = report_cli(w, tmp / "report-running", deployment["start_ms"], None)
    assert before.returncode == 0, before.stderr
    assert _load(tmp / "report-running")["epochs"][0]["overdue"] == 0  # a running sweeper keeps up
    w.stop()
    stopped = time.time()
    # past the last key's due instant (1 s epochs + 4 s grace) and the report's allowance (2 sweeper periods + 10 s)
    time.sleep(16)
    rc = report_cli(w, out, deployment["start_ms"], None)
    assert rc.returncode == 0, rc.stderr
    r = _load(out)
    m = r["epochs"][0]
    assert m["overdue"] >= 1 and r["verdict"]["kept"] is False, (m, time.time() - stopped)
    assert any("past their destruction time" in p for p in r["verdict"]["problems"])
    assert 'data-figure="epochs.0.overdue" class="notkept"' in (out / "report.html").read_text()


def _canary_result(canary: int, store: str, end_ms: int, per_ms: int, promise_ms: int = 86_400_000) -> bytes:
    """A record exactly as the worker writes it (stream.canary.result_records; the worker's own
    path to the topic is driven in tests/e2e/test_canaries.py)."""
    return json.dumps({"v": 1, "operator": OP, "store": store, "canary": f"ipanon-canary-{OP}-{canary}@canary.invalid",
                       "inserted_at_ms": end_ms - 2000, "end_ms": end_ms, "gone_at_ms": end_ms + per_ms,
                       "persistence_ms": per_ms, "persistence_s": per_ms / 1000, "bound_ms": 86_000_000,
                       "bound_s": 86_000.0, "promise_ms": promise_ms, "promise_s": promise_ms / 1000}).encode()


def test_canary_results_over_the_period_render_count_max_p99_and_a_chart(deployment, bootstrap, tmp_path):
    """Measurements on <prefix>-canary-results in an hour before the other reports' period: the
    report over that hour shows per store count, max and p99 (nearest rank) as computed here by
    hand, in report.json and on the page chromium renders, with one chart point per canary; a
    measurement over the promise in the next hour turns the verdict NOT KEPT."""
    import html as _html
    import subprocess

    w = deployment["w"]
    t0 = deployment["start_ms"] - 3 * 3_600_000
    items = [(OP, _canary_result(i, "raw", t0 + i * 20_000, i * 1000)) for i in range(1, 121)]
    items += [(OP, _canary_result(i, "table", t0 + i * 20_000, per))
              for i, per in zip(range(1, 6), (50_500, 47_000, 52_000, 48_000, 49_000))]
    # gone 100 s into the next hour, 25 h after its end: over the 24 h promise
    items.append((OP, _canary_result(500, "changelog", t0 + 3_700_000 - 90_000_000, 90_000_000)))
    items.append((OP, b"not json"))
    send(bootstrap, f"{w.topics.prefix}-canary-results", items)

    out = tmp_path / "hour"
    rc = cli("report", "compliance", "--operator", OP, "--from", str(t0), "--to", str(t0 + 3_600_000),
             "--out", str(out), "--bootstrap", w.bootstrap, "--prefix", w.topics.prefix, "--app-id", w.settings.app_id,
             "--operators", str(w.operators_dir), "--keys", str(w.keys), "--data-dir", str(w.dir / "data"),
             "--heartbeat-ms", str(w.settings.heartbeat_ms), "--ingest-lag-ms", str(w.settings.ingest_lag_ms))
    assert rc.returncode == 0, rc.stderr + rc.stdout
    r = _load(out)
    c = r["canaries"]
    rows = {m["store"]: m for m in c["measurements"]}
    # by hand: raw 1..120 s sorted, p99 = the ⌈118.8⌉ = 119th → 119 s; table 47 48 49 50.5 52 s → 52 s both
    assert {s: (m["count"], m["max_ms"], m["p99_ms"]) for s, m in rows.items()} == {
        "raw": (120, 120_000, 119_000), "table": (5, 52_000, 52_000)}
    assert c["source"] == "topic" and c["canaries"] == 120 and c["unreadable_records"] == 1
    # (other tests of this module leave separation and key problems; none is the canaries')
    assert not [p for p in r["verdict"]["problems"] if "measured persistence" in p], r["verdict"]

    base = [chromium_exe(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    dom = subprocess.run([*base, "--dump-dom", (out / "report.html").resolve().as_uri()], capture_output=True,
                         text=True, timeout=90)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    figures = dict(re.findall(r'<span data-figure="(canaries\.[^"]+)"[^>]*>([^<]*)</span>', page))
    for i, m in enumerate(c["measurements"]):
        for k in ("count", "max", "p99"):
            assert _html.unescape(figures[f"canaries.measurements.{i}.{k}"]) == str(m[k]), (i, k)
    chart = re.search(r'<svg class="chart" id="canary-chart".*?</svg>', page, re.S)
    assert chart and chart[0].count('<circle class="canary"') == 120 and 'class="promise"' in chart[0]
    assert c["statement"] in _html.unescape(page)

    late = tmp_path / "next-hour"
    rc = cli("report", "compliance", "--operator", OP, "--from", str(t0 + 3_600_000), "--to", str(t0 + 2 * 3_600_000),
             "--out", str(late), "--bootstrap", w.bootstrap, "--prefix", w.topics.prefix, "--app-id",
             w.settings.app_id, "--operators", str(w.operators_dir), "--keys", str(w.keys), "--data-dir",
             str(w.dir / "data"), "--heartbeat-ms", str(w.settings.heartbeat_ms), "--ingest-lag-ms",
             str(w.settings.ingest_lag_ms))
    assert rc.returncode == 0 and "problem: changelog: measured persistence exceeds the promise" in rc.stdout, \
        rc.stderr + rc.stdout
    r2 = _load(late)
    assert [(m["store"], m["count"], m["verdict"]) for m in r2["canaries"]["measurements"]] == [("changelog", 1, "broken")]
    assert r2["verdict"]["kept"] is False
    assert "changelog: measured persistence exceeds the promise" in r2["verdict"]["problems"]
    assert 'fill="#b00000"><title>' in (late / "report.html").read_text()
