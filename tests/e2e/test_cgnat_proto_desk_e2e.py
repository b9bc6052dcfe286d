"""The legal desk's question names the flow's protocol, on the real local broker: two A10 CEF
port batches of the same public ports, one for TCP to alice's inside address and one for UDP to
bob's, go through ``ipanon produce`` and the worker; signed requests for public:port at T with
``proto`` 6, ``proto`` 17 and none come back sealed as alice, bob and ambiguous.

The reference is the scenario as written: which inside address each line names for which
protocol, and which subscriber RADIUS gives each inside address."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest

from agents.kafka_io import count, wait_group_caught_up
from stream import access
from stream.access import open_answer
from tests.conftest import wait_for
from tests.e2e.test_query_agent import cli, feed_radius, make_registry, radius, replies, send, start_and_wait_for_desk

pytestmark = pytest.mark.broker

PUBLIC = "99.99.99.12"
BY_PROTO = {6: ("alice@isp.example", "100.64.0.10", "TCP"), 17: ("bob@isp.example", "100.64.0.20", "UDP")}


def iso(t_ms: int) -> str:
    return datetime.fromtimestamp(t_ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")


def test_the_desk_request_names_the_protocol_of_a_per_protocol_port_batch(worker_factory, tmp_path, bootstrap,
                                                                           monkeypatch):
    keys = make_registry(tmp_path / "reg")
    monkeypatch.setenv("IPANON_AUTHORITIES", str(tmp_path / "reg" / "authorities"))
    monkeypatch.setenv("IPANON_STAFF", str(tmp_path / "reg" / "staff"))
    w = start_and_wait_for_desk(worker_factory(operators=("connect2ip",)), bootstrap)
    T = w.topics
    now_s = int(time.time())
    t_nat = (now_s - 600) * 1000
    feed_radius(bootstrap, T.raw_radius, [radius(sub, inside, "Start", now_s - 900, f"S-{p}")
                                          for p, (sub, inside, _) in BY_PROTO.items()], tmp_path)
    nat = tmp_path / "a10.log"
    nat.write_text("".join(
        f"{iso(t_nat + i * 1000)} 10.254.254.57 cgn0.thn2/cgn-demo  CEF:0|A10|CFW|6.0.0-P1|CGN 106|Nat Port Batch "
        f"Pool Allocated|5|proto={name} src={inside} sourceTranslatedAddress={PUBLIC} sourceTranslatedPort=22016 "
        f"cn3=22271 cn3Label=Last Nat Port\n" for i, (_, inside, name) in enumerate(BY_PROTO.values())))
    rc = cli("produce", "--format", "auto", "--operator", "connect2ip", "--topic", T.raw_nat, "--bootstrap",
             bootstrap, str(nat))
    assert rc.returncode == 0, rc.stderr
    wait_for(lambda: count(bootstrap, T.bindings) >= 4, timeout_s=120, what="4 bindings")
    assert wait_group_caught_up(bootstrap, f"{w.settings.app_id}-mapping", T.bindings, timeout_s=120)

    at = t_nat + 60_000
    asks = {"police-t/1": 6, "police-t/2": 17, "police-t/3": None}
    msgs = []
    for rid, proto in asks.items():
        number = rid.split("/")[1]
        body = access.request_body(authority="police-t", request_number=number, basis="lek-law-enforcement",
                                   case_ref=f"CASE-{number}", address=PUBLIC, port=22100, from_ms=at, to_ms=at + 1,
                                   issued_ms=int(time.time() * 1000), nonce=f"{number:0>32}", proto=proto)
        assert ("proto" in body) == (proto is not None)
        msgs.append(("police-t", access.sign_request(keys["police-t"][0], body)))
    send(bootstrap, T.query_requests, msgs)
    rep = wait_for(lambda: (r := replies(bootstrap, T.query_responses)) and all(
        any(m["type"] == "answer" for m in r.get(rid, ())) for rid in asks) and r, timeout_s=120,
        what="three answers")
    results = {rid: open_answer(keys["police-t"][1], next(m for m in rep[rid] if m["type"] == "answer"))["result"]
               for rid in asks}
    for rid, proto in asks.items():
        if proto is None:
            # a TCP and a UDP batch of these ports, two subscribers: never one of them
            assert results[rid] == {"ambiguous": 2}, results[rid]
        else:
            sub, inside, _ = BY_PROTO[proto]
            got = [(m["subscriber"], m["inside_ip"], m["ports"]) for m in results[rid]["matches"]]
            assert got == [(sub, inside, [22016, 22271])], (rid, results[rid])
