"""Routing realms: which inside address space a CGNAT log line and an access record belong to.

In CGNAT the inside space (100.64.0.0/10, RFC 6598) is reused per BNG or VRF, so "inside
address → subscriber" is exact only within one realm.  A profile names the realms and what
belongs to each::

    [realms.bng-north]
    collectors = ["192.0.2.1", "cgn1"]   # NAT log sources: syslog host or IPFIX exporter (the NAT binding's nas)
    nas = ["192.0.2.10"]                 # access side: RADIUS NAS / DHCP relay (the access binding's nas)
    vrfs = ["main", "7"]                 # VRF / routing instance as the CGN logs it

A NAT source may serve several realms (one CGN, one VRF per BNG): then only the logged VRF
tells them apart.  An access NAS belongs to at most one realm (checked at load).

``select`` keeps, of the inside address's holders during a port block, those of the block's
realm.  When more than one realm could match — the NAT source is unmapped and holders sit in
different realms, or the source maps to several realms that all have a holder, or a holder's
NAS is unmapped beside a mapped one — the answer is **ambiguous**, never one picked.  Without
a ``[realms]`` section nothing changes (every holder is kept).  Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence, TypeVar

from .errors import ConfigError

_KEYS = {"collectors", "nas", "vrfs"}
T = TypeVar("T")


@dataclass(frozen=True)
class RealmMap:
    collectors: dict[str, frozenset[str]] = field(default_factory=dict)  # source → realms
    nas: dict[str, str] = field(default_factory=dict)                    # access NAS → realm
    vrfs: dict[str, str] = field(default_factory=dict)                   # VRF → realm

    @property
    def configured(self) -> bool:
        return bool(self.collectors or self.nas or self.vrfs)

    def of_nat(self, source: Optional[str], vrf: Optional[str] = None) -> frozenset[str]:
        """Realms a NAT binding from ``source`` (in ``vrf``, when logged) may belong to."""
        if vrf is not None and vrf in self.vrfs:
            return frozenset({self.vrfs[vrf]})
        return self.collectors.get(source or "", frozenset())

    def of_access(self, nas: Optional[str]) -> Optional[str]:
        """A RADIUS session's NAS (``nas`` or ``nas/session``) → its realm, or None when unmapped."""
        if not nas:
            return None
        return self.nas.get(nas) or self.nas.get(nas.split("/", 1)[0])


def parse_realms(raw: Any, *, file: str) -> RealmMap:
    if raw is None:
        return RealmMap()
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: realms: expected tables [realms.<name>]")
    collectors: dict[str, set[str]] = {}
    nas: dict[str, str] = {}
    vrfs: dict[str, str] = {}
    for name, t in raw.items():
        where = f"{file}: realms.{name}"
        if not isinstance(t, dict):
            raise ConfigError(f"{where}: expected a table")
        unknown = sorted(set(t) - _KEYS)
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}: unknown key (allowed: {', '.join(sorted(_KEYS))})")
        for key in _KEYS:
            v = t.get(key, [])
            if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
                raise ConfigError(f"{where}.{key}: expected a list of non-empty strings")
        for c in t.get("collectors", []):
            collectors.setdefault(c, set()).add(name)
        for n in t.get("nas", []):
            if n in nas and nas[n] != name:
                raise ConfigError(f"{where}.nas: {n!r} is already in realm {nas[n]!r}: an access NAS "
                                  f"belongs to one realm")
            nas[n] = name
        for v in t.get("vrfs", []):
            if v in vrfs and vrfs[v] != name:
                raise ConfigError(f"{where}.vrfs: {v!r} is already in realm {vrfs[v]!r}")
            vrfs[v] = name
    return RealmMap({k: frozenset(v) for k, v in collectors.items()}, nas, vrfs)


@dataclass(frozen=True)
class Selection:
    status: str           # "ok" | "ambiguous"
    kept: list            # the holders to answer with (empty when ambiguous)
    realms: tuple = ()    # the realms the candidates span (for the ambiguous answer's detail)


def select(realms: RealmMap, nat_realms: Iterable[str], candidates: Sequence[T], nas_of) -> Selection:
    """Holders of the inside address (``candidates``, each with ``nas_of(c)``) that belong to
    the NAT binding's realm(s) ``nat_realms`` (``RealmMap.of_nat``)."""
    cands = list(candidates)
    if not realms.configured or not cands:
        return Selection("ok", cands)
    want = frozenset(nat_realms)
    tagged = [(realms.of_access(nas_of(c)), c) for c in cands]
    if want:
        hits = [(r, c) for r, c in tagged if r in want]
        unknown = [c for r, c in tagged if r is None]
        spans = {r for r, _ in hits} | ({None} if unknown else set())
        if len(spans) > 1 or (not hits and unknown):
            return Selection("ambiguous", [], tuple(sorted(str(r) for r in spans)))
        return Selection("ok", [c for _, c in hits], tuple(sorted(str(r) for r in spans)))
    spans = {r for r, _ in tagged}
    if len(spans) > 1:
        return Selection("ambiguous", [], tuple(sorted(str(r) for r in spans)))
    return Selection("ok", cands, tuple(str(r) for r in spans))
