"""Statistics on the real broker: the leak test over every seed operator profile fed
real-format data, and consent grant/withdraw end to end.

Both run ``ipanon worker`` as a child process (``worker_factory``) and talk to it only through
Kafka and the CLI, like users do.
"""

from __future__ import annotations

import io
import ipaddress
import json
import re
import time
from pathlib import Path

import pytest

from agents.cli import main as cli
from agents.kafka_io import count, read_all
from stream.config import parse_operator
from stream.parse import get_format
from tests.conftest import REPO, wait_for

pytestmark = pytest.mark.broker

SAMPLES = REPO / "tests" / "data" / "samples"
SEEDS = ("connect2ip", "framsteget", "hektor", "junet", "op003")
TWENTY_YEARS_MS = 20 * 365 * 86_400_000


def _test_profile(name: str, address: str) -> tuple[str, str]:
    """A k=2, 10-second-bucket copy of Framsteget with another address scheme, so aggregates of
    current data close during the test and carry cells worth scanning."""
    text = (REPO / "config" / "operators" / "framsteget.toml").read_text()
    text = re.sub(r'^name = .*$', f'name = "{name}"', text, count=1, flags=re.M)
    text = re.sub(r'^k = .*$', 'k = 2', text, flags=re.M)
    text = re.sub(r'^bucket = .*$', 'bucket = "10s"', text, flags=re.M)
    text = re.sub(r'^address = .*$', f'address = "{address}"', text, flags=re.M)
    return name, text


def _replayable(name: str, text: str = None) -> tuple[str, str]:
    """The profile with a 20-year lawful-access promise: the worker dead-letters records whose
    mapping is past its operator's promise (``too-late``), and the real data is from 2011-2026.
    Nothing this test checks depends on that promise."""
    text = text or (REPO / "config" / "operators" / f"{name}.toml").read_text()
    text, n = re.subn(r'(\[purposes\.lawful_access\]\s*\npromise = )"[^"]*"', r'\1"7300d"', text)
    assert n == 1, name
    return name, text


def _feeds(tmp_path: Path) -> list[tuple[str, list[Path]]]:
    """Real-format inputs: FreeRADIUS detail made by radclient, the FreeRADIUS/Kea/NAT samples,
    Kea lease CSV made by kea-dhcp4/perfdhcp.  The 6WIND sample line carries an RFC 3164 header
    without a year (the worker dead-letters it: no receive time); the same message is also fed
    under an RFC 5424 header so a 6WIND binding does reach the statistics."""
    nat = (SAMPLES / "nat-syslog.txt").read_text().splitlines()
    juniper = tmp_path / "juniper.txt"
    juniper.write_text("\n".join(l for l in nat if "fp-cgnat" not in l) + "\n")
    sixwind = tmp_path / "sixwind.txt"
    msg = next(l for l in nat if "fp-cgnat" in l)
    body = msg.split(": ", 1)[1]
    sixwind.write_text(msg + "\n" + f"<134>1 2024-06-11T08:03:09Z vsr fp-cgnat 4269 - - {body}\n")
    return [
        ("radius-detail", [REPO / "tests" / "data" / "freeradius" / "detail", REPO / "tests" / "data" / "freeradius" / "sample-detail"]),
        ("kea-csv", [REPO / "tests" / "data" / "kea" / "kea-leases4.csv"]),
        ("kea-legal", [SAMPLES / "kea-legal.txt"]),
        ("juniper", [juniper]),
        ("sixwind", [sixwind]),
    ]


def _parse_like_the_worker(feeds, operator, policy):
    """The worker's ingest: the profile's RADIUS identity attribute names the subscriber."""
    out = []
    for fmt, paths in feeds:
        f = get_format(fmt)
        for p in paths:
            for rec in f.frame(open(p, "rb")):
                try:
                    out.extend(f.parse(rec, operator=operator, identity=policy.identity.radius_attribute))
                except Exception:
                    pass  # the worker dead-letters it
    return out


def _needles(bindings, truncate=(24, 48)):
    """Every raw identifier fed, as (kind, text).  An address equal to its own /24 or /48 is left
    out: a truncate policy discloses exactly that network on purpose (connect2ip)."""
    texts, hexes = set(), set()
    for b in bindings:
        addrs = []
        if b.ip is not None:
            addrs.append(b.ip.network_address)
        if b.inside_ip is not None:
            addrs.append(b.inside_ip)
        for a in addrs:
            n = truncate[0] if a.version == 4 else truncate[1]
            if ipaddress.ip_network((a, n), strict=False).network_address == a:
                continue
            texts.add(str(a))
            if a.version == 6:
                texts.add(a.exploded)
        for v in (b.subscriber, b.hwaddr, b.client_id, b.duid, b.circuit_id, b.remote_id, b.session):
            if v and len(v) >= 4:
                texts.add(v)
                compact = re.sub(r"[^0-9a-f]", "", v.lower())
                if len(compact) >= 12 and re.fullmatch(r"[0-9a-fA-F:.\-]+", v):
                    hexes.add(compact)   # MAC/DUID/client id written without separators
    return texts, hexes


def _hits(blob: bytes, texts, hexes) -> list[str]:
    s = blob.decode("utf-8", errors="replace")
    low = s.lower()
    found = []
    for t in texts:
        if re.search(r"(?<![0-9A-Za-z])" + re.escape(t.lower()) + r"(?![0-9A-Za-z])", low):
            found.append(t)
    found += [h for h in hexes if h in low]
    return found


def _produce(bootstrap, w, fmt, operator, paths):
    topic = w.topics.raw_by_family[get_format(fmt).family]
    assert cli(["produce", "--format", fmt, "--operator", operator, "--topic", topic, "--bootstrap", bootstrap,
                *map(str, paths)]) == 0


def _seed(w, op) -> bytes:
    return bytes.fromhex((w.keys / f"{op}.key").read_text().strip())


def test_leak_every_seed_profile_real_data_zero_raw_identifiers(worker_factory, tmp_path, bootstrap, monkeypatch):
    from agents.stats_agent import record_ids

    monkeypatch.setenv("IPANON_STATS_LATE_MS", str(TWENTY_YEARS_MS))   # the real data is from 2011-2026
    monkeypatch.setenv("IPANON_AGGREGATES_GRACE_MS", "0")
    monkeypatch.setenv("IPANON_STATS_IDLE_MS", "2000")
    tests = [_test_profile("lkdet", "ipcrypt-det"), _test_profile("lkcpan", "cryptopan")]
    w = worker_factory(operators=tuple(_replayable(*op) if isinstance(op, tuple) else _replayable(op)
                                       for op in (*SEEDS, *tests)))
    policies = {op: parse_operator((w.operators_dir / f"{op}.toml").read_text(), file=f"{op}.toml")
                for op in (*SEEDS, "lkdet", "lkcpan")}
    feeds = _feeds(tmp_path)
    fed = {op: _parse_like_the_worker(feeds, op, pol) for op, pol in policies.items()}

    # consent for every subscriber of the consent-required seeds, so their records flow too
    w.start()
    for op, pol in policies.items():
        if pol.statistics.consent_required:
            subs = sorted({b.subscriber for b in fed[op] if b.subscriber and b.kind != "nat"})
            with monkeypatch.context() as m:   # ids on stdin, as an operator would pipe them
                m.setattr("sys.stdin", io.StringIO("\n".join(subs) + "\n"))
                assert cli(["consent", "grant", "--operator", op, "--keys", str(w.keys), "--bootstrap", bootstrap,
                            "--topic-prefix", w.topics.prefix, "-"]) == 0
    for op in policies:
        for fmt, paths in feeds:
            _produce(bootstrap, w, fmt, op, paths)

    expected = set()
    for op, pol in policies.items():
        bs = [b for b in fed[op] if b.action != "reset"]
        if pol.statistics.consent_required:
            bs = [b for b in bs if b.kind != "nat" and b.subscriber]
        expected |= set(record_ids(_seed(w, op), pol, bs))
    assert len(expected) > 300
    try:
        wait_for(lambda: count(bootstrap, w.topics.stats) >= len(expected), timeout_s=240, what="every stats record")
    except AssertionError:
        got = [json.loads(r.value) for r in read_all(bootstrap, w.topics.stats)]
        per = {}
        for r in got:
            per[(r["operator"], r["kind"])] = per.get((r["operator"], r["kind"]), 0) + 1
        exp = {}
        for op, pol in policies.items():
            for b in fed[op]:
                if b.action != "reset":
                    exp[(op, b.kind)] = exp.get((op, b.kind), 0) + 1
        raise AssertionError(f"got {len(got)} of {len(expected)}: {sorted(per.items())} expected ~{sorted(exp.items())}")
    wait_for(lambda: {json.loads(r.value)["operator"] for r in read_all(bootstrap, w.topics.aggregates)}
             >= {"lkdet", "lkcpan", "connect2ip"}, timeout_s=120, what="aggregates of the test profiles")
    time.sleep(3)  # let any stragglers land before scanning (only ever adds records to scan)

    stats = read_all(bootstrap, w.topics.stats)
    aggs = read_all(bootstrap, w.topics.aggregates)
    recs = [json.loads(r.value) for r in stats]
    assert {r["id"] for r in recs} == expected                       # deterministic ids, nothing missing/extra
    assert {r["operator"] for r in recs} == set(policies)
    assert {r["kind"] for r in recs} == {"radius", "dhcp", "nat"}
    cells = [json.loads(r.value) for r in aggs]
    for c in cells:
        assert c["subscribers"] >= policies[c["operator"]].statistics.k   # k-anonymity holds
    texts, hexes = set(), set()
    for op in policies:
        t, h = _needles(fed[op])
        texts |= t
        hexes |= h
    assert len(texts) > 100 and {"kund-0001@isp.example", "10.99.0.100", "3002::1", "02:00:5e:10:00:01"} <= texts
    blob = b"\n".join((r.key or b"") + b"\t" + (r.value or b"") for r in [*stats, *aggs])
    assert _hits(blob, texts, hexes) == []
    # the scan itself finds what it looks for (a scan that cannot fail proves nothing)
    probe = b'{"x":"kund-0001@isp.example","y":"3002::1","z":"02005e100001"}'
    assert {"kund-0001@isp.example", "3002::1", "02005e100001"} <= set(_hits(probe, texts, hexes))
    consent = b"".join((r.key or b"") + (r.value or b"") for r in read_all(bootstrap, w.topics.consent))
    assert consent and _hits(consent, texts, hexes) == []


def _radius(sub, action, at_s, ip="100.64.77.1", session="S-1"):
    return {"User-Name": sub, "Acct-Status-Type": action, "Acct-Session-Id": session,
            "NAS-IP-Address": "192.0.2.10", "Framed-IP-Address": ip, "Event-Timestamp": at_s}


def test_consent_grant_and_withdraw_end_to_end(worker_factory, tmp_path, bootstrap, monkeypatch):
    """Junet requires consent.  A's records before the grant are dropped, after it present, after
    the withdrawal dropped again; B (granted throughout) marks progress on the same address, so the
    same partition: when B's record appears, A's earlier one was already processed.  Connect2IP
    needs no consent: A's record there flows throughout."""
    from stream.keyring import Keyring, epoch_of
    from stream.stats import SUBSCRIBER_DOMAIN

    monkeypatch.setenv("IPANON_STATS_LATE_MS", str(86_400_000))
    w = worker_factory(operators=("junet", "connect2ip")).start()
    A, B = "kund-a@isp.example", "kund-b@isp.example"
    now = int(time.time())
    step = iter(range(1, 1000))
    n = [0]

    def send(op, *recs):
        n[0] += 1
        f = tmp_path / f"feed{n[0]}.jsonl"
        f.write_text("".join(json.dumps(r) + "\n" for r in recs))
        _produce(bootstrap, w, "radius-json", op, [f])

    def consent(action, sub):
        assert cli(["consent", action, "--operator", "junet", "--keys", str(w.keys), "--bootstrap", bootstrap,
                    "--topic-prefix", w.topics.prefix, sub]) == 0

    def stats():
        return [json.loads(r.value) for r in read_all(bootstrap, w.topics.stats)]

    ring = Keyring.create("junet", _seed(w, "junet"))
    e = epoch_of(now * 1000, 7 * 86_400_000)
    pa, pb = (ring.hmac(e).pseudonym(SUBSCRIBER_DOMAIN + s) for s in (A, B))

    def of(sub_pseudonym, op="junet"):
        return [r for r in stats() if r["operator"] == op and r["subscriber"] == sub_pseudonym]

    def marker():
        k = next(step)
        send("junet", _radius(B, "Interim-Update", now + k, session="S-B"))
        wait_for(lambda: len(of(pb)) >= k, timeout_s=120, what=f"marker {k}")

    consent("grant", B)
    marker()                                                  # the worker follows the consent topic

    send("junet", _radius(A, "Start", now + 100, session="S-A"))
    send("connect2ip", _radius(A, "Start", now + 100, session="S-A"))
    marker()
    assert of(pa) == []                                       # before the grant: dropped
    wait_for(lambda: len([r for r in stats() if r["operator"] == "connect2ip"]) == 1, timeout_s=60,
             what="connect2ip record (no consent needed)")

    consent("grant", A)
    send("junet", _radius(A, "Interim-Update", now + 200, session="S-A"))
    marker()
    got = of(pa)
    assert [r["action"] for r in got] == ["update"] and got[0]["epoch"] == e   # after the grant: present

    consent("withdraw", A)
    send("junet", _radius(A, "Stop", now + 300, session="S-A"))
    marker()
    marker()                                                  # a second round: earlier sends have landed
    assert [r["action"] for r in of(pa)] == ["update"]        # after the withdrawal: dropped again

    raw = b"".join((r.key or b"") + (r.value or b"") for r in read_all(bootstrap, w.topics.consent))
    assert A.encode() not in raw and B.encode() not in raw and raw.count(b'"state":"withdrawn"') == 1
