"""Statistics records: a binding with every raw identifier replaced.

Schema version 3 (JSON Schema: ``docs/stats-schema.json``; prose: ``docs/statistics.md``)::

    {"v": 3, "id": <record id>, "kind", "action", "operator",
     "bucket_ms": <start of the coarse time bucket>, "bucket_len_ms": <its length>,
     "epoch": <key epoch of the pseudonyms>, "subscriber": <pseudonym or null>,
     "ip": <address pseudonym per policy, or null>, "prefixlen": <length of the bound prefix>,
     "inside": <NAT inside address pseudonym, or null>,
     "counters": <"log2" | "drop" | "exact">, "octets_in", "octets_out", "session_time_s",
     "nat_block_size"}

Why each choice:

- ``id`` is HMAC-SHA256 under the record's epoch key of the binding's canonical JSON, so a
  re-delivered binding yields the same id (consumers drop duplicates) while nobody without the
  key can test a guess of the raw fields against it; it is shredded with the epoch.
- ``subscriber`` is HMAC-SHA256 under the epoch key: stable and joinable within one epoch,
  unlinkable across epochs once the older epoch's key is destroyed (``stream.keyring``).  NAT
  records have no subscriber (the CGNAT log names only the inside address): ``null``.
- ``bucket_ms`` replaces the exact event time: the exact instant of a session start is a strong
  quasi-identifier when joined with anything else.  ``at_ms`` is never copied, and the Kafka
  record timestamp is bucket-aligned too (``record_timestamp_ms``; the stats topic uses
  CreateTime for that).
- ``octets_in``/``octets_out``/``session_time_s`` go through the profile's ``counters`` scheme
  (``coarsen``): exact values are a join key back to the bindings topic (9 of 9
  pseudonyms relinked by matching octets, session time and bucket), so by default each is
  rounded down to a power of two; ``drop`` removes them, ``exact`` must be chosen on purpose.
- Nothing raw — address, subscriber id, MAC, DUID, client id, circuit/remote id, session id,
  NAS — is ever copied; ``tests/unit/test_stats.py`` checks that field by field and the leak
  test (``tests/e2e/test_stats_leak.py``) scans every byte of the topics.

Domain separation: the same epoch HMAC key makes record ids and subscriber pseudonyms, so each
input is prefixed (``"subscriber\\0"``, ``"record\\0"``): a subscriber id equal to some binding's
JSON can never collide across the two uses.

``StatsBuilder`` is the pure batch path the agent uses: it groups addresses by epoch and calls
the scheme's ``encrypt_many`` once per (epoch, batch), which is where pfx/Crypto-PAn speed
comes from (``stream.pseudonym``).
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple, Optional, Sequence

from .config import OperatorPolicy
from .errors import CryptoError
from .keyring import Keyring, epoch_of
from .model import Binding, address_text
from .consent import normalise_subscriber

#: ``json.dumps(obj, separators=(",", ":"))`` with one encoder for the process: ``dumps`` with any
#: option builds a new ``JSONEncoder`` per call, a large part of a stats record's encode
compact_json = json.JSONEncoder(separators=(",", ":")).encode

_esc = json.encoder.encode_basestring_ascii  # what the encoder writes for a str (ensure_ascii)


class _NotPlain(Exception):
    pass


def _not_plain() -> str:
    raise _NotPlain


def flat_json(fields: tuple[str, ...], probes: Sequence[dict[str, Any]]) -> Any:
    """``compact_json`` for flat dicts whose keys are exactly ``fields`` in that order and whose
    values are text, ``int`` or ``None``, as one generated string concatenation
    (``encode_basestring_ascii``, ``int.__repr__``, ``null``: what the encoder writes for them);
    any other dict (another key order, a float or bool value) takes ``compact_json``.  The
    result must be exactly ``compact_json(d)``: checked at import on ``probes`` (else
    ``compact_json`` itself is returned) and by ``tests/unit/test_stats_fastpaths.py``.  The
    encoder builds a C encoder object per call, ~2x this for a stats record."""
    parts = []
    for i, name in enumerate(fields):
        head = ("{" if i == 0 else ",") + json.dumps(name) + ":"
        parts.append(f"{head!r} + (_esc(v) if type(v := d[{name!r}]) is str else 'null' if v is None "
                     f"else _int(v) if type(v) is int else _not_plain())")
    src = ("def _flat(d):\n    if tuple(d) != _F:\n        return _slow(d)\n    try:\n        return ("
           + "\n            + ".join(parts) + " + '}')\n    except _NotPlain:\n        return _slow(d)\n")
    ns: dict[str, Any] = {"_esc": _esc, "_int": int.__repr__, "_not_plain": _not_plain, "_NotPlain": _NotPlain,
                          "_slow": compact_json, "_F": tuple(fields)}
    try:
        exec(src, ns)  # noqa: S102 - our own field names only
        fast = ns["_flat"]
        if all(fast(p) == compact_json(p) for p in probes):
            return fast
    except Exception:  # noqa: BLE001 - anything odd: the encoder
        pass
    return compact_json


STATS_SCHEMA_VERSION = 3
DEFAULT_BUCKET_MS = 3_600_000

#: every key of a version-2 record, in emission order (the JSON Schema lists the same)
FIELDS = ("v", "id", "kind", "action", "operator", "bucket_ms", "bucket_len_ms", "epoch", "subscriber",
          "ip", "prefixlen", "inside", "counters", "octets_in", "octets_out", "session_time_s",
          "nat_block_size")

SUBSCRIBER_DOMAIN = "subscriber\0"
RECORD_DOMAIN = "record\0"
INSIDE_DOMAIN = "inside\0"


def bucket_of(at_ms: int, bucket_ms: int = DEFAULT_BUCKET_MS) -> int:
    """Start of the bucket containing ``at_ms`` (buckets align to the Unix epoch, hence to UTC
    days, because ``stream.config`` only accepts bucket lengths that divide a day)."""
    return at_ms - at_ms % bucket_ms


def record_timestamp_ms(bucket_start_ms: int, now_ms: int, bucket_ms: int = DEFAULT_BUCKET_MS) -> int:
    """The Kafka timestamp of a stats record whose event lies in the bucket starting at
    ``bucket_start_ms``, processed at ``now_ms``: that bucket start, but never later than the
    current bucket's start (an event clock running ahead must not stamp the future: the topic's
    retention bound allows only ``message.timestamp.after.max.ms`` of skew) and never earlier
    than the previous bucket's start (a replay of old data would otherwise be deleted on
    arrival; the record's ``bucket_ms`` already says it is late).  Every value is a bucket
    start, so the timestamp carries nothing finer than the bucket (the append time
    was 0.56-1.24 s after the event)."""
    now_bucket = bucket_of(now_ms, bucket_ms)
    return min(now_bucket, max(bucket_start_ms, now_bucket - bucket_ms))


def coarsen(value: Any, scheme: str) -> Any:
    """One counter (octets, seconds) as the profile's ``counters`` scheme carries it:
    ``log2`` = the largest power of two <= value (0 stays 0: the class [2^n, 2^(n+1)) is named
    by its lower bound), ``drop`` = None, ``exact`` = unchanged.  ``value`` as the binding
    holds it: ``Binding`` does not type-check counters (an old JSON binding may carry a float),
    so ``value`` is untyped: ``exact`` passes any value on, ``log2`` of a float raises
    ``AttributeError`` in both forms (compiled, an ``int`` annotation raised ``TypeError``)."""
    if value is None or scheme == "exact":
        return value
    if scheme == "drop":
        return None
    if scheme == "log2":
        return 0 if value <= 0 else 1 << (value.bit_length() - 1)
    raise ValueError(f"unknown counters scheme {scheme!r}")


def nat_block_size(b: Binding) -> Optional[int]:
    if b.port_first is None or b.port_last is None:
        return None
    return b.port_last - b.port_first + 1


def stats_record(
    b: Binding,
    *,
    record_id: str,
    epoch: int,
    subscriber: Optional[str],
    ip: Optional[str],
    inside: Optional[str] = None,
    bucket_ms: int = DEFAULT_BUCKET_MS,
    counters: str = "log2",
) -> dict[str, Any]:
    """The version-2 record for ``b`` from already-computed pseudonyms (pure, no keys here).

    ``ip``/``inside`` are the address scheme's text output (or None for ``drop``)."""
    raw: Any = b  # untyped counters: see coarsen (compiled code would check the annotation first)
    return {
        "v": STATS_SCHEMA_VERSION,
        "id": record_id,
        "kind": b.kind,
        "action": b.action,
        "operator": b.operator,
        "bucket_ms": bucket_of(b.at_ms, bucket_ms),
        "bucket_len_ms": bucket_ms,
        "epoch": epoch,
        "subscriber": subscriber,
        "ip": ip,
        "prefixlen": b.ip.prefixlen if b.ip is not None else None,
        "inside": inside,
        "counters": counters,
        "octets_in": coarsen(raw.octets_in, counters),
        "octets_out": coarsen(raw.octets_out, counters),
        "session_time_s": coarsen(raw.session_time_s, counters),
        "nat_block_size": nat_block_size(b),
    }


def _record_probes() -> list[dict[str, Any]]:
    base = dict.fromkeys(FIELDS)
    return [{**base, "v": 3, "id": "0f" * 16, "kind": "radius", "action": "stop", "operator": "op\u00e9\"\\\n",
             "bucket_ms": 1_765_000_000_000, "bucket_len_ms": 3_600_000, "epoch": 20_000, "subscriber": "ab" * 16,
             "ip": "100.64.1.0/24", "prefixlen": 24, "counters": "log2", "octets_in": 2**70, "octets_out": 0,
             "session_time_s": -1, "nat_block_size": 1024},
            base, {**base, "octets_in": 1.5, "octets_out": True}, {**base, "extra": 1}, dict(reversed(base.items()))]


#: ``compact_json(record)`` for a stats record (``stats_record``'s keys, in its order): the
#: per-record topic's value bytes, unchanged
record_json = flat_json(FIELDS, _record_probes())


def holder_of(b: Binding) -> Optional[str]:
    """The subscriber identity consent and distinct counts are about (None for NAT)."""
    return b.subscriber if b.kind != "nat" else None


class Built(NamedTuple):
    """One binding's result: ``record`` (None when dropped) and, for counting, the holder
    pseudonym and the aggregate prefix cell text (neither raw).  A named tuple: one per binding
    on the stats stage, and a frozen dataclass's ``__init__`` (``object.__setattr__`` per field)
    cost about twice its construction."""

    binding: Binding
    epoch: int
    record: Optional[dict[str, Any]]
    holder: Optional[str]
    cell: str


def _text(a: Any, prefixlen: Optional[int] = None) -> Optional[str]:
    if a is None:
        return None
    if prefixlen is not None and prefixlen < a.max_prefixlen:
        return address_text(_masked(a, prefixlen))
    return address_text(a)  # str(a), without ipaddress's Python-level IPv4 formatting


class StatsBuilder:
    """Pseudonymises batches of one operator's bindings under its statistics ``Keyring``.

    ``cell_v4``/``cell_v6``: the prefix lengths of aggregate cells (default the policy's
    truncate lengths, else /24 and /48).  For prefix-preserving schemes the cell is the
    pseudonymised prefix (one cell per real prefix, names unlinkable to it); for
    ``ipcrypt-det`` (no structure survives) the cell is the det pseudonym of the truncated
    network; for ``truncate`` it is the truncated network itself; for ``drop`` it is ``"*"``.
    """

    def __init__(self, policy: OperatorPolicy, ring: Keyring) -> None:
        if ring.operator != policy.name:
            raise CryptoError("keyring belongs to another operator")
        self.policy = policy
        self.ring = ring
        st = policy.statistics
        self.scheme = st.address
        self.bucket_ms = st.bucket_ms
        self.counters = st.counters
        self.keep_subscriber = st.subscriber != "drop"
        self.cell_v4 = st.address.v4_prefix if st.address.v4_prefix is not None else 24
        self.cell_v6 = st.address.v6_prefix if st.address.v6_prefix is not None else 48
        self._cells: dict[tuple[int, int], str] = {}    # masked cell → text (pools repeat)

    def __repr__(self) -> str:
        return f"StatsBuilder({self.policy.name!r}, scheme={self.scheme})"

    def epoch(self, at_ms: int) -> int:
        return epoch_of(at_ms, self.policy.key_epoch_ms)

    def _scheme(self, epoch: int):
        a = self.scheme
        return self.ring.address_scheme(a.kind, epoch, v4_prefix=a.v4_prefix, v6_prefix=a.v6_prefix)

    def _cell_text(self, a: Any) -> str:
        """``a``'s aggregate cell (its /cell_v4 or /cell_v6 network) as text, cached: operator
        addresses come from few pools, so most lookups hit."""
        v = a.version
        n = self.cell_v4 if v == 4 else self.cell_v6
        bits = a.max_prefixlen
        key = (v, int(a) & (_ONES[v] ^ ((1 << (bits - n)) - 1)))  # _masked's integer: no object on a hit
        t = self._cells.get(key)
        if t is None:
            if len(self._cells) > 200_000:
                self._cells.clear()
            t = self._cells[key] = f"{type(a)(key[1])}/{n}"
        return t

    def build_many(self, bindings: Sequence[Binding], raw: Optional[Sequence[bytes]] = None) -> list[Built]:
        """One ``Built`` per binding with an address, in input order (resets carry no address
        and are skipped).  ``raw``: each binding's JSON (``Binding.to_json()`` bytes: an old JSON
        record as read from the bindings topic, which now carries ``stream.binding_wire``); it saves re-serialising
        for the record id, and the id is the same either way.  Bindings whose event time lies in an epoch whose key is already
        destroyed cannot be pseudonymised any more: they are left out and listed in
        ``self.late`` (the agent counts them).  Key problems raise ``CryptoError``."""
        self.late: list[Binding] = []
        by_epoch: dict[int, list[int]] = {}
        keep = [i for i, b in enumerate(bindings) if b.action != "reset" and b.ip is not None]
        items = [bindings[i] for i in keep]
        raws = [raw[i] for i in keep] if raw is not None else None
        epochs = []
        for i, b in enumerate(items):
            e = self.epoch(b.at_ms)
            epochs.append(e)
            by_epoch.setdefault(e, []).append(i)
        out: list[Optional[Built]] = [None] * len(items)
        for e, idx in by_epoch.items():
            if e < self.ring.oldest_epoch:
                self.late.extend(items[i] for i in idx)
                continue
            self._build_epoch(e, [items[i] for i in idx], idx, out,
                              [raws[i] for i in idx] if raws is not None else None)
        return [x for x in out if x is not None]

    def _build_epoch(self, e: int, bs: list[Binding], idx: list[int], out: list,
                     raws: Optional[list[bytes]]) -> None:
        h = self.ring.hmac(e)
        scheme = self._scheme(e)
        kind = self.scheme.kind
        # addresses: the bound network's address, plus NAT inside addresses, in one call
        addrs = [b.ip.network_address for b in bs]  # type: ignore[union-attr]
        inside_pos = [k for k, b in enumerate(bs) if b.inside_ip is not None]
        addrs += [bs[k].inside_ip for k in inside_pos]
        if kind == "ipcrypt-det":
            trunc = [_masked(a, self.cell_v4 if a.version == 4 else self.cell_v6) for a in addrs[:len(bs)]]
            enc = scheme.encrypt_many(addrs + trunc)
            cells = [str(c) for c in enc[len(addrs):]]
            enc = enc[:len(addrs)]
        else:
            enc = scheme.encrypt_many(addrs)
            cells = []
            for k, b in enumerate(bs):
                a = enc[k]
                if a is None:
                    cells.append("*")
                else:
                    cells.append(self._cell_text(a))
        inside = {k: enc[len(bs) + j] for j, k in enumerate(inside_pos)}
        holders = [holder_of(b) for b in bs]
        # distinct-count identity: the subscriber pseudonym, or for NAT a pseudonym of the
        # inside address (never emitted; only the aggregator counts it)
        # of the id as consent sees it (stream.consent.normalise_subscriber): spellings that one
        # withdrawal stops must share the pseudonym its erasure notices name
        counted = h.pseudonym_many(SUBSCRIBER_DOMAIN + normalise_subscriber(x) if x is not None
                                   else INSIDE_DOMAIN + str(b.inside_ip) for x, b in zip(holders, bs))
        if raws is None:
            raws = [b.to_json() for b in bs]
        rids = [d[:16].hex() for d in h.digest_many(_RECORD_PREFIX + r for r in raws)]
        for k, b in enumerate(bs):
            sub = counted[k] if holders[k] is not None else None
            plen = b.ip.prefixlen  # type: ignore[union-attr]
            ip = _text(enc[k], plen if kind in ("ipcrypt-pfx", "cryptopan") else None)
            rec = stats_record(b, record_id=rids[k], epoch=e,
                               subscriber=sub if self.keep_subscriber else None,
                               ip=ip, inside=_text(inside.get(k)), bucket_ms=self.bucket_ms,
                               counters=self.counters)
            if kind == "truncate":  # ``ip`` is the truncated network: say its length
                cut = self.scheme.v4_prefix if b.ip.version == 4 else self.scheme.v6_prefix  # type: ignore[union-attr]
                if cut is not None:
                    rec["prefixlen"] = min(plen, cut)
            out[idx[k]] = Built(b, e, rec, counted[k], cells[k])


_RECORD_PREFIX = RECORD_DOMAIN.encode()
_ONES = {4: (1 << 32) - 1, 6: (1 << 128) - 1}


def _masked(a: Any, n: int) -> Any:
    """The network address of ``a``'s /``n`` (integer masking; ``ip_network`` is ~10x slower)."""
    bits = a.max_prefixlen
    return type(a)(int(a) & (_ONES[a.version] ^ ((1 << (bits - n)) - 1)))
