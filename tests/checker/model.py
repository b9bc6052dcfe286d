"""The reference model: the ``stream`` rules applied offline to a generated history.

Nothing here asks the worker.  Each raw record is parsed with the format's parser (the same
pure function ingest calls, with the same context), and its bindings are applied in send order
with ``stream.intervals.apply`` / ``apply_reset``.  The generator gives every address to one
source only, so send order is the order the worker's mapping agent sees per address, and
at-least-once replays after a crash re-apply records the rules treat as duplicates.

Expiry makes an answer depend on *when* it was computed.  The worker computes it at some
instant between the request's send and the answer's arrival; the sweeper removes an interval
within ``bound_ms`` of its expiry instant.  So per interval: present if its expiry instant is
after the answer arrived, absent if expiry + bound is before the request was sent, else either.
``expect`` returns every answer the rules allow (one, unless an interval is in that window).

A lookup past the lost-Stop window of an open interval (no Stop, no lease end, no later holder)
names no confirmed holder, and is not "no data" either: the answer lists the session under
``end_unknown`` (holder, from, last seen) and, when no other holder is confirmed, its status is
``end-unknown``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Optional

from stream import intervals as iv
from stream.errors import Rejected
from stream.model import ip_text
from stream.parse import get_format

#: the answer for a time past the lost-Stop window of a silent session, when no holder is confirmed
END_UNKNOWN = "end-unknown"


def stale_after_ms(policy: Any, default: int = iv.DEFAULT_STALE_AFTER_MS) -> int:
    """The operator's lost-Stop window: the profile's ``[sessions]`` setting where the profile
    has one, else the default."""
    v = getattr(getattr(policy, "sessions", None), "lost_stop_window_ms", None)
    return v if isinstance(v, int) and v > 0 else default


@dataclass
class OperatorRules:
    name: str
    policy: Any
    ttl_ms: int
    stale_after_ms: int
    promise_ms: Optional[int] = None         # lawful-access promise
    bindings_bound_ms: Optional[int] = None  # worst-case persistence of a binding written now

    def too_late(self, bindings: list, ingest_ms: int) -> bool:
        """"Ingest lag + bound <= promise", per record: a record is too late when what is left
        of its mapping's promise at ingest is shorter than the bindings topic keeps a copy.  A
        mapping's end: a Stop's (or reset's) event time; otherwise it stays current at most
        the lost-Stop window after the event, or until a DHCP lease ends if that is earlier."""
        if self.promise_ms is None or self.bindings_bound_ms is None:
            return False
        for b in bindings:
            if b.action in ("stop", "reset"):
                end = b.at_ms
            else:
                end = b.at_ms + self.stale_after_ms
                if b.until_ms is not None:
                    end = min(end, b.until_ms)
            if end + self.promise_ms - ingest_ms < self.bindings_bound_ms:
                return True
        return False


@dataclass
class Applied:
    """The model's state after a history: intervals per table key and who touched each key."""

    keys: dict = field(default_factory=dict)       # (op, slot, net text) -> Intervals
    log: dict = field(default_factory=dict)        # (op, slot, net text) -> [Raw seq]
    bindings: dict = field(default_factory=dict)   # Raw seq -> [Binding] (accepted records only)
    rejected: dict = field(default_factory=dict)   # Raw seq -> reason the parser gave (or None)
    too_late: set = field(default_factory=set)     # Raw seqs of good records past the promise
    boundary: set = field(default_factory=set)     # Raw seqs whose verdict changes within the slack


def parse(raw: Any, rules: OperatorRules) -> list:
    """``Pipeline.parse_raw`` for a record with both headers set."""
    ctx: dict[str, Any] = {}
    if rules.policy is not None:
        ctx["identity"] = rules.policy.identity.radius_attribute
    return get_format(raw.fmt).parse(raw.value, operator=raw.operator, **ctx)


def apply_history(records: list, rules: dict, ingest_ms: Optional[dict] = None, slack_ms: int = 0,
                  cache: Optional[dict] = None) -> Applied:
    """Apply ``records`` in order.  ``ingest_ms``: seq → the instant the record was sent (it
    is ingested within ``slack_ms`` after); records too late by then bind nothing.  ``cache``:
    seq → bindings, kept between calls on growing prefixes of one history."""
    m = Applied()
    cache = {} if cache is None else cache
    for r in records:
        if r.kind == "bad":
            try:
                parse(r, rules[r.operator])
                m.rejected[r.seq] = None
            except Rejected as e:
                m.rejected[r.seq] = e.reason
            continue
        bs = cache.get(r.seq)
        if bs is None:
            bs = cache[r.seq] = parse(r, rules[r.operator])  # a record that does not parse is a generator bug
        at = (ingest_ms or {}).get(r.seq)
        if at is not None:
            late = rules[r.operator].too_late(bs, at)
            if late != rules[r.operator].too_late(bs, at + slack_ms):
                m.boundary.add(r.seq)
            if late:
                m.too_late.add(r.seq)
                continue
        m.bindings[r.seq] = bs
        for b in bs:
            if b.action == "reset":
                for k, ivs in m.keys.items():
                    if k[0] == b.operator:
                        new = iv.apply_reset(ivs, b.nas, b.at_ms)
                        if new is not ivs:
                            m.keys[k] = new
                            m.log[k].append(r.seq)
                continue
            k = (b.operator, iv.slot_of(b), ip_text(b.ip))
            new, _ = iv.apply(m.keys.get(k, ()), b)
            m.keys[k] = new
            m.log.setdefault(k, []).append(r.seq)
    return m


@dataclass
class Expected:
    answers: list                  # acceptable normalised answers
    past_window: bool = False      # an open interval's lost-Stop window passed before the query
    keys: list = field(default_factory=list)  # table keys the answer depends on


def normalise(ans: dict) -> tuple:
    """(status, candidates, sorted rows, sorted end-unknown sessions) of an answer."""
    status = ans.get("status")
    if status == "ambiguous":
        return ("ambiguous", ans.get("candidates"), (), ())
    rows = tuple(sorted((h.get("subscriber"), h.get("from_ms"), h.get("to_ms"), h.get("inside_ip"),
                         tuple(h["ports"]) if h.get("ports") else None) for h in ans.get("holders") or ()))
    unknown = tuple(sorted((u.get("subscriber"), u.get("from_ms"), u.get("last_seen_ms"), u.get("inside_ip"),
                            tuple(u["ports"]) if u.get("ports") else None) for u in ans.get("end_unknown") or ()))
    return (status, None, rows, unknown)


def _end_unknown(ivs: list, to_ms: int, stale: int) -> list[dict]:
    """Silent sessions whose lost-Stop window ran out before ``to_ms`` (written from the rule,
    not with ``stream.intervals.last_seen``): no Stop, no lease that ended first, no later
    holder (that would have set an end)."""
    return [{"subscriber": x.holder, "from_ms": x.start_ms, "last_seen_ms": x.last_ms}
            for x in ivs if x.end_ms is None and x.start_ms < to_ms and x.last_ms + stale < to_ms
            and (x.until_ms is None or x.until_ms > x.last_ms + stale)]


class Model:
    def __init__(self, applied: Applied, rules: dict, bound_ms: int) -> None:
        self.a = applied
        self.rules = rules
        self.bound_ms = bound_ms

    def _ivs(self, op: str, slot: str, addr: Any, sent_ms: int, recv_ms: int, keys: list) -> tuple[list, list]:
        """(intervals certainly present, intervals that may or may not be) of every table key
        that can hold ``addr``."""
        r = self.rules[op]
        sure, maybe = [], []
        for net in iv.candidate_networks(addr):
            k = (op, slot, ip_text(net))
            ivs = self.a.keys.get(k)
            if not ivs:
                continue
            keys.append(k)
            for x in ivs:
                exp = iv.expiry_ms(x, ttl_ms=r.ttl_ms, stale_after_ms=r.stale_after_ms)
                if exp > recv_ms:
                    sure.append(x)
                elif exp + self.bound_ms > sent_ms:
                    maybe.append(x)
        return sure, maybe

    def _resolve(self, op: str, addr: Any, port: Optional[int], f: int, t: int, nat: list, ip_of) -> dict:
        """``Pipeline.resolve`` on given intervals (``ip_of(inside address)`` → its intervals)."""
        stale = self.rules[op].stale_after_ms
        held = iv.during(nat, f, t, port=port, stale_after_ms=stale)
        if held:
            if port is None:
                return {"status": "ambiguous", "candidates": len({h.holder for h in held})}
            rows, unknown = [], []
            for h in held:
                inside = ipaddress.ip_address(h.holder)
                ports = [h.port_first, h.port_last]
                ivs = ip_of(inside)
                for r in iv.during(ivs, h.from_ms, h.to_ms, stale_after_ms=stale):
                    rows.append({"subscriber": r.holder, "from_ms": r.from_ms, "to_ms": r.to_ms,
                                 "inside_ip": h.holder, "ports": ports})
                unknown += [{**u, "inside_ip": h.holder, "ports": ports} for u in _end_unknown(ivs, h.to_ms, stale)]
        else:
            ivs = ip_of(addr)
            rows = [{"subscriber": h.holder, "from_ms": h.from_ms, "to_ms": h.to_ms}
                    for h in iv.during(ivs, f, t, stale_after_ms=stale)]
            unknown = _end_unknown(ivs, t, stale)
        return {"status": "ok" if rows else (END_UNKNOWN if unknown else "no-data"), "holders": rows,
                "end_unknown": unknown}

    def expect(self, q: dict, sent_ms: int, recv_ms: int) -> Expected:
        op, port, f, t = q["operator"], q.get("port"), int(q["from_ms"]), int(q["to_ms"])
        addr = ipaddress.ip_address(q["ip"])
        keys: list = []
        nat_sure, nat_maybe = self._ivs(op, "nat", addr, sent_ms, recv_ms, keys)
        cache: dict = {}

        def ip_side(inside):
            if inside not in cache:
                cache[inside] = self._ivs(op, "ip", inside, sent_ms, recv_ms, keys)
            return cache[inside]

        ip_side(addr)
        answers = [normalise(self._resolve(op, addr, port, f, t, nat_sure, lambda a: ip_side(a)[0]))]
        if nat_maybe or any(ip_side(a)[1] for a in list(cache)):
            # sweeping of the intervals in their expiry window: all of them done, or none yet
            both = normalise(self._resolve(op, addr, port, f, t, nat_sure + nat_maybe,
                                           lambda a: ip_side(a)[0] + ip_side(a)[1]))
            if both not in answers:
                answers.append(both)
        return Expected(answers, any(a[0] == END_UNKNOWN or a[3] for a in answers), keys)

    def accepts(self, exp: Expected, got: dict) -> bool:
        return normalise(got) in exp.answers
