"""End-unknown answers survive every path a lookup can take: the CGNAT second hop on another
worker (``complete_hops``) and the query desk's answer kind (``stream.access``)."""

from __future__ import annotations

from agents.lookup_client import complete_hops
from stream.access import _answer_kind

LS = {"subscriber": "silent@isp.example", "from_ms": 0, "last_seen_ms": 10, "window_ms": 5}


def test_a_second_hop_past_the_window_is_end_unknown_not_an_error_nor_no_data():
    first = {"status": "ok", "holders": [], "hops": [{"inside_ip": "100.64.0.9", "from_ms": 0, "to_ms": 100,
                                                        "ports": [1024, 2047]}]}
    got = complete_hops(first, [{"status": "end-unknown", "holders": [], "end_unknown": [LS]}])
    assert got["status"] == "end-unknown" and got["holders"] == []
    assert got["end_unknown"] == [{**LS, "inside_ip": "100.64.0.9", "ports": [1024, 2047]}]
    # a confirmed holder on another hop still makes it ok, with the unknown one reported beside it
    two = {**first, "hops": first["hops"] * 2}
    got = complete_hops(two, [{"status": "end-unknown", "holders": [], "end_unknown": [LS]},
                              {"status": "ok", "holders": [{"subscriber": "b", "from_ms": 0, "to_ms": 5}]}])
    assert got["status"] == "ok" and [h["subscriber"] for h in got["holders"]] == ["b"] and got["end_unknown"]
    assert complete_hops(first, [{"status": "no-data", "holders": []}])["status"] == "no-data"
    assert complete_hops(first, [None])["status"] == "error"


def test_answer_kind_distinguishes_end_unknown_from_no_data_and_match():
    assert _answer_kind({"no_data": True}) == "no-data"
    assert _answer_kind({"end_unknown": [LS]}) == "end-unknown"
    assert _answer_kind({"matches": [LS], "end_unknown": [LS]}) == "match"
