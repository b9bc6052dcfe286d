"""Operator profiles: one TOML file per operator, loaded into frozen dataclasses.

Loading is pure: the functions take a path (or text plus the name to blame) and return values;
nothing here reads the clock or the environment.  Every problem is a ``ConfigError`` whose
message starts with the file name and names the field (``junet.toml: purposes.lawful_access.
promise: …``) so an operator can fix it without reading code; the worker refuses to start on
any of them.

Schema (unknown keys anywhere are an error, because a misspelt ``legal_minimun`` silently
ignored would be a compliance bug)::

    name = "connect2ip"                 # must equal the file stem; [a-z0-9][a-z0-9_-]*
    display_name = "Connect2IP"
    seed = "001_ef1e2506137d5ea6.txt"   # the privacy policy the profile was derived from
    key_epoch = "24h"                   # pseudonym/shredding key epoch; default min(24h, promise)
    notes = "..."                       # optional: documented choices

    [identity]
    radius_attribute = "User-Name"      # which RADIUS attribute names the subscriber
    dhcp_identifier_order = ["circuit-id", "remote-id", "client-id", "duid", "hwaddr"]

    [separation]                        # optional: identity data that must never sit next to an address
    identity_fields = ["name", "postal_address", "personal_number"]   # the default; also email, phone
                                        # (ipanon report compliance scans the bindings and the
                                        # table's changelog for them: docs/compliance.md)

    [sessions]                          # optional: when a silent session counts as ended
    interim_interval = "15m"            # the NAS's Acct-Interim-Interval
    lost_stop_after = "45m"             # default 3 × interim_interval, or 24h without one

    [purposes.lawful_access]            # raw IP<->subscriber mappings
    promise = "24h"                     # max time raw data may exist after the mapping ends
    legal_minimum = "306d"              # optional (LEK 9 kap.); must be <= promise
    source = "…the policy sentence…"

    [purposes.statistics]               # pseudonymised records and k-anonymous aggregates
    promise = "24h"                     # max age of a pseudonymised statistics record
    aggregates_promise = "365d"         # optional, default = promise
    consent_required = false
    k = 10                              # k-anonymity threshold for aggregate cells (>= 2)
    bucket = "1h"                       # statistics time bucket
    subscriber = "hmac-sha256"          # hmac-sha256 | drop
    address = "truncate:/24,/48"        # ipcrypt-pfx | ipcrypt-det | cryptopan | truncate:/N,/M | drop
    counters = "log2"                   # octets/session time per record: log2 (default) | drop | exact
    erasure = "30d"                     # only with consent_required = true: withdrawal → records gone
    source = "…"

Durations are integers with units ``ms s m h d w`` and may be concatenated (``1h30m``).
Months and years are refused on purpose: "6 månader" is 181 to 184 days depending on where it
starts, and a *promise* must be written as the shortest such span (181d) while a *legal
minimum* must be the longest (10 months = 306d) — the profile author decides, in days.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from .errors import ConfigError

_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

RADIUS_IDENTITY_ATTRIBUTES = ("User-Name", "Calling-Station-Id", "Class", "NAS-Port-Id")
DHCP_IDENTIFIERS = ("circuit-id", "remote-id", "client-id", "duid", "hwaddr")
SUBSCRIBER_SCHEMES = ("hmac-sha256", "drop")
ADDRESS_SCHEMES = ("ipcrypt-pfx", "ipcrypt-det", "cryptopan", "truncate", "drop")
#: how per-record statistics carry octets and session time (``stream.stats.coarsen``): exact
#: counters are a join key back to the raw logs, so the default rounds them down to
#: a power of two and ``exact`` must be chosen on purpose
COUNTER_SCHEMES = ("log2", "drop", "exact")
#: consent_required operators: how long after a withdrawal the subscriber's per-record
#: statistics may still exist on ipanon's topics, unless the profile says ``erasure``
#: ("without undue delay", GDPR art. 12(3)/17: one month at most)
DEFAULT_ERASURE_MS = 30 * 86_400_000
DEFAULT_K = 10
DEFAULT_BUCKET_MS = 3_600_000
DEFAULT_KEY_EPOCH_MS = 86_400_000
#: civil-identity data kinds a profile may declare under ``[separation] identity_fields``: the
#: data C-470/21 requires to be kept apart from IP addresses (``stream.compliance`` knows how
#: to recognise each one); the default is what the issue names: name, postal address, personal number
IDENTITY_FIELD_KINDS = ("name", "postal_address", "personal_number", "email", "phone")
DEFAULT_IDENTITY_FIELDS = ("name", "postal_address", "personal_number")


def parse_duration(text: Any, *, where: str = "duration") -> int:
    """``"24h"`` → 86_400_000.  Raises ``ConfigError`` naming ``where`` on anything else.

    Bare numbers are refused (is ``60`` seconds or ms?), so are months/years (see module doc).
    """
    if not isinstance(text, str):
        raise ConfigError(f"{where}: expected a duration string like \"24h\", got {type(text).__name__}")
    s = text.strip()
    pos, total = 0, 0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _UNITS_MS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        hint = " (write months as days: 6 months = 181d as a promise)" if re.search(r"mo|y", s) else ""
        raise ConfigError(f"{where}: {text!r} is not a duration; use e.g. 90s, 24h, 21d, 1h30m{hint}")
    return total


def format_duration(ms: Optional[int]) -> str:
    """Readable, exact-enough text for tables: ``"22h 53m"``, ``"181d"``, ``"8.0s"``; ∞ for None."""
    if ms is None:
        return "∞"
    if ms < 0:
        return "-" + format_duration(-ms)
    if ms < 60_000:
        return f"{ms / 1000:.1f}s" if ms % 1000 else f"{ms // 1000}s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        q, ms = divmod(ms, size)
        if q:
            parts.append(f"{q}{unit}")
        if len(parts) == 2:
            break
    return " ".join(parts)


@dataclass(frozen=True, slots=True)
class AddressScheme:
    """How statistics records carry the address: ``kind`` plus truncation lengths."""

    kind: str
    v4_prefix: Optional[int] = None
    v6_prefix: Optional[int] = None

    @classmethod
    def parse(cls, text: Any, *, where: str) -> "AddressScheme":
        if not isinstance(text, str):
            raise ConfigError(f"{where}: expected a string, one of {', '.join(ADDRESS_SCHEMES)}")
        if text.startswith("truncate"):
            m = re.fullmatch(r"truncate:/(\d{1,2}),/(\d{1,3})", text)
            if not m or not (0 <= int(m.group(1)) <= 32 and 0 <= int(m.group(2)) <= 128):
                raise ConfigError(f"{where}: {text!r}: write truncate:/V4LEN,/V6LEN with V4LEN <= 32, "
                                  f"V6LEN <= 128, e.g. truncate:/24,/48")
            return cls("truncate", int(m.group(1)), int(m.group(2)))
        if text not in ADDRESS_SCHEMES:
            raise ConfigError(f"{where}: unknown scheme {text!r}; use one of ipcrypt-pfx, ipcrypt-det, "
                              f"cryptopan, truncate:/24,/48, drop")
        return cls(text)

    def __str__(self) -> str:
        if self.kind == "truncate":
            return f"truncate:/{self.v4_prefix},/{self.v6_prefix}"
        return self.kind


@dataclass(frozen=True, slots=True)
class IdentityRule:
    """Which input field names the subscriber: a RADIUS attribute, and for DHCP the first
    identifier present in ``dhcp_identifier_order``."""

    radius_attribute: str = "User-Name"
    dhcp_identifier_order: tuple[str, ...] = ("circuit-id", "remote-id", "client-id", "duid", "hwaddr")


@dataclass(frozen=True, slots=True)
class Purpose:
    """A purpose holding raw mappings: its maximum keep time and optional legal minimum."""

    name: str
    promise_ms: int
    legal_minimum_ms: Optional[int] = None
    source: str = ""


@dataclass(frozen=True, slots=True)
class StatisticsPolicy:
    promise_ms: int
    aggregates_promise_ms: int
    consent_required: bool
    k: int = DEFAULT_K
    bucket_ms: int = DEFAULT_BUCKET_MS
    subscriber: str = "hmac-sha256"
    address: AddressScheme = AddressScheme("ipcrypt-pfx")
    source: str = ""
    counters: str = "log2"
    #: consent_required only (else None): withdrawal → records physically gone (stream.policy)
    erasure_ms: Optional[int] = None


#: the lost-Stop window without a configured interim interval: a day of silence
DEFAULT_LOST_STOP_MS = 24 * 3600 * 1000
#: interim updates a session may miss before it is taken as ended (its Stop was lost)
MISSED_INTERIMS = 3


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """``[sessions]``: ``interim_interval`` is the NAS's Acct-Interim-Interval; ``lost_stop_after``
    is how long an open session (no Stop, no lease end) may stay silent and still count as held.

    Default window: ``MISSED_INTERIMS`` interim intervals when the interval is known (a session
    that missed three interims in a row has most likely ended), else ``DEFAULT_LOST_STOP_MS``.
    Past the window a lookup no longer names the holder as confirmed: it answers *end unknown*
    with the last holder and when it was last seen (``stream.intervals.last_seen``)."""

    interim_interval_ms: Optional[int] = None
    lost_stop_after_ms: Optional[int] = None

    @property
    def lost_stop_window_ms(self) -> int:
        if self.lost_stop_after_ms is not None:
            return self.lost_stop_after_ms
        if self.interim_interval_ms is not None:
            return MISSED_INTERIMS * self.interim_interval_ms
        return DEFAULT_LOST_STOP_MS


@dataclass(frozen=True, slots=True)
class OperatorPolicy:
    """One operator's profile.  ``path`` is kept so later checks (``stream.policy``) can name
    the file when a promise cannot be kept on the actual broker."""

    name: str
    display_name: str
    seed: str
    key_epoch_ms: int
    identity: IdentityRule
    lawful_access: Purpose
    statistics: StatisticsPolicy
    notes: str = ""
    path: str = field(default="", compare=False)
    #: CGNAT: ``[realms.*]`` (stream.realm.RealmMap) and ``[[deterministic_nat]]`` versions (stream.detnat)
    realms: Any = None
    deterministic_nat: tuple = ()
    #: ``[sessions]``: how long an open session may stay silent before it is no longer taken as
    #: current (a lost Stop); see ``lost_stop_window_ms``
    sessions: "SessionPolicy" = field(default_factory=lambda: SessionPolicy())
    #: ``[separation] identity_fields``: civil-identity kinds that must never appear beside an address
    identity_fields: tuple[str, ...] = DEFAULT_IDENTITY_FIELDS

    @property
    def file(self) -> str:
        return Path(self.path).name if self.path else f"{self.name}.toml"


# -- loading ------------------------------------------------------------------------------

_TOP = {"name", "display_name", "seed", "key_epoch", "notes", "identity", "purposes", "realms", "deterministic_nat",
        "separation",
        "sessions"}
_SESSIONS = {"interim_interval", "lost_stop_after"}
_IDENTITY = {"radius_attribute", "dhcp_identifier_order"}
_PURPOSES = {"lawful_access", "statistics"}
_LAWFUL = {"promise", "legal_minimum", "source"}
_STATS = {"promise", "aggregates_promise", "consent_required", "k", "bucket", "subscriber", "address", "source",
          "counters", "erasure"}


class _Reader:
    """Pulls typed fields out of one table and remembers the dotted path for messages."""

    def __init__(self, file: str, table: Any, prefix: str, allowed: set[str]) -> None:
        self.file, self.prefix = file, prefix
        if not isinstance(table, dict):
            raise ConfigError(f"{file}: {prefix or 'top level'}: expected a table")
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise ConfigError(f"{file}: {self.where(unknown[0])}: unknown key "
                              f"(allowed: {', '.join(sorted(allowed))})")
        self.table = table

    def where(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def err(self, key: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self.where(key)}: {msg}")

    def has(self, key: str) -> bool:
        return key in self.table

    def str(self, key: str, default: Optional[str] = None) -> str:
        v = self.table.get(key, default)
        if v is None:
            raise self.err(key, "missing")
        if not isinstance(v, str):
            raise self.err(key, f"expected a string, got {type(v).__name__}")
        return v

    def duration(self, key: str, default: Optional[int] = None, *, positive: bool = True) -> int:
        if key not in self.table:
            if default is None:
                raise self.err(key, "missing")
            return default
        try:
            ms = parse_duration(self.table[key], where=f"{self.file}: {self.where(key)}")
        except ConfigError:
            raise
        if positive and ms <= 0:
            raise self.err(key, "must be longer than 0")
        return ms

    def bool(self, key: str) -> bool:
        if key not in self.table:
            raise self.err(key, "missing (true or false)")
        v = self.table[key]
        if not isinstance(v, bool):
            raise self.err(key, "expected true or false")
        return v

    def int(self, key: str, default: int) -> int:
        v = self.table.get(key, default)
        if not isinstance(v, int) or isinstance(v, bool):
            raise self.err(key, "expected an integer")
        return v

    def sub(self, key: str, allowed: set[str], *, required: bool = True) -> Optional["_Reader"]:
        if key not in self.table:
            if required:
                raise self.err(key, "missing table")
            return None
        return _Reader(self.file, self.table[key], self.where(key), allowed)


def parse_operator(text: str, *, file: str) -> OperatorPolicy:
    """Parse one profile from TOML text; ``file`` (e.g. ``junet.toml``) is used in messages and
    its stem must equal ``name``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{file}: not valid TOML: {e}") from None
    top = _Reader(file, data, "", _TOP)
    name = top.str("name")
    if not _NAME.match(name):
        raise top.err("name", f"{name!r} must match [a-z0-9][a-z0-9_-]* (it appears in topic headers)")
    stem = Path(file).stem
    if stem != name:
        raise top.err("name", f"{name!r} differs from the file name {stem!r}; rename one of them")

    ident = top.sub("identity", _IDENTITY)
    assert ident is not None
    radius_attr = ident.str("radius_attribute", "User-Name")
    if radius_attr not in RADIUS_IDENTITY_ATTRIBUTES:
        raise ident.err("radius_attribute", f"{radius_attr!r} is not one of {', '.join(RADIUS_IDENTITY_ATTRIBUTES)}")
    order = ident.table.get("dhcp_identifier_order", list(IdentityRule().dhcp_identifier_order))
    if (not isinstance(order, list) or not order or not all(isinstance(x, str) for x in order)):
        raise ident.err("dhcp_identifier_order", "expected a non-empty list of strings")
    bad = [x for x in order if x not in DHCP_IDENTIFIERS]
    if bad:
        raise ident.err("dhcp_identifier_order", f"{bad[0]!r} is not one of {', '.join(DHCP_IDENTIFIERS)}")
    if len(set(order)) != len(order):
        raise ident.err("dhcp_identifier_order", "lists an identifier twice")

    purposes = top.sub("purposes", _PURPOSES)
    assert purposes is not None
    la = purposes.sub("lawful_access", _LAWFUL)
    assert la is not None
    promise = la.duration("promise")
    legal_min = la.duration("legal_minimum") if la.has("legal_minimum") else None
    if legal_min is not None and legal_min > promise:
        raise la.err("legal_minimum", f"{format_duration(legal_min)} exceeds purposes.lawful_access.promise "
                                      f"({format_duration(promise)}): the law would force keeping data "
                                      f"longer than the operator promises; fix the policy or the profile")
    lawful = Purpose("lawful_access", promise, legal_min, la.str("source", ""))

    st = purposes.sub("statistics", _STATS)
    assert st is not None
    s_promise = st.duration("promise")
    k = st.int("k", DEFAULT_K)
    if k < 2:
        raise st.err("k", f"{k} is not a k-anonymity threshold; use 2 or more (default {DEFAULT_K})")
    bucket = st.duration("bucket", DEFAULT_BUCKET_MS)
    if 86_400_000 % bucket:
        raise st.err("bucket", f"{format_duration(bucket)} must divide a day evenly (buckets align to UTC days)")
    subscriber = st.str("subscriber", "hmac-sha256")
    if subscriber not in SUBSCRIBER_SCHEMES:
        raise st.err("subscriber", f"unknown scheme {subscriber!r}; use one of {', '.join(SUBSCRIBER_SCHEMES)}")
    counters = st.str("counters", "log2")
    if counters not in COUNTER_SCHEMES:
        raise st.err("counters", f"unknown scheme {counters!r}; use one of {', '.join(COUNTER_SCHEMES)}")
    consent_required = st.bool("consent_required")
    erasure: Optional[int] = None
    if consent_required:
        erasure = st.duration("erasure", min(DEFAULT_ERASURE_MS, s_promise))
    elif st.has("erasure"):
        raise st.err("erasure", "applies only with consent_required = true (records without consent "
                                "follow purposes.statistics.promise)")
    stats = StatisticsPolicy(
        promise_ms=s_promise,
        aggregates_promise_ms=st.duration("aggregates_promise", s_promise),
        consent_required=consent_required,
        counters=counters,
        erasure_ms=erasure,
        k=k,
        bucket_ms=bucket,
        subscriber=subscriber,
        address=AddressScheme.parse(st.table.get("address", "ipcrypt-pfx"), where=f"{file}: {st.where('address')}"),
        source=st.str("source", ""),
    )
    # The key epoch rotates the *statistics* keys (subscriber pseudonyms, address schemes); the
    # raw mappings have their own, much shorter, sealing epochs (agents/vault.py).  A statistics
    # record must not stay linkable longer than the statistics promise allows.
    key_epoch = top.duration("key_epoch", min(DEFAULT_KEY_EPOCH_MS, s_promise))
    if key_epoch > s_promise:
        raise top.err("key_epoch", f"{format_duration(key_epoch)} is longer than purposes.statistics.promise "
                                   f"({format_duration(s_promise)}): pseudonyms would stay linkable after the "
                                   f"records they join should be gone")
    return OperatorPolicy(
        name=name,
        display_name=top.str("display_name", name),
        seed=top.str("seed", ""),
        key_epoch_ms=key_epoch,
        identity=IdentityRule(radius_attr, tuple(order)),
        lawful_access=lawful,
        statistics=stats,
        notes=top.str("notes", ""),
        path=file,
        realms=_cgnat_realms(data.get("realms"), file),
        deterministic_nat=_cgnat_detnat(data.get("deterministic_nat"), file),
        sessions=_sessions(top),
        identity_fields=_identity_fields(top),
    )


def _identity_fields(top: "_Reader") -> tuple[str, ...]:
    sep = top.sub("separation", {"identity_fields"}) if top.has("separation") else None
    if sep is None or not sep.has("identity_fields"):
        return DEFAULT_IDENTITY_FIELDS
    v = sep.table["identity_fields"]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise sep.err("identity_fields", f"expected a list of strings from {', '.join(IDENTITY_FIELD_KINDS)}")
    bad = [x for x in v if x not in IDENTITY_FIELD_KINDS]
    if bad:
        raise sep.err("identity_fields", f"{bad[0]!r} is not one of {', '.join(IDENTITY_FIELD_KINDS)}")
    if len(set(v)) != len(v):
        raise sep.err("identity_fields", "lists a field twice")
    return tuple(v)


def _sessions(top: "_Reader") -> SessionPolicy:
    se = top.sub("sessions", _SESSIONS) if top.has("sessions") else None
    if se is None:
        return SessionPolicy()
    interim = se.duration("interim_interval") if se.has("interim_interval") else None
    after = se.duration("lost_stop_after") if se.has("lost_stop_after") else None
    if interim is not None and interim <= 0:
        raise se.err("interim_interval", "must be positive")
    if after is not None and after <= 0:
        raise se.err("lost_stop_after", "must be positive")
    if after is not None and interim is not None and after < interim:
        raise se.err("lost_stop_after", f"{format_duration(after)} is shorter than interim_interval "
                                        f"({format_duration(interim)}): every live session would look ended "
                                        f"between two interim updates")
    return SessionPolicy(interim, after)


def _cgnat_realms(raw: Any, file: str) -> Any:
    from .realm import parse_realms  # imported here: stream.realm/detnat sit above the parsers

    return parse_realms(raw, file=file)


def _cgnat_detnat(raw: Any, file: str) -> tuple:
    from .detnat import parse_versions

    return parse_versions(raw, file=file)


def load_operator(path: Union[str, Path]) -> OperatorPolicy:
    """Load one profile file.  The returned ``path`` is the one given (for messages)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read operator profile: {e.strerror}") from None
    from dataclasses import replace

    return replace(parse_operator(text, file=p.name), path=str(p))


def load_operators(directory: Union[str, Path]) -> dict[str, OperatorPolicy]:
    """Every ``*.toml`` in ``directory``, keyed by operator name (sorted).  An empty or missing
    directory is an error: a worker without any promise to keep must not start."""
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(f"{d}: operator profile directory does not exist")
    files = sorted(d.glob("*.toml"))
    if not files:
        raise ConfigError(f"{d}: no operator profiles (*.toml) found")
    return {op.name: op for op in (load_operator(f) for f in files)}
