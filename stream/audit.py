"""The hash-chained audit trail of lawful access: what was asked, checked, approved, disclosed.

Every lawful-access step (request received, refusal with its reason, approval, answer, expiry,
legal hold) becomes one *record*: a flat JSON object with a sequence number, the hash of the
previous record and its own hash.  The operator must be able to show afterwards exactly what
happened (ITS rapport 27), so a verifier must notice any record that was changed,
removed, inserted or reordered, and say where:

- changed:   the record's own hash no longer matches its content (or its bytes are not the
             canonical encoding of that content, so even a no-op byte edit is caught);
- removed:   the sequence number jumps forward and the missing number appears nowhere later;
- reordered: the sequence number jumps and the missing number appears later in the trail;
- inserted:  a sequence number repeats or goes backwards, or a record's ``prev`` is not the
             hash of the record before it (a self-consistent forgery still breaks the link).

A plain hash chain has no secret: someone who rewrites a record *and every record after it*
produces a consistent chain.  That is caught only against an anchor kept elsewhere (a head
hash printed into a ticket, a second copy): ``verify(..., expect_head=...)``.

No plaintext identity: a record may only carry the fields in ``FIELDS`` (request id,
authority, basis, case reference, digests, reason codes, staff ids, counts), never an address,
port or subscriber.  The address asked about is pinned by ``request_digest`` (SHA-256 of the
signed request), and the disclosure by ``answer_digest`` (SHA-256 of the sealed answer).

Record layout (``v`` = 1), encoded as canonical JSON (sorted keys, no whitespace, ASCII)::

    {"hash": hex, "prev": hex, "seq": int, "ts_ms": int, "type": str, "v": 1, ...event fields}

    hash = SHA-256(b"ipanon-audit-v1\\x00" + canonical(record without "hash"))
    prev = hash of record seq-1; 64 zeros (``GENESIS``) for seq 0
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence

from .errors import IpanonError

VERSION = 1
GENESIS = "0" * 64
_DOMAIN = b"ipanon-audit-v1\x00"
CHECKPOINT_DOMAIN = b"ipanon-audit-checkpoint-v1\x00"

#: Event types a trail may contain.
EVENT_TYPES = frozenset({
    "request-received",   # an authentic, well-formed request arrived (before policy checks)
    "refused",            # a request was refused: ``reason`` says why
    "pending",            # waiting for staff approvals (``approvals``, ``needed``)
    "approval",           # one staff approval counted
    "approval-rejected",  # an approval that did not count (``reason``); the request is unchanged
    "ready",              # every check passed and enough approvals: handed to the resolver
    "answered",           # the sealed answer was sent (``answer_digest``)
    "expired",            # a pending request ran out of time
    "legal-hold-received",  # an authentic, well-formed hold order arrived (``requester``, digest)
    "legal-hold-refused",   # a hold order or release was refused: ``reason`` says why
    "legal-hold-pending",   # a hold order waits for staff approvals
    "legal-hold-approval",  # one staff approval of a hold counted
    "legal-hold-approval-rejected",
    "legal-hold-set",     # a preservation order froze expiry for named data (``hold_id``)
    "legal-hold-release-requested",  # one of the two staff releases a hold needs
    "legal-hold-released",
    "checkpoint",         # the desk's signed anchor over (seq, prev, ts_ms): see ``verify_anchored``
    "junk-summary",       # unauthenticated input of one interval, per claimed identity and reason
})

#: Event fields a record may carry, with their JSON types.  Nothing here can hold an address,
#: a port or a subscriber id; ``detail`` is a short machine-made text, never input echoed back.
FIELDS: Mapping[str, tuple[type, ...]] = {
    "request_id": (str,),
    "authority": (str,),
    "basis": (str,),
    "case_ref": (str,),
    "request_digest": (str,),
    "reason": (str,),
    "staff": (str,),
    "approvals": (list,),
    "needed": (int,),
    "answer_digest": (str,),
    "answer_kind": (str,),
    "hold_id": (str,),
    "until_ms": (int,),
    "scope_digest": (str,),
    "detail": (str,),
    "requester": (str,),   # "authority:<id>" or "staff:<id>" of a hold order or release
    "anchor_sig": (str,),  # checkpoint: Ed25519 signature, hex
    "key_id": (str,),      # checkpoint: which anchor key signed it
    "identity": (str,),    # junk-summary: the claimed registered id, "hold" or "unknown"
    "count": (int,),       # junk-summary: how many messages
    "from_ms": (int,),     # junk-summary: start of the interval summarised
}
_HEADER = ("v", "seq", "ts_ms", "prev", "type", "hash")


class AuditError(IpanonError):
    """The trail is broken.  ``kind`` is one of ``malformed``, ``changed``, ``removed``,
    ``reordered``, ``inserted``, ``truncated``; ``index`` is the position in the list given to
    ``verify`` (``offset`` the Kafka offset when the caller passed offsets); ``seq`` is the
    sequence number found there (None when unreadable)."""

    def __init__(self, kind: str, index: int, detail: str, *, seq: Optional[int] = None,
                 offset: Optional[int] = None) -> None:
        where = f"record {index}" + (f" (offset {offset})" if offset is not None else "")
        super().__init__(f"audit trail {kind} at {where}: {detail}")
        self.kind = kind
        self.index = index
        self.seq = seq
        self.offset = offset
        self.detail = detail


def canonical(obj: Mapping[str, Any]) -> bytes:
    """The one byte encoding of a JSON object that every hash and signature is computed over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def record_hash(record: Mapping[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(_DOMAIN + canonical(body)).hexdigest()


def check_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """Validate an event (``type`` + allowed fields) and return a plain copy; raise on anything
    that could smuggle identity into the trail."""
    if event.get("type") not in EVENT_TYPES:
        raise IpanonError(f"audit event type {event.get('type')!r} is not one of EVENT_TYPES")
    out: dict[str, Any] = {"type": event["type"]}
    for k, v in event.items():
        if k == "type":
            continue
        if k not in FIELDS:
            raise IpanonError(f"audit event field {k!r} is not allowed (no plaintext identity in the trail)")
        if v is None:
            continue
        if not isinstance(v, FIELDS[k]) or isinstance(v, bool):
            raise IpanonError(f"audit event field {k!r} has the wrong type")
        if k == "approvals" and not all(isinstance(s, str) for s in v):
            raise IpanonError("audit event field 'approvals' must be a list of staff ids")
        out[k] = list(v) if k == "approvals" else v
    return out


@dataclass(slots=True)
class AuditChain:
    """The appending end of one trail.  Exactly one writer may append to a trail (the audit
    topic has one partition and one producing agent); after a restart, ``resume`` from the
    last record read back from the topic.  State is just ``(next_seq, head)``."""

    next_seq: int = 0
    head: str = GENESIS

    @classmethod
    def resume(cls, last_record: Optional[bytes | Mapping[str, Any]]) -> "AuditChain":
        if last_record is None:
            return cls()
        rec = _parse(last_record, 0, None)
        return cls(next_seq=rec["seq"] + 1, head=rec["hash"])

    def append(self, event: Mapping[str, Any], now_ms: int) -> bytes:
        """Chain one event; return the record's bytes (the value to produce to the audit topic)."""
        body = check_event(event)
        record: dict[str, Any] = {"v": VERSION, "seq": self.next_seq, "ts_ms": int(now_ms),
                                  "prev": self.head, **body}
        record["hash"] = record_hash(record)
        self.next_seq += 1
        self.head = record["hash"]
        return canonical(record)

    def checkpoint(self, private_key: Any, now_ms: int) -> bytes:
        """Append a checkpoint signed with the desk's Ed25519 anchor key: the signature covers
        this record's own ``seq``, ``prev`` (the head it anchors) and ``ts_ms``."""
        pos = {"seq": self.next_seq, "prev": self.head, "ts_ms": int(now_ms)}
        sig = private_key.sign(CHECKPOINT_DOMAIN + canonical(pos))
        return self.append({"type": "checkpoint", "anchor_sig": sig.hex(),
                            "key_id": anchor_key_id(private_key.public_key())}, now_ms)

    def to_dict(self) -> dict[str, Any]:
        return {"next_seq": self.next_seq, "head": self.head}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AuditChain":
        return cls(next_seq=int(d["next_seq"]), head=str(d["head"]))


def legal_hold_event(kind: str, *, hold_id: str, case_ref: str, until_ms: Optional[int] = None) -> dict[str, Any]:
    """The audit event for a legal hold set or released (``kind`` = ``set`` | ``released``).
    Only the hold's id and case reference go in the trail, never its address or port."""
    if kind not in ("set", "released"):
        raise IpanonError("legal hold event kind is 'set' or 'released'")
    return check_event({"type": f"legal-hold-{kind}", "hold_id": hold_id, "case_ref": case_ref,
                        "until_ms": until_ms})


def _parse(raw: bytes | Mapping[str, Any], index: int, offset: Optional[int]) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        rec = dict(raw)
        raw_bytes = None
    else:
        raw_bytes = bytes(raw)
        try:
            rec = json.loads(raw_bytes.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise AuditError("malformed", index, "not a JSON audit record", offset=offset) from None
    if not isinstance(rec, dict) or any(k not in rec for k in _HEADER):
        raise AuditError("malformed", index, "missing header fields", offset=offset)
    seq = rec["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise AuditError("malformed", index, "sequence number is not a non-negative integer", offset=offset)
    if raw_bytes is not None and raw_bytes != canonical(rec):
        raise AuditError("changed", index, "bytes are not the canonical encoding of the record",
                         seq=seq, offset=offset)
    if rec["hash"] != record_hash(rec):
        raise AuditError("changed", index, "content does not match its hash", seq=seq, offset=offset)
    return rec


def verify(records: Sequence[bytes | Mapping[str, Any]], *, offsets: Optional[Sequence[int]] = None,
           start: Optional[tuple[int, str]] = None, expect_head: Optional[str] = None) -> str:
    """Verify a whole trail in order; return the head hash, or raise ``AuditError`` at the first
    broken record.

    ``start = (seq, prev)`` anchors a trail whose beginning was deleted by retention (default:
    the trail starts at seq 0 after ``GENESIS``).  ``expect_head`` compares the last hash with
    an anchor kept elsewhere; a mismatch is reported as ``truncated`` (or rewritten) at the end.
    """
    expected_seq, prev = start if start is not None else (0, GENESIS)
    seen: dict[int, int] = {}  # seq -> index, to tell "inserted" (repeat) from the rest
    parsed: list[Optional[dict[str, Any]]] = [None] * len(records)

    def off(i: int) -> Optional[int]:
        return offsets[i] if offsets is not None else None

    def seq_at(j: int) -> Optional[int]:
        # look-ahead for reordering; an unreadable later record counts as absent
        if parsed[j] is None:
            try:
                parsed[j] = _parse(records[j], j, off(j))
            except AuditError:
                return None
        return parsed[j]["seq"]

    for i in range(len(records)):
        rec = parsed[i] if parsed[i] is not None else _parse(records[i], i, off(i))
        parsed[i] = rec
        seq = rec["seq"]
        if seq < expected_seq or seq in seen:
            first = seen.get(seq)
            where = f"; seq {seq} already at record {first}" if first is not None else ""
            raise AuditError("inserted", i, f"sequence number {seq} where {expected_seq} was due{where}",
                             seq=seq, offset=off(i))
        if seq > expected_seq:
            later = next((j for j in range(i + 1, len(records)) if seq_at(j) == expected_seq), None)
            if later is not None:
                # A swap leaves the trail needing this record later; an extra record does not:
                # after the due seq turns up, the one after it is already the next one.
                if later + 1 < len(records) and seq_at(later + 1) == expected_seq + 1:
                    raise AuditError("inserted", i, f"seq {seq} does not belong here; the trail continues "
                                     f"with seq {expected_seq} at record {later}", seq=seq, offset=off(i))
                raise AuditError("reordered", i, f"holds seq {seq} but seq {expected_seq} is at record {later}",
                                 seq=seq, offset=off(i))
            missing = f"{expected_seq}" if seq == expected_seq + 1 else f"{expected_seq}..{seq - 1}"
            raise AuditError("removed", i, f"seq {missing} missing before this record", seq=seq, offset=off(i))
        if rec["prev"] != prev:
            raise AuditError("inserted", i, "prev does not link to the record before it (forged or replaced)",
                             seq=seq, offset=off(i))
        seen[seq] = i
        prev = rec["hash"]
        expected_seq = seq + 1
    if expect_head is not None and prev != expect_head:
        n = len(records)
        raise AuditError("truncated", n, f"head {prev[:16]}… is not the anchored head {expect_head[:16]}…")
    return prev


def parse_record(raw: bytes | Mapping[str, Any]) -> dict[str, Any]:
    """Parse and self-check one record (its own hash), without chain context: for ``audit show``."""
    return _parse(raw, 0, None)


def trail_for(records: Iterable[bytes | Mapping[str, Any]], *, request_id: Optional[str] = None,
              case_ref: Optional[str] = None) -> list[dict[str, Any]]:
    """The records of one request or one case, in trail order (unparsable records skipped; run
    ``verify`` to learn about those)."""
    out = []
    for raw in records:
        try:
            rec = parse_record(raw)
        except AuditError:
            continue
        if request_id is not None and rec.get("request_id") != request_id:
            continue
        if case_ref is not None and rec.get("case_ref") != case_ref:
            continue
        out.append(rec)
    return out


# --------------------------------------------------------------------------------------------
# the anchor: signed checkpoints
#
# A hash chain has no secret, so anyone who can write the audit topic can append a record that
# links, or rewrite the tail consistently.  The desk therefore appends a ``checkpoint`` after
# every batch of records (and at least every checkpoint period while idle), signed with an
# Ed25519 key only it holds.  ``verify_anchored`` then reports as broken: any record that does
# not link (as ``verify``); a trail that does not start at seq 0 (records deleted from the
# front of an infinite-retention topic); a checkpoint whose signature does not verify; records
# after the last checkpoint older than ``max_unanchored_ms`` (a forged append, or a truncated
# tail that lost its checkpoint); and a last checkpoint older than ``max_checkpoint_age_ms``
# (a tail cut back to an earlier checkpoint).


def anchor_key_id(public_key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class AnchorReport:
    """What ``verify_anchored`` found.  ``problem`` is None when ``ok``; otherwise one of
    ``AuditError`` kinds, ``truncated-front``, ``bad-checkpoint``, ``unanchored``,
    ``stale-anchor``, ``no-checkpoint``."""

    ok: bool
    records: int
    head: Optional[str] = None
    last_checkpoint_seq: Optional[int] = None
    last_checkpoint_ms: Optional[int] = None
    checkpoint_age_ms: Optional[int] = None
    unanchored: int = 0
    problem: Optional[str] = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "records": self.records, "head": self.head,
                "last_checkpoint_seq": self.last_checkpoint_seq, "last_checkpoint_ms": self.last_checkpoint_ms,
                "checkpoint_age_ms": self.checkpoint_age_ms, "unanchored": self.unanchored,
                "problem": self.problem, "detail": self.detail}


def verify_anchored(records: Sequence[bytes | Mapping[str, Any]], *, public_key: Any, now_ms: int,
                    offsets: Optional[Sequence[int]] = None, first_offset: int = 0,
                    max_unanchored_ms: int = 10_000, max_checkpoint_age_ms: Optional[int] = None,
                    clock_skew_ms: int = 120_000) -> AnchorReport:
    """Verify the whole trail (from seq 0) and its signed checkpoints; never raises for a
    broken trail.  ``first_offset``: the topic's log-start offset (> 0 when records were
    deleted even though the topic keeps them for ever)."""
    from cryptography.exceptions import InvalidSignature

    n = len(records)
    if first_offset > 0 or (offsets and offsets[0] > 0):
        return AnchorReport(False, n, problem="truncated-front",
                            detail=f"the trail's first offset is {first_offset or offsets[0]}: records were "
                                   f"deleted from the front of a topic that keeps them for ever")
    try:
        head = verify(records, offsets=offsets)
    except AuditError as e:
        return AnchorReport(False, n, problem=e.kind, detail=str(e))
    if n == 0:
        return AnchorReport(True, 0, head=GENESIS, detail="empty trail")
    kid = anchor_key_id(public_key)
    last_cp: Optional[dict[str, Any]] = None
    last_cp_i = -1
    tail_ts: list[int] = []
    for i, raw in enumerate(records):
        rec = _parse(raw, i, offsets[i] if offsets is not None else None)
        if rec["type"] != "checkpoint":
            tail_ts.append(rec["ts_ms"])
            continue
        pos = {"seq": rec["seq"], "prev": rec["prev"], "ts_ms": rec["ts_ms"]}
        try:
            if rec.get("key_id") != kid:
                raise InvalidSignature()
            public_key.verify(bytes.fromhex(str(rec.get("anchor_sig", ""))), CHECKPOINT_DOMAIN + canonical(pos))
        except (InvalidSignature, ValueError):
            return AnchorReport(False, n, head=head, problem="bad-checkpoint",
                                detail=f"checkpoint at record {i} (seq {rec['seq']}) is not signed by the anchor key")
        last_cp, last_cp_i, tail_ts = rec, i, []
    if last_cp is None:
        return AnchorReport(False, n, head=head, unanchored=n, problem="no-checkpoint",
                            detail="no signed checkpoint anchors this trail")
    age = now_ms - last_cp["ts_ms"]
    base = dict(head=head, last_checkpoint_seq=last_cp["seq"], last_checkpoint_ms=last_cp["ts_ms"],
                checkpoint_age_ms=age, unanchored=len(tail_ts))
    if tail_ts and (now_ms - min(tail_ts) > max_unanchored_ms or max(tail_ts) > now_ms + clock_skew_ms):
        return AnchorReport(False, n, problem="unanchored",
                            detail=f"{len(tail_ts)} record(s) after the last checkpoint (seq {last_cp['seq']}) "
                                   f"were never anchored: forged, or the tail was cut", **base)
    if max_checkpoint_age_ms is not None and age > max_checkpoint_age_ms:
        return AnchorReport(False, n, problem="stale-anchor",
                            detail=f"the last checkpoint is {age // 1000} s old (at most "
                                   f"{max_checkpoint_age_ms // 1000} s expected): the tail may have been cut", **base)
    return AnchorReport(True, n, detail=f"head {head[:12]}…, last checkpoint seq {last_cp['seq']}", **base)
