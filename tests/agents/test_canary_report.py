"""The compliance report's canary section is read from the worker's canary gauges
(``ipanon report compliance --metrics-url``): healthy figures are measured and kept; a canary
held past the promise makes the report's verdict NOT KEPT."""

from __future__ import annotations

import http.server
import threading

import pytest

from agents.commands.report import CANARY_SOURCE, _canaries
from stream import compliance as C


def serve(text: str):
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}/metrics"


def gauges(op: str, table_s: float, bindings_s: float) -> str:
    out = []
    for store, v, b in (("table", table_s, 51.0), ("bindings", bindings_s, 60.0)):
        out += [f'ipanon_canary_persistence_seconds{{operator="{op}",store="{store}"}} {v}',
                f'ipanon_canary_bound_seconds{{operator="{op}",store="{store}"}} {b}',
                f'ipanon_canary_promise_seconds{{operator="{op}",store="{store}"}} 60.0']
    # another operator's figures never leak into this operator's report
    out.append('ipanon_canary_persistence_seconds{operator="other",store="raw"} 9999.0')
    return "\n".join(out) + "\n"


@pytest.fixture
def metrics():
    servers = []

    def make(text):
        srv, url = serve(text)
        servers.append(srv)
        return url

    yield make
    for s in servers:
        s.shutdown()


def test_no_metrics_url_means_no_measurement():
    assert _canaries(None, "op") == C.canary_section()


def test_healthy_canaries_are_measured_and_kept(metrics):
    sec = _canaries(metrics(gauges("op", 50.003, 48.2)), "op")
    assert sec["measured"] is True and sec["statement"] == CANARY_SOURCE
    assert [(m["store"], m["max_ms"], m["bound_ms"], m["promise_ms"], m["verdict"]) for m in sec["measurements"]] == [
        ("table", 50003, 51000, 60000, "kept"), ("bindings", 48200, 60000, 60000, "kept")]


def test_a_canary_held_past_the_promise_is_not_kept(metrics):
    sec = _canaries(metrics(gauges("op", 50.0, 62.817)), "op")
    rows = {m["store"]: m for m in sec["measurements"]}
    assert rows["bindings"]["verdict"] == "broken" and rows["table"]["verdict"] == "kept"
    # the report's verdict rule (stream.compliance.build_report) counts it as a problem
    assert [m["store"] for m in sec["measurements"] if m["max_ms"] > m["promise_ms"]] == ["bindings"]


def test_the_report_page_shows_the_canaries_and_turns_red_past_the_promise(metrics):
    from tests.unit.test_compliance import _report

    kept = _report(canaries=_canaries(metrics(gauges("connect2ip", 50.0, 48.2)), "connect2ip"))
    page = C.render_html(kept)
    assert kept["verdict"]["kept"] is True and "No canary measurements" not in page
    assert 'data-figure="canaries.measurements.0.max"' in page and "every promise kept" in page
    broken = _report(canaries=_canaries(metrics(gauges("connect2ip", 50.0, 62.817)), "connect2ip"))
    assert broken["verdict"]["kept"] is False
    assert broken["verdict"]["problems"] == ["bindings: measured persistence exceeds the promise"]
    assert "NOT KEPT" in C.render_html(broken)
