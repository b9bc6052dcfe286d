"""The compliance report an operator files with its DPO: figures, page, signature.

Pure: the shell (``agents/commands/report.py``) reads the topics, the key state and the broker
and passes plain values in; everything here decides and formats, takes time as an argument and
does no I/O.  One report covers one operator and one period ``[from_ms, to_ms)``.

What each figure answers to (docs/compliance.md says it in a DPO's words):

- promises and computed bounds per store — CJEU Tele2 (C-203/15) §122: data destroyed
  irreversibly at the end of the period.  The bounds are ``stream.policy``'s, the same numbers
  ``ipanon topics plan`` prints (one source), with each topic's *actual* configs read from the
  broker in place of the planned ones;
- erasure canaries — *measured* persistence per store over the period: count, max and p99
  (nearest rank) from the ``<prefix>-canary-results`` topic, with a chart
  (``canary_results_section``); the worker's current gauges when the topic has none; with no
  measurement the section says so and carries no figure (``canary_section``);
- key epochs destroyed, expiries done — the destruction itself;
- holds, lawful requests by basis and outcome, the audit chain — who asked, on what basis, what
  happened, with no identity (``stream.audit`` records carry none);
- where the data is — Tele2 §122 (kept in the EU): broker, data and key directories, the
  replication factor read from the broker;
- separation — C-470/21: addresses kept apart from civil identity.  *Checked*: the bindings
  topic and the table's changelog are scanned for the identity fields the profile declares
  (``[separation] identity_fields``, ``IdentityScanner``), and the report names what was scanned.

Signature: ``manifest`` lists the SHA-256 of ``report.json`` and ``report.html``; the operator's
report key (Ed25519) signs ``REPORT_DOMAIN + canonical(manifest)``; ``verify_files`` checks both.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Optional, Sequence

from .audit import canonical
from .config import OperatorPolicy, format_duration, parse_duration
from .errors import ConfigError, IpanonError

REPORT_VERSION = 1
REPORT_DOMAIN = b"ipanon-compliance-report-v1\x00"
REPORT_FILES = ("report.json", "report.html")
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "report.sig"
#: epochs listed one by one in the report; the rest are counted
MAX_LISTED_EPOCHS = 48

NO_CANARIES = ("No canary measurements in this period. No erasure canary (a synthetic binding injected "
               "through the worker and traced until gone) was recorded gone in the period, and no worker's "
               "canary figures were read, so every bound in this report is computed from configuration, "
               "none is measured.")


class ReportError(IpanonError):
    """A report that cannot be built, or a report directory that does not verify."""


# -- time -----------------------------------------------------------------------------------


def iso(ms: Optional[int]) -> Optional[str]:
    """UTC ISO 8601 to the second (``2026-12-06T01:02:03Z``); None stays None."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_instant(text: str, *, now_ms: int, where: str) -> int:
    """``--from``/``--to``: ``now``, ``now-7d`` (before now), an ISO 8601 date or date
    and time (UTC unless it names a zone), or Unix milliseconds."""
    s = str(text).strip()
    if s == "now":
        return now_ms
    rel = re.fullmatch(r"(?:now)?-(\S+)", s)
    if rel:
        return now_ms - parse_duration(rel.group(1), where=where)
    if re.fullmatch(r"\d{12,}", s):
        return int(s)
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not a time; use 2026-11-01, 2026-11-01T06:00Z, "
                          f"now, now-30d or Unix milliseconds") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


# -- promises and bounds --------------------------------------------------------------------


def promises(op: OperatorPolicy) -> list[dict[str, Any]]:
    """The operator's promises, each quoting the policy sentence the profile was written from."""
    la, st = op.lawful_access, op.statistics
    out = [{"purpose": "lawful_access", "what": "raw address ↔ subscriber mappings",
            "promise_ms": la.promise_ms, "promise": format_duration(la.promise_ms),
            "legal_minimum_ms": la.legal_minimum_ms,
            "legal_minimum": format_duration(la.legal_minimum_ms) if la.legal_minimum_ms else None,
            "source": la.source.strip()},
           {"purpose": "statistics", "what": "pseudonymised statistics records",
            "promise_ms": st.promise_ms, "promise": format_duration(st.promise_ms), "legal_minimum_ms": None,
            "legal_minimum": None, "source": st.source.strip()}]
    if st.aggregates_promise_ms != st.promise_ms:
        out.append({"purpose": "aggregates", "what": "k-anonymous aggregate cells",
                    "promise_ms": st.aggregates_promise_ms, "promise": format_duration(st.aggregates_promise_ms),
                    "legal_minimum_ms": None, "legal_minimum": None, "source": st.source.strip()})
    erasure = getattr(st, "erasure_ms", None)   # consent_required profiles (docs/statistics.md)
    if erasure is not None:
        out.append({"purpose": "erasure", "what": "statistics of a subscriber who withdrew consent",
                    "promise_ms": erasure, "promise": format_duration(erasure),
                    "legal_minimum_ms": None, "legal_minimum": None, "source": st.source.strip()})
    return out


def store_rows(plan: Any, actual_rows: Sequence[Any], operator: str) -> list[dict[str, Any]]:
    """One row per store holding this operator's data: every topic (bound from its actual
    configs on the broker: ``stream.policy.rows_with_bounds``), the mapping table (TTL + sweeper
    delay) and the worker's disk (the table's changelog bound: the table is restored from it)."""
    r = plan.retention[operator]
    out = []
    for row in actual_rows:
        if row.operator != operator or row.purpose is None:
            continue
        own = re.search(r"-raw-op-([a-z0-9][a-z0-9_-]*)$", row.topic)
        if own and own.group(1) != operator:
            continue  # another operator's collector topic: none of this operator's data is written there
        out.append({"store": row.topic, "kind": "topic", "role": row.role, "purpose": row.purpose,
                    "bound_ms": row.bound_ms, "bound": format_duration(row.bound_ms),
                    "promise_ms": row.promise_ms, "promise": format_duration(row.promise_ms), "ok": row.ok})
    table = r.ttl_ms + r.sweeper_period_ms + r.schedule_bucket_ms
    on_disk = r.disk_bound_ms > 0  # the table in the worker's RocksDB store (stream.disk_bound)
    where = "worker's on-disk store" if on_disk else "worker memory"
    out.append({"store": f"mapping table ({where})", "kind": "table", "role": "table",
                "purpose": "lawful_access", "bound_ms": table, "bound": format_duration(table),
                "promise_ms": r.promise_ms, "promise": format_duration(r.promise_ms), "ok": table <= r.promise_ms})
    disk = ("worker disk (RocksDB store: deleted values gone from its files within B_disk "
            f"{format_duration(r.disk_bound_ms)}; values sealed per key epoch)" if on_disk else
            "worker disk (table restored from its changelog; values sealed per key epoch)")
    out.append({"store": disk,
                "kind": "disk", "role": "disk", "purpose": "lawful_access", "bound_ms": r.worst_case_ms,
                "bound": format_duration(r.worst_case_ms), "promise_ms": r.promise_ms,
                "promise": format_duration(r.promise_ms), "ok": r.worst_case_ms <= r.promise_ms})
    return out


def canary_section(measurements: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Measured persistence from erasure canaries.  With none (no canaries configured, or no
    canary finished in the period) the section says so and carries no figure: never invented."""
    if not measurements:
        return {"measured": False, "measurements": [], "statement": NO_CANARIES}
    return {"measured": True, "measurements": [dict(m) for m in measurements], "statement": ""}


#: the canary chart draws at most this many points; a longer period keeps each time bin's worst
MAX_CHART_POINTS = 400

CANARY_RESULTS_SOURCE = ("Measured by the worker's erasure canaries (docs/operations.md), read from the topic {topic}: "
                         "every canary of this operator observed gone from a store in the period. Persistence is the "
                         "time from the canary mapping's end until it was first observed gone. max is the largest; "
                         "p99 is the nearest-rank 99th percentile: the value at rank ⌈0.99 × count⌉ of the sorted "
                         "measurements (with fewer than 100 measurements it equals max).")


def p99_nearest_rank(values: Sequence[int]) -> Optional[int]:
    """The 99th percentile by nearest rank: the ⌈0.99·n⌉-th smallest value (1-based), so a
    measured value, never interpolated; None for no values.  Integer arithmetic: no rounding."""
    if not values:
        return None
    v = sorted(values)
    rank = (99 * len(v) + 99) // 100  # ⌈99n/100⌉
    return v[rank - 1]


def parse_canary_result(value: Optional[bytes]) -> Optional[dict[str, Any]]:
    """One ``<prefix>-canary-results`` record, or None when it is not one (the caller counts it):
    integer instants and durations, the store one of ``stream.canary.STORES``."""
    from .canary import STORES

    try:
        r = json.loads(value) if value else None
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(r, dict) or r.get("store") not in STORES or not isinstance(r.get("operator"), str):
        return None
    for k in ("end_ms", "gone_at_ms", "persistence_ms"):
        if not isinstance(r.get(k), int) or isinstance(r.get(k), bool):
            return None
    for k in ("bound_ms", "promise_ms"):
        if r.get(k) is not None and (not isinstance(r[k], int) or isinstance(r[k], bool)):
            return None
    if not isinstance(r.get("canary"), str):
        return None
    return r


def canary_results_section(results: Iterable[Mapping[str, Any]], *, operator: str, from_ms: int, to_ms: int,
                           topic: str, unreadable: int = 0) -> dict[str, Any]:
    """The canary section from the measurements on the results topic: per store, the
    measurements of ``operator`` whose gone instant is in ``[from_ms, to_ms)`` — count, max and
    p99 (``p99_nearest_rank``) against the bound and promise the worker measured against (the
    latest record's: a changed profile shows from its first canary on).  A canary measured twice
    for a store (a worker restarted before its offsets were committed) counts once, its longer
    figure.  ``points``: per canary, its longest persistence over the stores, at the mapping's
    end instant, for the chart (binned to ``MAX_CHART_POINTS`` by worst)."""
    from .canary import STORES

    best: dict[tuple[str, str], Mapping[str, Any]] = {}
    read = 0
    for r in results:
        read += 1
        if r["operator"] != operator or not from_ms <= r["gone_at_ms"] < to_ms:
            continue
        k = (r["canary"], r["store"])
        if k not in best or r["persistence_ms"] > best[k]["persistence_ms"]:
            best[k] = r
    if not best:
        return canary_section()
    rows = []
    for store in STORES:
        mine = sorted((r for (c, st), r in best.items() if st == store), key=lambda r: (r["gone_at_ms"], r["canary"]))
        if not mine:
            continue
        vals = [r["persistence_ms"] for r in mine]
        mx, p99 = max(vals), p99_nearest_rank(vals)
        b, pr = mine[-1].get("bound_ms"), mine[-1].get("promise_ms")
        verdict = ("broken" if pr is not None and mx > pr else "over-bound" if b is not None and mx > b else "kept")
        rows.append({"store": store, "count": len(vals), "max_ms": mx, "max": format_duration(mx),
                     "p99_ms": p99, "p99": format_duration(p99),
                     "bound_ms": b, "bound": format_duration(b) if b is not None else "—",
                     "promise_ms": pr, "promise": format_duration(pr) if pr is not None else "—", "verdict": verdict})
    per_canary: dict[str, dict[str, Any]] = {}
    for (c, st), r in best.items():
        p = per_canary.get(c)
        if p is None or r["persistence_ms"] > p["persistence_ms"]:
            per_canary[c] = {"end_ms": r["end_ms"], "persistence_ms": r["persistence_ms"], "store": st}
    pts = sorted(per_canary.values(), key=lambda p: (p["end_ms"], -p["persistence_ms"], p["store"]))
    binned = len(pts) > MAX_CHART_POINTS
    if binned:
        width = -(-(to_ms - from_ms) // MAX_CHART_POINTS)
        bins: dict[int, dict[str, Any]] = {}
        for p in pts:
            i = (p["end_ms"] - from_ms) // width
            if i not in bins or p["persistence_ms"] > bins[i]["persistence_ms"]:
                bins[i] = p
        pts = [bins[i] for i in sorted(bins)]
    promises_ms = sorted({r["promise_ms"] for r in rows if r["promise_ms"] is not None})
    sec = canary_section(rows)
    sec.update({"source": "topic", "topic": topic, "statement": CANARY_RESULTS_SOURCE.format(topic=topic),
                "canaries": len(per_canary), "records_read": read, "unreadable_records": unreadable,
                "chart": {"points": [dict(p) for p in pts], "binned": binned, "promise_ms": promises_ms[-1] if promises_ms else None}})
    return sec


# -- epochs and expiries --------------------------------------------------------------------


def epoch_figures(*, purpose: str, oldest_live_epoch: Optional[int], origin_ms: int, period_ms: int,
                  due_after_ms: int, state_written_ms: Optional[int], from_ms: int, to_ms: int,
                  now_ms: Optional[int] = None, slack_ms: int = 0) -> dict[str, Any]:
    """Key epochs whose window ended in the period and whose key the state on disk can no longer
    derive (epoch < the oldest live one: the ratchet only goes forward).  ``due`` is the end of
    the window plus the time the key must outlive it; ``state_written_ms`` (the state file's
    modification time) is when the last destruction was written, so every listed epoch was gone
    from disk by then.  ``oldest_live_epoch`` None: no key state for this purpose.

    ``overdue``: epochs whose key was due more than ``slack_ms`` (the destroying timer's period
    and a margin) before ``now_ms`` — when the state was read — and that the state can still
    derive: a stopped sweeper or stats timer, checked rather than assumed."""
    base = {"purpose": purpose, "period_ms": period_ms, "period": format_duration(period_ms),
            "due_after_ms": due_after_ms, "state_written_ms": state_written_ms, "state_written": iso(state_written_ms),
            "oldest_live_epoch": oldest_live_epoch}
    if oldest_live_epoch is None or period_ms <= 0:
        return {**base, "state": "absent", "destroyed_in_period": 0, "listed": [], "first_due": None,
                "last_due": None, "overdue": 0, "overdue_since": None}
    overdue, since = 0, None
    if now_ms is not None:
        # epochs e >= oldest with origin + (e+1)*period + due_after + slack <= now
        last = (now_ms - slack_ms - due_after_ms - origin_ms) // period_ms - 1
        if last >= oldest_live_epoch:
            overdue = last - oldest_live_epoch + 1
            since = iso(origin_ms + (oldest_live_epoch + 1) * period_ms + due_after_ms)
    lo = max(0, -(-(from_ms - origin_ms) // period_ms) - 1)       # first epoch ending at or after from_ms
    hi = min(oldest_live_epoch, (to_ms - origin_ms - 1) // period_ms)  # … and before to_ms, destroyed
    count = max(0, hi - lo)
    listed = []
    for e in range(lo, min(hi, lo + MAX_LISTED_EPOCHS)):
        start = origin_ms + e * period_ms
        end = start + period_ms
        listed.append({"epoch": e, "start_ms": start, "end_ms": end, "due_ms": end + due_after_ms,
                       "start": iso(start), "end": iso(end), "due": iso(end + due_after_ms)})
    dues = [origin_ms + (e + 1) * period_ms + due_after_ms for e in (lo, hi - 1)] if count else []
    return {**base, "state": "present", "destroyed_in_period": count, "listed": listed,
            "first_due": iso(min(dues)) if dues else None, "last_due": iso(max(dues)) if dues else None,
            "overdue": overdue, "overdue_since": since}


def expiry_figures(tombstone_ts: Iterable[int], *, from_ms: int, to_ms: int, changelog_records: int,
                   changelog_first_ms: Optional[int], worker: Optional[Mapping[str, float]] = None) -> dict[str, Any]:
    """Expiries done in the period, as tombstones of this operator's table keys still on the
    changelog (compaction removes a tombstone after ``delete.retention.ms``, so this is a lower
    bound that covers only what the changelog still holds), plus the worker's own counters when
    its metrics could be read (deployment-wide, since the worker started)."""
    ts = [t for t in tombstone_ts if from_ms <= t < to_ms]
    return {"tombstones_in_period": len(ts), "last_tombstone": iso(max(ts)) if ts else None,
            "changelog_records_read": changelog_records, "changelog_oldest": iso(changelog_first_ms),
            "worker": dict(worker) if worker else None}


# -- holds, requests, audit -----------------------------------------------------------------


def _records(audit: Iterable[Mapping[str, Any]], to_ms: int) -> list[Mapping[str, Any]]:
    return [r for r in audit if isinstance(r.get("ts_ms"), int) and r["ts_ms"] < to_ms]


def hold_figures(audit: Iterable[Mapping[str, Any]], hold_operators: Mapping[str, str], *, operator: str,
                 from_ms: int, to_ms: int) -> dict[str, Any]:
    """Holds in effect at any time in the period, from the audit trail (``legal-hold-set`` …
    ``legal-hold-released``); attributed to the operator the holds topic names
    (``hold_operators``).  A hold whose operator is no longer recorded (released, compacted away)
    is counted apart, never guessed.  ``longest``: longest time in effect (up to ``to_ms`` for
    one still active)."""
    set_at: dict[str, int] = {}
    ended: dict[str, tuple[int, str]] = {}
    for r in _records(audit, to_ms):
        hid = r.get("hold_id")
        if not isinstance(hid, str):
            continue
        if r.get("type") == "legal-hold-set":
            set_at.setdefault(hid, r["ts_ms"])
        elif r.get("type") == "legal-hold-released" and hid in set_at:
            ended.setdefault(hid, (r["ts_ms"], str(r.get("detail") or "released")))
    mine, unknown = 0, 0
    released: dict[str, int] = {}
    active = 0
    longest = 0
    for hid, t0 in set_at.items():
        t1, how = ended.get(hid, (to_ms, ""))
        if t1 < from_ms:
            continue  # over before the period
        op = hold_operators.get(hid)
        if op is None:
            unknown += 1
            continue
        if op != operator:
            continue
        mine += 1
        longest = max(longest, t1 - t0)
        if hid in ended and from_ms <= t1:
            released[how] = released.get(how, 0) + 1
        else:
            active += 1
    return {"count": mine, "active_at_end": active, "released": sum(released.values()),
            "released_by": dict(sorted(released.items())), "longest_ms": longest if mine else None,
            "longest": format_duration(longest) if mine else None, "operator_not_recorded": unknown}


def request_figures(audit: Iterable[Mapping[str, Any]], *, from_ms: int, to_ms: int) -> dict[str, Any]:
    """Lawful requests received in the period, by legal basis and outcome (answered by answer
    kind, refused by reason, expired, still pending at the end).  Only bases, outcomes and
    counts: no request id, authority, case or address leaves the trail."""
    first: dict[str, int] = {}
    basis: dict[str, str] = {}
    outcome: dict[str, str] = {}
    junk = 0
    for r in _records(audit, to_ms):
        t = r.get("type")
        if t == "junk-summary":
            if r["ts_ms"] >= from_ms:
                junk += int(r.get("count") or 0)
            continue
        rid = r.get("request_id")
        if not isinstance(rid, str) or t not in ("request-received", "refused", "pending", "approval", "ready",
                                                  "answered", "expired", "approval-rejected"):
            continue
        first.setdefault(rid, r["ts_ms"])
        if isinstance(r.get("basis"), str):
            basis.setdefault(rid, r["basis"])
        if t == "answered":
            outcome[rid] = f"answered: {r.get('answer_kind') or 'answer'}"
        elif t == "refused":
            outcome[rid] = f"refused: {r.get('reason') or 'unknown'}"
        elif t == "expired":
            outcome[rid] = "expired: not enough approvals"
        elif t in ("request-received", "pending", "approval", "ready") and not outcome.get(rid, "").startswith(
                ("answered", "refused", "expired")):
            outcome[rid] = "pending at the end of the period"
    by: dict[str, dict[str, int]] = {}
    total = 0
    for rid, t0 in first.items():
        if not from_ms <= t0 < to_ms:
            continue
        total += 1
        b = basis.get(rid, "unknown basis")
        o = outcome.get(rid, "pending at the end of the period")
        by.setdefault(b, {})
        by[b][o] = by[b].get(o, 0) + 1
    return {"total": total, "by_basis": {b: dict(sorted(v.items())) for b, v in sorted(by.items())},
            "unauthenticated_messages": junk}


# -- separation -----------------------------------------------------------------------------

_PNR = re.compile(r"(?<![0-9])(?:19|20)?([0-9]{2})([0-9]{2})([0-9]{2})[-+]?([0-9]{4})(?![0-9])")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(digits):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _personal_number(text: str) -> bool:
    for m in _PNR.finditer(text):
        _, mm, dd, _last = m.groups()
        day = int(dd) - 60 if int(dd) > 60 else int(dd)   # samordningsnummer: day + 60
        if 1 <= int(mm) <= 12 and 1 <= day <= 31 and _luhn_ok("".join(m.groups())):
            return True
    return False


_STREET = re.compile(r"\b[A-ZÅÄÖ][a-zåäöé]+(?:gatan|vägen|gränd|torget|allén|stigen|backen|platsen|leden|"
                     r"street|road|avenue)\s+[0-9]{1,4}[A-Za-z]?\b")
_POSTCODE_TOWN = re.compile(r"\b(?:SE-?)?[1-9][0-9]{2} [0-9]{2}\s+[A-ZÅÄÖ][A-ZÅÄÖa-zåäö]{2,}")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_PHONE = re.compile(r"(?<![0-9])(?:\+46|0046|0)7[02369][- ]?[0-9]{3}[- ]?[0-9]{2}[- ]?[0-9]{2}(?![0-9])")


@dataclass(frozen=True)
class Detector:
    kind: str
    keys: frozenset[str]
    describe: str
    value: Any = None   # callable(str) -> bool, or None: recognised by field name only


DETECTORS: Mapping[str, Detector] = {
    "name": Detector("name", frozenset({"name", "full_name", "fullname", "first_name", "last_name", "given_name",
                                        "surname", "family_name", "namn", "fornamn", "förnamn", "efternamn",
                                        "customer_name", "subscriber_name"}),
                     "a field named for a person's name (name, first_name, surname, namn, …); a name inside a "
                     "value cannot be recognised by pattern"),
    "postal_address": Detector("postal_address", frozenset({"postal_address", "street", "street_address",
                                                            "postcode", "postal_code", "zip", "city", "adress",
                                                            "gatuadress", "postnummer", "postort", "co_address"}),
                               "an address field (street, postcode, postort, …), or a value holding a Swedish "
                               "street address (…gatan 12) or postcode and town (123 45 Ort)",
                               lambda s: bool(_STREET.search(s) or _POSTCODE_TOWN.search(s))),
    "personal_number": Detector("personal_number", frozenset({"personal_number", "personnummer", "pnr", "ssn",
                                                              "national_id", "samordningsnummer"}),
                                "a personal-number field, or a value holding a Swedish personal or co-ordination "
                                "number (YYMMDD-NNNN / YYYYMMDDNNNN with a valid check digit)", _personal_number),
    "email": Detector("email", frozenset({"email", "e_mail", "epost", "mail"}),
                      "an e-mail field or a value holding an e-mail address", lambda s: bool(_EMAIL.search(s))),
    "phone": Detector("phone", frozenset({"phone", "telephone", "telefon", "msisdn", "mobile", "mobilnummer"}),
                      "a telephone field or a value holding a Swedish mobile number", lambda s: bool(_PHONE.search(s))),
}


def _walk(obj: Any, key: Optional[str] = None):
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _walk(v, str(k))
            yield str(k), None
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v, key)
    elif isinstance(obj, str):
        yield key, obj


@dataclass
class IdentityScanner:
    """Scans records for the declared identity fields.  Records are counted per topic; a hit
    records the field kind, topic, partition and offset — never the value found."""

    fields: tuple[str, ...]
    scanned: dict[str, dict[str, Any]] = field(default_factory=dict)
    hits: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        bad = [f for f in self.fields if f not in DETECTORS]
        if bad:
            raise ConfigError(f"no detector for identity field {bad[0]!r}")

    def _count(self, topic: str, what: str, value: Optional[bytes], **extra: int) -> dict[str, Any]:
        s = self.scanned.setdefault(topic, {"topic": topic, "what": what, "records": 0, "bytes": 0,
                                            "sealed_values": 0, "tombstones": 0, "unsealed_values": 0})
        s["records"] += 1
        s["bytes"] += len(value or b"")
        for k, v in extra.items():
            s[k] += v
        return s

    def _hit(self, kind: str, topic: str, partition: int, offset: int, where: str) -> None:
        if any(h["field"] == kind and h["topic"] == topic and h["partition"] == partition and h["offset"] == offset
               for h in self.hits[-8:]):
            return  # one hit per field kind and record
        self.hits.append({"field": kind, "topic": topic, "partition": partition, "offset": offset, "in": where})

    def _text(self, topic: str, partition: int, offset: int, key: Optional[str], text: str, where: str) -> None:
        for kind in self.fields:
            d = DETECTORS[kind]
            low = key.lower() if key else None
            if low is not None and low in d.keys:
                self._hit(kind, topic, partition, offset, f"{where} field {key}")
            elif text and d.value is not None and d.value(text):
                self._hit(kind, topic, partition, offset, f"{where} value" + (f" of {key}" if key else ""))

    def scan_json(self, topic: str, partition: int, offset: int, value: Optional[bytes], *, what: str,
                  operator: Optional[str] = None) -> None:
        """A JSON record (bindings): every field name and string value.  ``operator``: count and
        scan only records of this operator (a record naming another is skipped)."""
        if value is None:
            return
        try:
            obj = json.loads(value)
        except (ValueError, UnicodeDecodeError):
            obj = None
        if operator is not None and isinstance(obj, Mapping) and obj.get("operator") not in (None, operator):
            return
        self._count(topic, what, value)
        if obj is None:
            self._text(topic, partition, offset, None, value.decode("utf-8", "replace"), "record")
            return
        for k, v in _walk(obj):
            self._text(topic, partition, offset, k, v or "", "record")

    def scan_binding(self, topic: str, partition: int, offset: int, value: Optional[bytes], *, what: str,
                     operator: Optional[str] = None) -> None:
        """A bindings-topic record (``stream.binding_wire``: binary, or the previous release's
        JSON): every field of the decoded binding, like ``scan_json``; a record that does not
        decode is counted and scanned as text."""
        from .binding_wire import decode
        if value is None:
            return
        try:
            b = decode(value)
        except Exception:  # noqa: BLE001 - undecodable: still scanned, as text
            self._count(topic, what, value)
            self._text(topic, partition, offset, None, value.decode("utf-8", "replace"), "record")
            return
        if operator is not None and b.operator != operator:
            return
        self._count(topic, what, value)
        for k, v in _walk(b.to_dict()):
            self._text(topic, partition, offset, k, v or "", "record")

    def scan_sealed(self, topic: str, partition: int, offset: int, key: Optional[bytes], value: Optional[bytes],
                    *, what: str) -> None:
        """A table changelog record: the key must be ``operator | slot | keyed hash`` and the
        value sealed (version byte, epoch, nonce, ciphertext, tag) or a tombstone.  A value that
        is not sealed is counted and scanned as text: a plaintext table would show here."""
        if value is None:
            self._count(topic, what, None, tombstones=1)
            return
        if len(value) >= 9 + 12 + 16 and value[0] == 0x01:
            self._count(topic, what, value, sealed_values=1)
            return
        self._count(topic, what, value, unsealed_values=1)
        self._hit("unsealed value", topic, partition, offset, "table value not sealed")
        self.scan_text_only(topic, partition, offset, value)

    def scan_text_only(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        try:
            obj = json.loads(value)
        except (ValueError, UnicodeDecodeError):
            self._text(topic, partition, offset, None, value.decode("utf-8", "replace"), "record")
            return
        for k, v in _walk(obj):
            self._text(topic, partition, offset, k, v or "", "record")

    def result(self) -> dict[str, Any]:
        fields = list(self.fields)
        hits = self.hits[:50]
        return {"ok": not self.hits, "identity_fields": fields,
                "detectors": {k: DETECTORS[k].describe for k in fields},
                "scanned": [self.scanned[t] for t in sorted(self.scanned)],
                "records_scanned": sum(s["records"] for s in self.scanned.values()),
                "hit_count": len(self.hits), "hits": hits}


# -- the report -----------------------------------------------------------------------------


def build_report(*, op: OperatorPolicy, from_ms: int, to_ms: int, generated_ms: int, stores: list[dict],
                 bounds_source: str, plan_params: Mapping[str, Any], epochs: list[dict], expiries: dict,
                 holds: dict, requests: dict, desk_operators: Sequence[str], audit: dict, location: dict,
                 separation: dict, canaries: Optional[dict] = None) -> dict[str, Any]:
    """The figures, as one JSON-able dict (``report.json``); ``verdict`` lists every problem."""
    if to_ms <= from_ms:
        raise ReportError("the period is empty: --to must be later than --from")
    problems = [f"{s['store']}: computed bound {s['bound']} exceeds the promise {s['promise']}"
                for s in stores if not s["ok"]]
    if not audit.get("ok"):
        problems.append(f"audit trail not verified: {audit.get('problem') or 'unknown'}")
    if not separation.get("ok"):
        problems.append(f"separation: {separation.get('hit_count')} identity field(s) found next to addresses")
    for e in epochs:
        if e.get("overdue"):
            problems.append(f"{e['purpose']}: {e['overdue']} key epoch(s) past their destruction time (since "
                            f"{e['overdue_since']}) are still derivable from the key state on disk")
    can = canaries or canary_section()
    for m in can.get("measurements", []):
        if m.get("promise_ms") is not None and m.get("max_ms") is not None and m["max_ms"] > m["promise_ms"]:
            problems.append(f"{m.get('store')}: measured persistence exceeds the promise")
    return {
        "v": REPORT_VERSION, "kind": "ipanon-compliance-report",
        "operator": {"name": op.name, "display_name": op.display_name, "profile": op.file, "seed": op.seed},
        "period": {"from_ms": from_ms, "to_ms": to_ms, "from": iso(from_ms), "to": iso(to_ms)},
        "generated_ms": generated_ms, "generated": iso(generated_ms),
        "verdict": {"kept": not problems, "problems": problems},
        "promises": promises(op),
        "bounds": {"source": bounds_source, "params": dict(plan_params), "stores": stores},
        "canaries": can,
        "epochs": epochs,
        "expiries": expiries,
        "holds": holds,
        "lawful_requests": {**requests, "desk_operators": list(desk_operators)},
        "audit": audit,
        "location": location,
        "separation": separation,
    }


# -- the page -------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 Georgia,'Times New Roman',serif;color:#111;max-width:60em;margin:2em auto;padding:0 1em}
h1{font-size:1.6em;margin:0}h2{font-size:1.15em;border-bottom:1px solid #999;margin-top:1.6em;page-break-after:avoid}
table{border-collapse:collapse;width:100%;margin:.4em 0}th,td{border:1px solid #bbb;padding:.2em .4em;text-align:left;
vertical-align:top;font-size:.92em}th{background:#eee}td.n{text-align:right;font-variant-numeric:tabular-nums}
.kept{color:#05620e;font-weight:bold}.notkept{color:#b00000;font-weight:bold}.muted{color:#555}
blockquote{margin:.3em 0 .3em 1em;padding-left:.6em;border-left:3px solid #bbb;font-style:italic}
code{font-family:monospace;font-size:.9em;word-break:break-all}section{page-break-inside:avoid}
.verdict{border:2px solid;padding:.5em .8em;margin:1em 0}.verdict.kept{border-color:#05620e}
.verdict.notkept{border-color:#b00000}@media print{body{margin:0}a{color:#111}}
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _fig(path: str, text: Any, cls: str = "") -> str:
    """A figure the rendering test compares with report.json: ``data-figure`` is its JSON path."""
    c = f' class="{cls}"' if cls else ""
    return f'<span data-figure="{_e(path)}"{c}>{_e(text)}</span>'


def _ok(ok: bool, yes: str = "kept", no: str = "NOT KEPT") -> str:
    return f'<span class="{"kept" if ok else "notkept"}">{yes if ok else no}</span>'


def _bar_chart(stores: Sequence[Mapping[str, Any]]) -> str:
    """Bound as a share of the promise, one bar per store (inline SVG, no external assets)."""
    w, row, left = 640, 18, 300
    h = row * len(stores) + 24
    parts = [f'<svg class="chart" id="bounds-chart" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
             f'viewBox="0 0 {w} {h}" role="img" aria-label="computed bound as a share of the promise">']
    span = w - left - 50
    for i, s in enumerate(stores):
        y = i * row + 4
        share = (s["bound_ms"] / s["promise_ms"]) if s.get("bound_ms") is not None and s.get("promise_ms") else 1.0
        bw = max(1, int(min(share, 1.2) * span))
        colour = "#2e7d32" if s["ok"] else "#b00000"
        label = s["store"] if len(s["store"]) <= 44 else s["store"][:43] + "…"
        parts.append(f'<text x="{left - 6}" y="{y + 12}" font-size="11" text-anchor="end">{_e(label)}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{bw}" height="{row - 5}" fill="{colour}"/>')
        parts.append(f'<text x="{left + bw + 4}" y="{y + 12}" font-size="11">{share * 100:.1f}%</text>')
    x100 = left + span
    parts.append(f'<line x1="{x100}" y1="0" x2="{x100}" y2="{h - 18}" stroke="#111" stroke-dasharray="4 3"/>')
    parts.append(f'<text x="{x100}" y="{h - 4}" font-size="11" text-anchor="middle">promise (100%)</text>')
    parts.append("</svg>")
    return "".join(parts)


def _canary_chart(chart: Mapping[str, Any], from_ms: int, to_ms: int) -> str:
    """Persistence per canary (its longest store) against the mapping's end time over the
    period, with the promise as a dashed line (inline SVG; integer coordinates, no ids but the
    chart's own: the same figures give the same bytes)."""
    w, h, left, right, top, bottom = 640, 220, 64, 12, 10, 34
    pw, ph = w - left - right, h - top - bottom
    pts = chart.get("points") or []
    promise = chart.get("promise_ms")
    ymax = max([p["persistence_ms"] for p in pts] + ([promise] if promise is not None else []) + [1])
    ymax = ymax + ymax // 10 + 1
    span = max(1, to_ms - from_ms)

    def x(ms: int) -> int:
        return left + (min(max(ms, from_ms), to_ms) - from_ms) * pw // span

    def y(ms: int) -> int:
        return top + ph - max(0, ms) * ph // ymax

    parts = [f'<svg class="chart" id="canary-chart" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
             f'viewBox="0 0 {w} {h}" role="img" aria-label="{_e("measured persistence per canary over the period")}">',
             f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#111"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#111"/>',
             f'<text x="{left - 4}" y="{top + ph}" font-size="10" text-anchor="end">0</text>',
             f'<text x="{left - 4}" y="{top + 8}" font-size="10" text-anchor="end">{_e(format_duration(ymax))}</text>',
             f'<text x="{left}" y="{h - 16}" font-size="10">{_e(iso(from_ms))}</text>',
             f'<text x="{left + pw}" y="{h - 16}" font-size="10" text-anchor="end">{_e(iso(to_ms))}</text>',
             f'<text x="{left + pw // 2}" y="{h - 3}" font-size="10" text-anchor="middle">'
             f'{_e("mapping end (time) → persistence until gone from every store")}</text>']
    if promise is not None:
        parts.append(f'<line class="promise" x1="{left}" y1="{y(promise)}" x2="{left + pw}" y2="{y(promise)}" '
                     f'stroke="#b00000" stroke-dasharray="5 3"/>')
        parts.append(f'<text x="{left + pw - 2}" y="{y(promise) - 3}" font-size="10" text-anchor="end" fill="#b00000">'
                     f'{_e("promise " + format_duration(promise))}</text>')
    for p in pts:
        over = promise is not None and p["persistence_ms"] > promise
        parts.append(f'<circle class="canary" cx="{x(p["end_ms"])}" cy="{y(p["persistence_ms"])}" r="2.5" '
                     f'fill="{"#b00000" if over else "#1f4e99"}"><title>{_e(iso(p["end_ms"]))}: '
                     f'{_e(format_duration(max(0, p["persistence_ms"])))} ({_e(p["store"])})</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: Mapping[str, Any]) -> str:
    """The printable page: self-contained (inline CSS and SVG, no script, no external asset) and
    a function of ``report`` alone, so the same figures always give the same bytes."""
    r = report
    op = r["operator"]
    out: list[str] = []
    a = out.append
    a("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">")
    a(f"<title>Compliance report — {_e(op['display_name'])} — {_e(r['period']['from'])} to {_e(r['period']['to'])}</title>")
    a(f"<style>{_CSS}</style></head><body>")
    a(f"<h1>Retention and lawful-access compliance report</h1>")
    a(f"<p><b>{_fig('operator.display_name', op['display_name'])}</b> (profile <code>{_e(op['profile'])}</code>, "
      f"policy <code>{_e(op['seed'])}</code>) · period {_fig('period.from', r['period']['from'])} to "
      f"{_fig('period.to', r['period']['to'])} · generated {_fig('generated', r['generated'])} by ipanon</p>")
    v = r["verdict"]
    cls = "kept" if v["kept"] else "notkept"
    a(f'<div class="verdict {cls}" id="verdict"><b>Verdict:</b> '
      + (f'<span class="kept" data-figure="verdict.kept" data-value="true">every promise kept</span>' if v["kept"] else
         f'<span class="notkept" data-figure="verdict.kept" data-value="false">NOT KEPT</span>'))
    if v["problems"]:
        a("<ul>" + "".join(f"<li>{_e(p)}</li>" for p in v["problems"]) + "</ul>")
    a("</div>")

    a('<section id="promises"><h2>1. What the operator promises</h2>')
    a("<table><tr><th>purpose</th><th>data</th><th>promise (longest kept after the mapping ends)</th>"
      "<th>legal minimum</th></tr>")
    for i, p in enumerate(r["promises"]):
        a(f"<tr><td>{_e(p['purpose'])}</td><td>{_e(p['what'])}</td><td class=\"n\">"
          f"{_fig(f'promises.{i}.promise', p['promise'])}</td><td class=\"n\">{_e(p['legal_minimum'] or '—')}</td></tr>")
    a("</table><p>The policy's own words:</p>")
    seen = set()
    for p in r["promises"]:
        if p["source"] and p["source"] not in seen:
            seen.add(p["source"])
            a(f"<blockquote lang=\"sv\">{_e(p['source'])}</blockquote>")
    a("</section>")

    b = r["bounds"]
    a('<section id="bounds"><h2>2. Computed worst-case persistence per store</h2>')
    a(f"<p class=\"muted\">Broker settings {_e(b['source'])}; topic bounds from each topic's actual configuration "
      f"on the broker; the same computation as <code>ipanon topics plan</code>. A bound is the longest a record "
      f"can physically remain after the mapping it belongs to ends.</p>")
    a("<table><tr><th>store</th><th>purpose</th><th>bound</th><th>promise</th><th></th></tr>")
    for i, s in enumerate(b["stores"]):
        a(f"<tr><td><code>{_e(s['store'])}</code></td><td>{_e(s['purpose'])}</td>"
          f"<td class=\"n\">{_fig(f'bounds.stores.{i}.bound', s['bound'])}</td>"
          f"<td class=\"n\">{_fig(f'bounds.stores.{i}.promise', s['promise'])}</td><td>{_ok(s['ok'])}</td></tr>")
    a("</table>")
    a(_bar_chart(b["stores"]))
    a("</section>")

    c = r["canaries"]
    a('<section id="canaries"><h2>3. Measured persistence (erasure canaries)</h2>')
    if not c["measured"]:
        a(f'<p id="no-canaries" data-figure="canaries.statement">{_e(c["statement"])}</p>')
    else:
        if c.get("statement"):
            a(f'<p class="muted" data-figure="canaries.statement">{_e(c["statement"])}</p>')
        a("<table><tr><th>store</th><th>canaries</th><th>max</th><th>p99</th><th>bound</th><th>promise</th><th></th></tr>")
        for i, m in enumerate(c["measurements"]):
            ok = m.get("max_ms") is not None and m.get("promise_ms") is not None and m["max_ms"] <= m["promise_ms"]
            count = _fig(f'canaries.measurements.{i}.count', m["count"]) if "count" in m else "—"
            p99 = _fig(f'canaries.measurements.{i}.p99', m.get("p99")) if m.get("p99_ms") is not None else _e(m.get("p99"))
            a(f"<tr><td>{_e(m.get('store'))}</td><td class=\"n\">{count}</td>"
              f"<td class=\"n\">{_fig(f'canaries.measurements.{i}.max', m.get('max'))}"
              f"</td><td class=\"n\">{p99}</td><td class=\"n\">{_e(m.get('bound'))}</td>"
              f"<td class=\"n\">{_e(m.get('promise'))}</td><td>{_ok(ok)}</td></tr>")
        a("</table>")
        if c.get("chart"):
            a(_canary_chart(c["chart"], r["period"]["from_ms"], r["period"]["to_ms"]))
    a("</section>")

    a('<section id="epochs"><h2>4. Key epochs destroyed</h2>')
    a("<p class=\"muted\">Values are sealed under per-epoch keys; once an epoch's key is destroyed every copy "
      "sealed under it, wherever it survives (old segments, replicas, backups), is unreadable.</p>")
    a("<table><tr><th>keys</th><th>epoch length</th><th>epochs destroyed in the period</th><th>due (first … last)"
      "</th><th>key state on disk written</th><th>oldest live epoch</th><th>past due, not destroyed</th></tr>")
    for i, e in enumerate(r["epochs"]):
        due = f"{e['first_due']} … {e['last_due']}" if e["first_due"] else "—"
        a(f"<tr><td>{_e(e['purpose'])}</td><td class=\"n\">{_e(e['period'])}</td>"
          f"<td class=\"n\">{_fig(f'epochs.{i}.destroyed_in_period', e['destroyed_in_period'])}</td>"
          f"<td>{_e(due)}</td><td>{_e(e['state_written'] or 'no key state')}</td>"
          f"<td class=\"n\">{_e(e['oldest_live_epoch'] if e['oldest_live_epoch'] is not None else '—')}</td>"
          + (f"<td class=\"n\">{_fig(f'epochs.{i}.overdue', e['overdue'], 'notkept')} (due since "
             f"{_e(e['overdue_since'])})</td></tr>" if e["overdue"] else
             f"<td class=\"n\">{_fig(f'epochs.{i}.overdue', 0, 'kept')}</td></tr>"))
    a("</table>")
    for i, e in enumerate(r["epochs"]):
        if e["listed"]:
            rows = "".join(f"<tr><td class=\"n\">{x['epoch']}</td><td>{_e(x['start'])}</td><td>{_e(x['end'])}</td>"
                           f"<td>{_e(x['due'])}</td></tr>" for x in e["listed"])
            more = e["destroyed_in_period"] - len(e["listed"])
            a(f"<details><summary>{_e(e['purpose'])}: the epochs"
              + (f" (first {len(e['listed'])}; {more} more)" if more else "") + "</summary>"
              f"<table><tr><th>epoch</th><th>window start</th><th>window end</th><th>key due for destruction</th></tr>"
              f"{rows}</table></details>")
    a("</section>")

    x = r["expiries"]
    a('<section id="expiries"><h2>5. Expiries done</h2>')
    a(f"<p>{_fig('expiries.tombstones_in_period', x['tombstones_in_period'])} mappings of this operator deleted "
      f"from the table in the period, as deletion markers (tombstones) still on the table's changelog "
      f"({_e(x['changelog_records_read'])} changelog records read, oldest from {_e(x['changelog_oldest'] or '—')}). "
      f"Compaction removes a marker after it has done its work, so this counts only the recent ones: a lower bound.</p>")
    if x.get("worker"):
        w = x["worker"]
        a("<p>The worker's own counters (all operators, since it started"
          + (f" at {_e(w.get('started'))}" if w.get("started") else "") + "): "
          f"{_fig('expiries.worker.intervals_expired_total', w.get('intervals_expired_total'))} intervals expired, "
          f"{_e(w.get('tombstones_total'))} tombstones written, last sweeper pass {_e(w.get('sweeper_last_run'))}"
          + "".join(f"; {_e(n)} {_e(k)} key epochs destroyed" for k, n in (w.get("epochs_shredded_total") or {}).items())
          + ".</p>")
    else:
        a("<p class=\"muted\">The worker's counters were not read (no worker metrics address given or reachable).</p>")
    a("</section>")

    hd = r["holds"]
    a('<section id="holds"><h2>6. Legal holds (preservation orders)</h2>')
    a("<table><tr><th>holds in effect in the period</th><th>longest in effect</th><th>released</th>"
      "<th>still in effect at the end</th></tr>")
    a(f"<tr><td class=\"n\">{_fig('holds.count', hd['count'])}</td><td class=\"n\">"
      f"{_fig('holds.longest', hd['longest'] or '—')}</td><td class=\"n\">{_fig('holds.released', hd['released'])}"
      f"</td><td class=\"n\">{_fig('holds.active_at_end', hd['active_at_end'])}</td></tr></table>")
    if hd["operator_not_recorded"]:
        a(f"<p class=\"muted\">{_e(hd['operator_not_recorded'])} further hold(s) of the desk could not be attributed to "
          f"an operator (released and compacted from the holds list); they are not counted above.</p>")
    a("</section>")

    q = r["lawful_requests"]
    a('<section id="requests"><h2>7. Lawful requests by legal basis and outcome</h2>')
    a(f"<p>{_fig('lawful_requests.total', q['total'])} requests received in the period. Requests are addressed to "
      f"the operator desk, which serves {_e(', '.join(q['desk_operators']))}; a request names an address, not an "
      f"operator, so these counts are the desk's. No requester, case or address is shown.</p>")
    if q["by_basis"]:
        a("<table><tr><th>basis</th><th>outcome</th><th>requests</th></tr>")
        for bname, outs in q["by_basis"].items():
            for oname, n in outs.items():
                a(f"<tr><td>{_e(bname)}</td><td>{_e(oname)}</td><td class=\"n\">"
                  f"{_fig(f'lawful_requests.by_basis.{bname}.{oname}', n)}</td></tr>")
        a("</table>")
    a(f"<p class=\"muted\">Unauthenticated messages refused in the period: {_e(q['unauthenticated_messages'])}.</p>")
    a("</section>")

    au = r["audit"]
    a('<section id="audit"><h2>8. Audit trail</h2>')
    a(f"<p>Hash chain and signed anchors: {_ok(bool(au['ok']), 'verified', 'NOT VERIFIED')} "
      f"({_fig('audit.records', au['records'])} records on <code>{_e(au['topic'])}</code>"
      + (f"; problem: {_e(au['problem'])} — {_e(au['detail'])}" if not au["ok"] else "") + ").</p>")
    a(f"<p>Head hash <code>{_fig('audit.head', au['head'])}</code><br>last signed checkpoint: seq "
      f"{_fig('audit.last_checkpoint_seq', au['last_checkpoint_seq'])} at {_e(au['last_checkpoint'])}, anchor key "
      f"<code>{_e(au['anchor_key_id'])}</code>. Keep the head hash: a later check with "
      f"<code>ipanon audit verify --expect-head</code> shows that nothing before it changed.</p>")
    a("</section>")

    lo = r["location"]
    a('<section id="location"><h2>9. Where the data is</h2><table>')
    a(f"<tr><th>Kafka bootstrap</th><td><code>{_fig('location.bootstrap', lo['bootstrap'])}</code></td></tr>")
    for bk in lo["brokers"]:
        a(f"<tr><th>broker {_e(bk['id'])}</th><td><code>{_e(bk['host'])}:{_e(bk['port'])}</code>"
          + (f", log directories <code>{_e(bk['log_dirs'])}</code>" if bk.get("log_dirs") else "") + "</td></tr>")
    a(f"<tr><th>replication factor</th><td>{_fig('location.replication_factor', lo['replication_factor'])} "
      f"(lowest of the operator's topics, read from the broker)</td></tr>")
    a(f"<tr><th>worker data directory</th><td><code>{_e(lo['data_dir'])}</code></td></tr>")
    a(f"<tr><th>key directory</th><td><code>{_e(lo['keys_dir'])}</code> (exclude from backups)</td></tr>")
    a("</table></section>")

    sp = r["separation"]
    a('<section id="separation"><h2>10. Separation of addresses from civil identity</h2>')
    a(f"<p>{_ok(bool(sp['ok']), 'separation kept', 'SEPARATION NOT KEPT')}: "
      f"{_fig('separation.hit_count', sp['hit_count'])} identity field(s) found in "
      f"{_fig('separation.records_scanned', sp['records_scanned'])} records scanned. The profile declares these "
      f"identity fields, each looked for as follows:</p><ul>")
    for k, d in sp["detectors"].items():
        a(f"<li><b>{_e(k)}</b>: {_e(d)}</li>")
    a("</ul><table><tr><th>scanned</th><th>what</th><th>records</th><th>bytes</th><th>sealed values</th>"
      "<th>unsealed values</th></tr>")
    for i, s in enumerate(sp["scanned"]):
        a(f"<tr><td><code>{_e(s['topic'])}</code></td><td>{_e(s['what'])}</td><td class=\"n\">"
          f"{_fig(f'separation.scanned.{i}.records', s['records'])}</td><td class=\"n\">{_e(s['bytes'])}</td>"
          f"<td class=\"n\">{_e(s['sealed_values'])}</td><td class=\"n\">{_e(s['unsealed_values'])}</td></tr>")
    a("</table>")
    if sp["hits"]:
        a("<table><tr><th>field</th><th>topic</th><th>partition</th><th>offset</th><th>found in</th></tr>")
        for h in sp["hits"]:
            a(f"<tr><td class=\"notkept\">{_e(h['field'])}</td><td><code>{_e(h['topic'])}</code></td><td class=\"n\">"
              f"{_e(h['partition'])}</td><td class=\"n\">{_e(h['offset'])}</td><td>{_e(h['in'])}</td></tr>")
        a("</table>")
    a("</section>")

    a('<section id="signature"><h2>Signature</h2><p>This page and <code>report.json</code> are listed with their '
      'SHA-256 in <code>manifest.json</code>, signed with the operator\'s report key (Ed25519) in '
      '<code>report.sig</code>. Check with <code>ipanon report verify DIR --key &lt;operator&gt;.report.pub</code>: '
      'any changed byte fails.</p></section>')
    a("</body></html>\n")
    return "".join(out)


# -- signing --------------------------------------------------------------------------------


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def key_id(public_key: Any) -> str:
    from .audit import anchor_key_id

    return anchor_key_id(public_key)


def manifest(files: Mapping[str, bytes], *, operator: str, signed_ms: int, public_key: Any) -> dict[str, Any]:
    from .access import public_key_text

    return {"v": REPORT_VERSION, "kind": "ipanon-compliance-report-manifest", "operator": operator,
            "signed_ms": signed_ms, "signed": iso(signed_ms), "key_id": key_id(public_key),
            "public_key": public_key_text(public_key),
            "files": {name: sha256_hex(files[name]) for name in sorted(files)}}


def sign(manifest_obj: Mapping[str, Any], private_key: Any) -> tuple[bytes, bytes]:
    """(manifest bytes, signature file bytes) to write next to the report."""
    body = canonical(manifest_obj)
    return body + b"\n", (private_key.sign(REPORT_DOMAIN + body).hex() + "\n").encode("ascii")


@dataclass(frozen=True)
class Verified:
    operator: str
    signed_ms: int
    key_id: str
    files: Mapping[str, str]


def verify_files(files: Mapping[str, Optional[bytes]], manifest_bytes: Optional[bytes], signature: Optional[bytes],
                 trusted_key: Any) -> Verified:
    """Check a report directory's contents: the manifest's signature by ``trusted_key`` and
    every listed file's SHA-256.  Raises ``ReportError`` saying exactly what does not match."""
    from cryptography.exceptions import InvalidSignature

    if manifest_bytes is None:
        raise ReportError(f"{MANIFEST_FILE} is missing: the report is not signed")
    if signature is None:
        raise ReportError(f"{SIGNATURE_FILE} is missing: the report is not signed")
    try:
        m = json.loads(manifest_bytes)
        body = canonical(m)
    except (ValueError, UnicodeDecodeError, TypeError):
        raise ReportError(f"{MANIFEST_FILE} is not a valid manifest (altered?)") from None
    if manifest_bytes != body + b"\n":
        raise ReportError(f"{MANIFEST_FILE} was altered (not the bytes that were signed)")
    try:
        sig = bytes.fromhex(signature.decode("ascii").strip())
        trusted_key.verify(sig, REPORT_DOMAIN + body)
    except (InvalidSignature, ValueError, UnicodeDecodeError):
        kid = m.get("key_id") if isinstance(m, dict) else None
        raise ReportError(f"the signature does not verify with the trusted report key {key_id(trusted_key)} "
                          f"(manifest names key {kid}): the manifest was altered or signed by another key") from None
    listed = m.get("files") if isinstance(m, dict) else None
    if not isinstance(listed, dict) or sorted(listed) != sorted(REPORT_FILES):
        raise ReportError(f"the manifest does not list exactly {', '.join(REPORT_FILES)}")
    for name in REPORT_FILES:
        data = files.get(name)
        if data is None:
            raise ReportError(f"{name} is missing")
        if sha256_hex(data) != listed[name]:
            raise ReportError(f"{name} was altered after signing (SHA-256 {sha256_hex(data)[:16]}…, signed "
                              f"{str(listed[name])[:16]}…)")
    # the key vouches for the manifest's operator: a report about another operator, signed with
    # this one's key, is not that operator's report (the page would show the other name)
    try:
        about = json.loads(files["report.json"])["operator"]["name"]  # type: ignore[arg-type]
    except (ValueError, KeyError, TypeError):
        raise ReportError("report.json names no operator") from None
    if about != m.get("operator"):
        raise ReportError(f"report.json is about operator {str(about)[:64]!r} but the manifest was signed for "
                          f"{str(m.get('operator'))[:64]!r}")
    return Verified(str(m.get("operator")), int(m.get("signed_ms", 0)), str(m.get("key_id")), dict(listed))
