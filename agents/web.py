"""The worker's status page: is every promise being kept, at a glance.

Served by the worker's own web server (Faust's, ``--web-port``, loopback only):

- ``GET /status`` — one self-contained HTML page (no external assets, no JavaScript): per
  operator the promise, the TTL, the compliance ratio with a bar and a sparkline, live / current
  / held mappings, the event rates, the last expiries; the audit trail's verification state;
  consumer lag; rejects by reason.  It refreshes itself every 5 s (``<meta http-equiv=refresh>``).
- ``GET /status.json`` — the same figures for machines and tests.

Figures come from ``agents.metrics.Metrics`` (so the page and ``/metrics`` never disagree); a
timer samples them every ``SAMPLE_S`` into a short in-memory history for the charts (rates
are differences between samples).  No label or cell ever shows an address, subscriber or key —
only operator names from the configuration and counts.

The audit trail (``<prefix>-audit``) is verified here too, every ``AUDIT_CHECK_S``, with
``stream.audit.verify_anchored`` from seq 0 (the topic keeps records for ever, so a missing
beginning is an attack) and the desk's signed checkpoints.  The result is ``AuditVerifier.state``,
which the metrics module exports as ``ipanon_audit_chain_ok``.
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
from collections import deque
from typing import Any, Callable, Mapping, Optional, Sequence

from stream.config import format_duration

log = logging.getLogger("ipanon.web")

SAMPLE_S = 2.0
HISTORY = 150            # samples kept (5 minutes at SAMPLE_S)
AUDIT_CHECK_S = 15.0


class Status:
    """Samples ``Metrics`` into a history and renders the page."""

    def __init__(self, metrics: Any, *, operators: Mapping[str, Any], counters: Mapping[str, int], app_id: str,
                 table: Any) -> None:
        """``metrics``: the worker's ``agents.metrics.Metrics`` (every figure comes from there or
        ``counters``, the worker's live counter dict); ``table``: the mapping table, read only
        (``active``, ``restored``, ``restore_stats``)."""
        self.m = metrics
        self.operators = operators
        self.counters = counters
        self.app_id = app_id
        self.table = table
        self.history: deque[dict] = deque(maxlen=HISTORY)
        self.started = time.time()

    # -- figures -----------------------------------------------------------------------------

    def sample(self) -> dict:
        """One snapshot of every figure the page shows (also the ``/status.json`` body)."""
        m = self.m
        now_ms, states = m.scan()
        c = dict(self.counters)
        ops = {}
        for name in sorted(self.operators):
            op = self.operators[name]
            pol = getattr(op, "policy", None)
            st = states.get(name)
            promise_ms = pol.lawful_access.promise_ms if pol is not None else None
            ops[name] = {
                "display_name": getattr(pol, "display_name", name) if pol is not None else name,
                "promise_ms": promise_ms,
                "statistics_promise_ms": pol.statistics.promise_ms if pol is not None else None,
                "ttl_ms": op.ttl_ms,
                "compliance_ratio": (st.ratio(now_ms, promise_ms) if st and promise_ms else 0.0),
                "oldest_age_ms": st.age_ms(now_ms) if st else 0,
                "live": st.intervals if st else 0,
                "current": st.current if st else 0,
                "held": st.held if st else 0,
                "keys": st.keys if st else 0,
                "overdue_ms": st.overdue_ms if st else 0,
            }
        lag = m.consumer_lag()
        return {
            "now_ms": now_ms,
            "app_id": self.app_id,
            "uptime_s": round(time.time() - self.started, 1),
            "operators": ops,
            "counters": {k: v for k, v in c.items() if k != "heartbeats"},
            "events_in": c.get("events_in", 0),
            "bindings": c.get("bindings", 0),
            "stats_out": c.get("stats_out", 0),
            "expired": c.get("expired", 0),
            "tombstones": c.get("tombstones", 0),
            "lookups": c.get("lookups", 0),
            "rejected": {k.split(":", 1)[1]: v for k, v in c.items() if k.startswith("rejected:")},
            "consumer_lag": sum(lag.values()),
            "partitions": sorted(getattr(self.table, "active", ())),
            # False while the table's assigned partitions are read back from the changelog: the
            # per-operator figures then cover only what is restored so far
            "table_restored": bool(getattr(self.table, "restored", True)),
            "table_restore": dict(getattr(self.table, "restore_stats", {}) or {}),
            "recent_expiries": [{"at_ms": int(t * 1000), "intervals": n} for t, n in m.recent_expiries[-8:]][::-1],
            "audit": m.audit_state(),
        }

    def rates(self) -> dict[str, float]:
        """Events per second over the history window (0 with fewer than two samples)."""
        h = list(self.history)
        if len(h) < 2:
            return {"events_in": 0.0, "stats_out": 0.0, "expired": 0.0}
        a, b = h[max(0, len(h) - 6)], h[-1]
        dt = max(1e-3, (b["now_ms"] - a["now_ms"]) / 1000)
        return {k: (b[k] - a[k]) / dt for k in ("events_in", "stats_out", "expired")}

    def tick(self) -> None:
        self.history.append(self.sample())

    # -- HTML --------------------------------------------------------------------------------

    def render(self) -> str:
        s = self.sample()
        hist = list(self.history) + [s]
        rates = self.rates()
        e = html.escape
        rows = []
        for name, o in s["operators"].items():
            ratio = o["compliance_ratio"]
            cls = "bad" if ratio >= 0.9 else ("warn" if ratio >= 0.75 else "ok")
            series = [h["operators"].get(name, {}).get("compliance_ratio", 0.0) for h in hist]
            live = [h["operators"].get(name, {}).get("live", 0) for h in hist]
            rows.append(
                f"<tr><td><b>{e(o['display_name'])}</b><br><small>{e(name)}</small></td>"
                f"<td>{e(format_duration(o['promise_ms']))}</td><td>{e(format_duration(o['ttl_ms']))}</td>"
                f"<td class='{cls}'><span class='num' data-ratio='{ratio:.4f}'>{ratio:.3f}</span>"
                f"{_bar(ratio)}<br><small>oldest {e(format_duration(o['oldest_age_ms']))} after its end</small></td>"
                f"<td>{_spark(series, lo=0.0, hi=1.0, marks=(0.9,))}</td>"
                f"<td class='num'>{o['live']}</td><td class='num'>{o['current']}</td><td class='num'>{o['held']}</td>"
                f"<td>{_spark(live)}</td>"
                f"<td class='num'>{e(format_duration(o['overdue_ms'])) if o['overdue_ms'] else '0'}</td></tr>")
        ev = [_rate(hist, i, "events_in") for i in range(1, len(hist))]
        audit = s["audit"]
        if audit is None:
            audit_html = "<span class='muted'>not checked (no audit trail on this deployment yet)</span>"
        elif audit.get("ok") and not audit.get("records"):
            audit_html = (f"<span class='ok'>empty</span> — the trail has no records yet "
                          f"(checked {_ago(s['now_ms'], audit.get('checked_ms'))})")
        elif audit.get("ok"):
            audit_html = (f"<span class='ok'>verified</span> — {audit.get('records', 0)} records, "
                          f"checked {_ago(s['now_ms'], audit.get('checked_ms'))}")
        elif audit.get("ok") is None:
            audit_html = f"<span class='muted'>{e(str(audit.get('detail', 'not checked')))}</span>"
        else:
            audit_html = f"<span class='bad'>BROKEN</span> — {e(str(audit.get('detail', '')))}"
        expiries = "".join(f"<li>{_ago(s['now_ms'], x['at_ms'])}: {x['intervals']} interval(s)</li>"
                           for x in s["recent_expiries"]) or "<li class='muted'>none since start</li>"
        rejected = "".join(f"<li>{e(k)}: {v}</li>" for k, v in sorted(s["rejected"].items())) \
            or "<li class='muted'>none</li>"
        return PAGE.format(
            app=e(s["app_id"]), uptime=e(format_duration(int(s["uptime_s"] * 1000))),
            partitions=e(", ".join(map(str, s["partitions"])) or "none yet")
            + ("" if s["table_restored"] else " · <b class='warn'>restoring the table from its changelog: "
               "figures below are partial</b>"),
            rows="".join(rows), ev_rate=f"{rates['events_in']:.1f}", stats_rate=f"{rates['stats_out']:.1f}",
            ev_chart=_spark(ev, width=360, height=48), events_in=s["events_in"], stats_out=s["stats_out"],
            expired=s["expired"], tombstones=s["tombstones"], lookups=s["lookups"], lag=s["consumer_lag"],
            audit=audit_html, expiries=expiries, rejected=rejected,
            generated=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(s["now_ms"] / 1000)))


def _rate(hist: Sequence[dict], i: int, key: str) -> float:
    a, b = hist[i - 1], hist[i]
    dt = (b["now_ms"] - a["now_ms"]) / 1000
    return (b[key] - a[key]) / dt if dt > 0 else 0.0


def _ago(now_ms: int, at_ms: Optional[int]) -> str:
    if not at_ms:
        return "never"
    return f"{format_duration(max(0, now_ms - at_ms))} ago" if now_ms - at_ms >= 1000 else "just now"


def _bar(ratio: float) -> str:
    w = max(0.0, min(1.0, ratio)) * 100
    return (f"<svg class='bar' width='100' height='8' viewBox='0 0 100 8' role='img' aria-label='ratio'>"
            f"<rect width='100' height='8' fill='#eee'/><rect width='{w:.1f}' height='8' class='fill'/>"
            f"<line x1='90' x2='90' y1='0' y2='8' stroke='#c00'/></svg>")


def _spark(values: Sequence[float], *, width: int = 120, height: int = 28, lo: Optional[float] = None,
           hi: Optional[float] = None, marks: Sequence[float] = ()) -> str:
    """A tiny inline SVG line chart (no JavaScript, no external assets)."""
    vals = list(values)[-HISTORY:]
    if not vals:
        vals = [0.0]
    lo = min(vals) if lo is None else lo
    hi = max(vals) if hi is None else max(hi, max(vals))
    span = (hi - lo) or 1.0
    n = len(vals)

    def xy(i: int, v: float) -> str:
        x = (i / (n - 1) * (width - 2) + 1) if n > 1 else width / 2
        y = height - 1 - (v - lo) / span * (height - 2)
        return f"{x:.1f},{y:.1f}"

    pts = " ".join(xy(i, v) for i, v in enumerate(vals))
    lines = "".join(f"<line x1='0' x2='{width}' y1='{height - 1 - (mk - lo) / span * (height - 2):.1f}' "
                    f"y2='{height - 1 - (mk - lo) / span * (height - 2):.1f}' stroke='#c00' stroke-dasharray='2,2'/>"
                    for mk in marks)
    return (f"<svg class='spark' width='{width}' height='{height}' viewBox='0 0 {width} {height}' role='img'>"
            f"<rect width='{width}' height='{height}' fill='#fafafa'/>{lines}"
            f"<polyline fill='none' stroke='#2a6' stroke-width='1.5' points='{pts}'/></svg>")


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>ipanon — {app}</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:1.2em;color:#222}}
h1{{font-size:1.3em;margin:0 0 .2em}} h2{{font-size:1.05em;margin:1.2em 0 .4em}}
table{{border-collapse:collapse}} td,th{{border-bottom:1px solid #ddd;padding:.35em .6em;text-align:left;vertical-align:middle}}
th{{background:#f4f4f4;font-weight:600}} .num{{text-align:right;font-variant-numeric:tabular-nums}}
.ok{{color:#186a3b}} .warn{{color:#9a6700}} .bad{{color:#b00020;font-weight:700}} .muted{{color:#888}}
.fill{{fill:#2a6}} td.warn .fill{{fill:#d4a017}} td.bad .fill{{fill:#b00020}}
.cards{{display:flex;gap:1em;flex-wrap:wrap}} .card{{border:1px solid #ddd;border-radius:6px;padding:.5em .8em;min-width:9em}}
.card b{{font-size:1.3em;display:block}} ul{{margin:.2em 0;padding-left:1.2em}}
</style></head><body>
<h1>ipanon worker <code>{app}</code></h1>
<div class="muted">up {uptime} · table partitions {partitions} · {generated}</div>
<h2>Promises (raw IP↔subscriber mappings, purpose lawful_access)</h2>
<table id="operators"><tr><th>operator</th><th>promise</th><th>TTL</th><th>compliance ratio<br><small>oldest mapping age ÷ promise, must stay &lt; 1</small></th>
<th>ratio history</th><th>live</th><th>current</th><th>held</th><th>live history</th><th>overdue</th></tr>
{rows}</table>
<h2>Flow</h2>
<div class="cards">
<div class="card">events in<b id="events-in">{events_in}</b>{ev_rate}/s</div>
<div class="card">stats out<b id="stats-out">{stats_out}</b>{stats_rate}/s</div>
<div class="card">expired<b id="expired">{expired}</b>tombstones {tombstones}</div>
<div class="card">lookups<b id="lookups">{lookups}</b></div>
<div class="card">consumer lag<b id="lag">{lag}</b>records</div>
</div>
<p>events in per second {ev_chart}</p>
<h2>Audit trail</h2><p id="audit">{audit}</p>
<div class="cards"><div class="card"><h2>Last expiries</h2><ul id="expiries">{expiries}</ul></div>
<div class="card"><h2>Rejected, by reason</h2><ul id="rejected">{rejected}</ul></div></div>
</body></html>
"""


class AuditVerifier:
    """Reads the audit topic and verifies the chain (``stream.audit.verify``) periodically."""

    def __init__(self, topic: str, *, bootstrap: str, security: Any, clock: Callable[[], int],
                 anchor_public: Any = None, checkpoint_ms: int = 3_600_000) -> None:
        """``topic``: the audit topic; ``bootstrap``/``security``: the worker's own Kafka
        settings; ``anchor_public``: the desk's checkpoint key (None: the chain alone
        is verified), ``checkpoint_ms`` how often the desk writes a checkpoint."""
        self.topic = topic
        self.bootstrap = bootstrap
        self.security = security
        self.clock = clock
        self.anchor_public = anchor_public
        self.checkpoint_ms = checkpoint_ms
        #: the last check's result (None before the first), read by the metrics
        self.state: Optional[dict] = None

    def check(self) -> dict:
        """Blocking (kafka-python); run in an executor."""
        from stream.audit import AuditError, verify, verify_anchored

        from .kafka_admin import admin_client
        from .kafka_io import read_all

        topic = self.topic
        now_ms = self.clock()
        security = self.security
        admin = admin_client(self.bootstrap, security=security)
        try:
            exists = topic in set(admin.list_topics())
        finally:
            admin.close()
        if not exists:
            return {"ok": None, "records": 0, "checked_ms": now_ms, "detail": "no audit topic"}
        recs = read_all(self.bootstrap, topic, timeout_s=5.0, security=security)
        if not recs:
            return {"ok": True, "records": 0, "checked_ms": now_ms, "detail": "empty trail"}
        key = self.anchor_public
        if key is not None:  # the whole trail from seq 0, with the desk's signed checkpoints
            period = int(self.checkpoint_ms)
            r = verify_anchored([x.value for x in recs], offsets=[x.offset for x in recs], public_key=key,
                                now_ms=now_ms, max_unanchored_ms=int(2 * AUDIT_CHECK_S * 1000),
                                max_checkpoint_age_ms=2 * period + 60_000)
            return {"ok": r.ok, "records": len(recs), "checked_ms": now_ms, "detail": r.detail,
                    "problem": r.problem, "checkpoint_age_ms": r.checkpoint_age_ms}
        try:
            head = verify([r.value for r in recs], offsets=[r.offset for r in recs])
            return {"ok": True, "records": len(recs), "checked_ms": now_ms, "detail": f"head {head[:12]}…"}
        except AuditError as e:
            return {"ok": False, "records": len(recs), "checked_ms": now_ms, "detail": f"{e.kind} at offset {e.offset}"}

    async def run(self) -> None:
        try:
            state = await asyncio.get_running_loop().run_in_executor(None, self.check)
        except Exception as e:  # the broker may be briefly unavailable: report, retry next time
            log.warning("audit verification could not run: %s", type(e).__name__)
            return
        self.state = state
        if state.get("ok") is False:
            log.error("audit trail verification FAILED: %s", state["detail"])


def serve(app: Any, status: Status, verifier: AuditVerifier) -> None:
    """In a worker: ``/status``, ``/status.json``, the sampler and the audit verifier's timer."""

    @app.timer(SAMPLE_S, name="ipanon.status-sampler")
    async def sampler() -> None:
        try:
            status.tick()
        except Exception:
            log.exception("status: sample failed")

    @app.timer(AUDIT_CHECK_S, name="ipanon.audit-verifier", on_leader=False)
    async def audit_check() -> None:
        await verifier.run()

    @app.page("/status", name="ipanon-status")
    async def status_view(web: Any, request: Any) -> Any:
        return web.html(status.render())

    @app.page("/status.json", name="ipanon-status-json")
    async def status_json(web: Any, request: Any) -> Any:
        s = status.sample()
        s["rates"] = status.rates()
        return web.json(s)
