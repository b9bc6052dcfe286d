"""The guarded query agent and legal holds: one desk, one audit writer.

Built into every worker by ``agents.app.Pipeline`` (``Parts.query``).  It runs the
pure ``stream.access.QueryDesk`` on the lawful-access inbox and acts on its decisions:

    <prefix>-query-requests   1 partition, role raw.  Requests and approvals (key = authority
                              id, docs/lawful-access.md) and legal-hold commands (key ``hold``,
                              written by ``ipanon hold``).
    <prefix>-query-responses  role derived.  Status replies and sealed answers (key = request
                              id); hold confirmations (key = hold id).  No plaintext identity.
    <prefix>-audit            1 partition, kept.  The hash chain; this agent is its one writer.
    <prefix>-holds            1 partition, compacted.  Active holds (key = hold id, value = the
                              hold as JSON; a tombstone when released or lapsed).  Every worker
                              reads it without a consumer group (``HoldsFollower``).
    <prefix>-query-state      1 partition, compacted, one key (``desk``).  The desk's snapshot.

**One writer.**  The inbox has one partition, so in a consumer group exactly one worker owns
it, and only the owner appends to the audit chain, answers and publishes holds.  Holds travel
through the same inbox (not a topic of their own) for the same reason: a second topic could be
assigned to another worker, and two writers would fork the chain.

**State that survives a restart.**  After every batch the agent flushes its outputs (audit
records, replies, holds) and then writes a snapshot to the compacted ``query-state`` topic:
``QueryDesk.to_dict()`` (pending requests, approvals, remembered nonces and request ids, rate
buckets), the hold set, and the inbox offset it has processed.  We chose a compacted topic of
our own over a Faust table: the desk is one object for one partition, it must be written
*after* its outputs are on the broker (a table changelog write is not ordered with other
topics' sends), and a single key keeps the newest snapshot forever while compaction removes
the older ones.  When the inbox partition is assigned (start-up, rebalance) the agent
reloads: the desk from the last snapshot, the chain from the last record of the audit topic
(``AuditChain.resume``: the trail itself is the authority for ``seq`` and ``prev``).  Inbox
records at or below the snapshot's offset are skipped, so a re-delivered batch is never
decided twice, and any record after it that Faust's stream did not hand over is read back first
(``agents.gapfill``); a crash between flushing a batch's outputs and writing its snapshot repeats
that batch's audit events (valid records that say the same thing twice — never a gap).

**Resolution.**  Each address is looked up on the worker that owns its table partition
(``agents.remote_lookup``): here when this worker owns it, else through the internal lookup
topics, which route it to the owner; CGNAT second hops (inside address on another partition)
the same way.  With several workers the answer is therefore as complete as with one; a lookup
that gets no answer in time (a partition unowned mid-rebalance) refuses the request as
``resolution-failed`` instead of answering from part of the table.  A request names no
operator; the agent asks every configured operator and tags each match with it.  An IPv4
prefix (at most ``min_prefixlen_v4``, /24 by default) is resolved address by address; an IPv6
prefix is resolved by its first address only (the holder of a delegated prefix containing
it) — see "Limits".

**Pieces.**  ``QueryAgent`` is the shell: inbox ownership, reloads, the inbox loop and the
timers.  What is allowed or refused is decided by the pure desks (``stream.access``,
``stream.hold``); ``agents.desk_outcomes.DeskOutcomes`` turns each decision into its audit
records (or junk count), reply, answer and hold publication; ``agents.desk_writer.DeskWriter``
is the one write path (the audit chain, signed checkpoints, delivery with acknowledgement, the
snapshot); ``resolve_request`` below is the resolver of ready requests.

Nothing here puts a subscriber id on a topic in plaintext outside the worker's own internal
topics (lookup answers between workers, like bindings and the changelog): answers are sealed to the
authority's X25519 key (``stream.access.seal_answer``) and audit events carry only ids,
digests and reason codes (``stream.audit.check_event`` refuses anything else).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tomllib
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from stream.access import JunkLedger, Policy, QueryDesk, Registry
from stream.audit import AuditChain
from stream.canary import visible_holders
from stream.errors import ConfigError, IpanonError, Rejected
from stream.hold import HOLD_MESSAGE_TYPES, HoldDecision, HoldDesk, HoldSet, LegalHold
from stream.model import parse_network

from .broker import REPO_ROOT
from .desk_outcomes import DeskOutcomes
from .desk_writer import DeskWriter
from .gapfill import GapFill
from .kafka_clients import Clients
from .kafka_io import HEARTBEAT_KEY
from .remote_lookup import RemoteLookups

log = logging.getLogger("ipanon.query")

#: Key of hold commands on the inbox (requests and approvals use the authority id).
HOLD_KEY = b"hold"
#: Largest IPv4 prefix resolved address by address (the policy's default bound is a /24).
MAX_ENUMERATED = 4096


# --------------------------------------------------------------------------------------------
# configuration


def registry_dirs(settings: Any) -> tuple[Path, Optional[Path]]:
    """Authorities and staff directories: ``settings.extra`` (``authorities``, ``staff``), then
    ``IPANON_AUTHORITIES`` / ``IPANON_STAFF``, then ``config/authorities`` (staff: its sibling
    ``staff`` directory)."""
    extra = getattr(settings, "extra", {}) or {}
    auth = extra.get("authorities") or os.environ.get("IPANON_AUTHORITIES") or str(REPO_ROOT / "config" / "authorities")
    staff = extra.get("staff") or os.environ.get("IPANON_STAFF")
    return Path(auth), (Path(staff) if staff else None)


def load_policy(settings: Any) -> Policy:
    """``stream.access.Policy`` defaults, overridden by the TOML file named by ``settings.extra
    ["access_policy"]`` or ``IPANON_ACCESS_POLICY`` (fields as in ``Policy``)."""
    extra = getattr(settings, "extra", {}) or {}
    path = extra.get("access_policy") or os.environ.get("IPANON_ACCESS_POLICY")
    if not path:
        return Policy()
    try:
        with open(path, "rb") as f:
            return Policy.from_mapping(tomllib.load(f), source=str(path))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the access policy ({type(e).__name__})") from None


# --------------------------------------------------------------------------------------------
# the audit anchor key

ANCHOR_KEY_FILE = "audit-anchor.key"
ANCHOR_PUB_FILE = "audit-anchor.pub"


def load_anchor_key(keys_dir: Path):
    """The desk's Ed25519 checkpoint key (``<keys>/audit-anchor.key``, 64 hex chars, mode
    0600), created on first use; its public half is written to ``audit-anchor.pub``
    (``ed25519:<hex>``) for ``ipanon audit verify --anchor-key``."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from stream.access import public_key_text

    from .keystore import require_private

    path = Path(keys_dir) / ANCHOR_KEY_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
    require_private(path, "audit anchor key")
    try:
        key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(path.read_text().strip()))
    except ValueError:
        raise ConfigError(f"{path}: the audit anchor key must hold 64 hex characters") from None
    pub = Path(keys_dir) / ANCHOR_PUB_FILE
    text = public_key_text(key.public_key()) + "\n"
    if not pub.exists() or pub.read_text() != text:
        pub.write_text(text)
    return key


def read_anchor_public(path: Path):
    """An anchor public key from a file holding ``ed25519:<hex>`` (``audit-anchor.pub``)."""
    from stream.access import _parse_key

    try:
        text = Path(path).read_text().strip()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the anchor key ({type(e).__name__})") from None
    return _parse_key(text, "ed25519", str(path))


def checkpoint_period_ms(settings: Any) -> int:
    """How often an idle desk still writes a checkpoint: 60 heartbeats (1 h by default)."""
    return 60 * int(settings.heartbeat_ms)


def read_holds(bootstrap: str, topic: str, security: Any = None) -> tuple[dict[str, LegalHold], int]:
    """The active holds on the compacted holds topic and the next offset to read (``security``
    None = the process's, as for the CLI)."""
    from .kafka_io import read_all

    holds: dict[str, LegalHold] = {}
    nxt = 0
    for r in read_all(bootstrap, topic, heartbeats=True, security=security):
        nxt = max(nxt, r.offset + 1)
        _apply_hold_record(holds, r.key, r.value)
    return holds, nxt


def _apply_hold_record(holds: dict[str, LegalHold], key: Optional[bytes], value: Optional[bytes]) -> bool:
    if key is None or key == HEARTBEAT_KEY:
        return False
    hid = key.decode("utf-8", "replace")
    if value is None:
        return holds.pop(hid, None) is not None
    try:
        holds[hid] = LegalHold.from_dict(json.loads(value))
    except (Rejected, ValueError, TypeError):
        log.warning("holds: a record on the holds topic is not a valid hold; ignored")
        return False
    return True


# --------------------------------------------------------------------------------------------
# resolution


async def resolve_request(lookups: RemoteLookups, operators: Mapping[str, Any], address: str, port: Optional[int],
                          from_ms: int, to_ms: int, proto: Optional[int] = None) -> dict:
    """The resolver contract of ``QueryDesk.answer``: ``{"matches": [...]}`` (each with
    operator, address, subscriber, from_ms, to_ms and, through CGNAT, inside_ip and ports),
    ``{"ambiguous": n}`` (a CGNAT public address without a port; ``matches`` too if other
    operators matched exactly) or ``{"no_data": true}``.  Each address is looked up on the
    worker that owns its partition (``agents.remote_lookup``); a lookup that fails or gets
    no answer in time raises, and the request is refused as ``resolution-failed``."""
    net = parse_network(address)
    if net.version == 4 and net.num_addresses <= MAX_ENUMERATED:
        addrs = [str(a) for a in net]  # one address, or each address of a small IPv4 prefix
    else:  # IPv6: one address, or a prefix's first address (finds the delegated prefix holding it)
        addrs = [str(net.network_address)]
    matches: list[dict] = []
    unknown: list[dict] = []
    ambiguous = 0
    asks = [{"operator": op, "ip": a, "port": port, "from_ms": from_ms, "to_ms": to_ms, "proto": proto}
            for op in sorted(operators) for a in addrs]
    for q, r in zip(asks, await lookups.resolve_many(asks)):
        op, a = q["operator"], q["ip"]
        if r is None or r.get("status") not in ("ok", "no-data", "ambiguous", "end-unknown"):
            raise IpanonError(f"lookup {'timed out' if r is None else r.get('reason') or r.get('status')}")
        if r.get("status") == "ambiguous":
            ambiguous += int(r.get("candidates", 0))
        elif r.get("status") == "ok":
            matches += [{"operator": op, "address": a, **h} for h in r.get("holders", [])]
        # last holders whose session went silent past the lost-Stop window: end unknown
        unknown += [{"operator": op, "address": a, **h} for h in r.get("end_unknown") or ()]
    # an erasure canary is never named: a lookup that finds only canaries is no-data
    matches, unknown = visible_holders(matches), visible_holders(unknown)
    if not matches and not ambiguous and not unknown:
        return {"no_data": True}
    out: dict[str, Any] = {}
    if matches:
        out["matches"] = matches
    if unknown:
        out["end_unknown"] = unknown
    if ambiguous:
        out["ambiguous"] = ambiguous
    return out


# --------------------------------------------------------------------------------------------
# the agent


class HoldsFollower:
    """Every worker: the active legal holds, read from the compacted holds topic without a
    consumer group (at start-up, then followed) and handed to ``on_holds`` whenever they change
    (the sweeper and the mapping stage apply them)."""

    def __init__(self, topic: str, *, settings: Any, on_holds: Callable[[HoldSet], None]) -> None:
        self.topic = topic
        self.settings = settings
        self.on_holds = on_holds
        # read them now so the sweeper never runs without them
        self.view: dict[str, LegalHold] = {}
        self.view_next = 0
        try:
            self.view, self.view_next = read_holds(settings.bootstrap, topic, settings.security)
        except Exception as e:  # the start-up check has verified the topic; a read error is transient
            log.warning("holds: could not read %s at start-up (%s); will keep trying", topic, type(e).__name__)
        on_holds(HoldSet.of(self.view.values()))

    async def run(self) -> None:
        """Every worker: follow the holds topic (no consumer group) and hand each new hold set
        to ``on_holds`` (the sweeper's and the mapping stage's)."""
        from aiokafka import TopicPartition

        s, topic = self.settings, self.topic
        while True:
            c = Clients.of(s).aio_consumer(client_id="ipanon-holds-view", group_id=None)
            try:
                await c.start()
                tp = TopicPartition(topic, 0)
                c.assign([tp])
                c.seek(tp, self.view_next)
                while True:
                    batch = await c.getmany(timeout_ms=500)
                    changed = False
                    for recs in batch.values():
                        for r in recs:
                            self.view_next = r.offset + 1
                            changed |= _apply_hold_record(self.view, r.key, r.value)
                    if changed:
                        self.on_holds(HoldSet.of(self.view.values()))
                        log.info("holds: %d active", len(self.view))
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("holds: following %s failed (%s); retrying", topic, type(e).__name__)
                await asyncio.sleep(1.0)
            finally:
                try:
                    await c.stop()
                except Exception:
                    pass


class QueryAgent:
    """The desk, the audit writer and the hold keeper of one worker (see module doc)."""

    def __init__(self, app: Any, *, settings: Any, names: Any, operators: Mapping[str, Any],
                 clock: Callable[[], int], count: Callable[..., None], dead_letter: Callable[..., None],
                 lookups: RemoteLookups) -> None:
        """``app``: the Faust app the agent, timers and topics belong to; ``dead_letter(event,
        reason, detail)``: the worker's dead-letter writer; ``lookups``: resolution on whichever
        worker owns each address (``agents.remote_lookup``).  The holds it publishes reach every
        worker through ``HoldsFollower``."""
        self.settings = s = settings
        self.names = names
        self.operators = operators
        self.clock = clock
        self.count = count
        self.dead_letter = dead_letter
        adir, sdir = registry_dirs(s)
        self.registry = Registry.load(adir, sdir)  # ConfigError: the worker does not start
        self.policy = load_policy(s)
        n = names
        raw = dict(key_serializer="raw", value_serializer="raw")
        self.inbox = app.topic(n.query_requests, **raw)
        self.responses = app.topic(n.query_responses, **raw)
        self.holds_topic = app.topic(n.holds, **raw)
        self.desk = QueryDesk(self.registry, self.policy)
        self.holddesk = self._new_holddesk()
        from .runtime import keys_dir

        self.anchor_key = load_anchor_key(keys_dir(s))  # only the desk signs checkpoints
        self.checkpoint_ms = checkpoint_period_ms(s)
        #: the audit chain and every output, delivered before the snapshot (``agents.desk_writer``)
        self.writer = DeskWriter(audit=app.topic(n.audit, **raw), responses=self.responses, holds=self.holds_topic,
                                 state=app.topic(n.query_state, **raw), anchor_key=self.anchor_key,
                                 checkpoint_ms=self.checkpoint_ms, bootstrap=s.bootstrap,
                                 audit_name=n.audit, state_name=n.query_state, security=s.security)
        self.junk = JunkLedger([*self.registry.authorities, *self.registry.staff])
        self.junk_interval_ms = 10 * int(s.heartbeat_ms)  # one summary per identity and reason per interval
        self.lookups = lookups
        #: decisions → audit or junk count, replies, answers, hold publications (``agents.desk_outcomes``)
        self.outcomes = DeskOutcomes(self.writer, self.junk, count=count, resolve=self.resolve,
                                     answer=lambda d, resolver, now: self.desk.answer(d, resolver, now))
        self.offset = -1           # last inbox offset decided (from the snapshot)
        #: inbox records Faust's stream skipped, read back (``agents.gapfill``)
        self.gaps = GapFill(Clients.of(s), n.query_requests, agent="query", count=count,
                            repeats="query:already-decided", app=app)
        self.owned = False         # this worker holds the inbox partition
        self.stale = True          # reload state before deciding anything
        self.saved_ms = 0
        self.dirty = False
        self._lock: Optional[asyncio.Lock] = None
        app.agent(self.inbox, name="ipanon.query")(self.run)
        app.timer(1.0, name="ipanon.query.tick")(self.tick)
        app.timer(s.heartbeat_ms / 2000, name="ipanon.query.heartbeat")(self.heartbeat)
        app.on_partitions_assigned.connect(self._on_assigned)
        app.on_partitions_revoked.connect(self._on_revoked)

    @property
    def lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    # -- ownership and state ----------------------------------------------------------------

    async def _on_assigned(self, sender: Any = None, assigned: Any = (), **kw: Any) -> None:
        if any(tp.topic == self.inbox.get_topic_name() for tp in assigned):
            self.owned, self.stale = True, True

    async def _on_revoked(self, sender: Any = None, revoked: Any = (), **kw: Any) -> None:
        if any(tp.topic == self.inbox.get_topic_name() for tp in revoked):
            self.owned = False

    def _new_holddesk(self, state: Optional[dict] = None) -> HoldDesk:
        # holds share the authority's request budget; the lambda follows desk reloads
        charge = lambda authority, now: self.desk.charge(authority, now)  # noqa: E731
        if state is None:
            return HoldDesk(self.registry, self.policy, self.operators, charge)
        return HoldDesk.from_dict(state, self.registry, self.policy, self.operators, charge)

    def _load_sync(self) -> tuple[QueryDesk, AuditChain, dict, int, dict]:
        chain, st = self.writer.load()
        if st is None:
            return QueryDesk(self.registry, self.policy), chain, {}, -1, {}
        desk = QueryDesk.from_dict(st["desk"], self.registry, self.policy)
        holds = st.get("hold_desk") or {"active": st.get("holds", [])}  # older snapshots: active holds only
        return desk, chain, holds, int(st["offset"]), st.get("junk") or {}

    async def reload(self) -> None:
        """Desk, chain and holds from the broker (start-up and every (re)assignment)."""
        loop = asyncio.get_running_loop()
        self.desk, self.writer.chain, holds, self.offset, junk = await loop.run_in_executor(None, self._load_sync)
        self.junk.load(junk)
        self.holddesk = self._new_holddesk(holds)
        self.writer.anchored = (None, 0)  # anchor whatever the trail ends with at the next save
        if self.offset >= 0:  # every inbox record after the snapshot's is decided (``agents.gapfill``)
            self.gaps.seed(0, self.offset)
        self.stale = False
        log.info("query desk loaded: %d pending, audit seq %d, %d holds (%d pending), inbox offset %d",
                 len(self.desk.pending()), self.writer.chain.next_seq, len(self.holddesk.active),
                 len(self.holddesk.pending()), self.offset)

    async def save(self, now: int) -> None:
        """Deliver every queued output, then the snapshot (``DeskWriter.save``)."""
        await self.writer.save(now, lambda: {
            "v": 1, "desk": self.desk.to_dict(), "holds": [h.to_dict() for h in self.holddesk.active.values()],
            "hold_desk": self.holddesk.to_dict(), "junk": self.junk.to_dict(), "offset": self.offset,
            "saved_ms": now})
        self.saved_ms, self.dirty = now, False

    # -- resolution -------------------------------------------------------------------------

    async def resolve(self, address: str, port: Optional[int], from_ms: int, to_ms: int,
                      proto: Optional[int] = None) -> dict:
        """The resolver contract of ``QueryDesk.answer`` (``resolve_request``)."""
        return await resolve_request(self.lookups, self.operators, address, port, from_ms, to_ms, proto=proto)

    # -- legal holds ------------------------------------------------------------------------

    def hold_decide(self, typ: Optional[str], value: bytes, now: int) -> HoldDecision:
        """Signed hold orders, staff approvals and releases (``stream.hold.HoldDesk``).  Anything
        else on the hold key (such as an unsigned ``hold-set``) is refused as a malformed order."""
        if typ == "hold-approval":
            return self.holddesk.approve(value, now)
        if typ == "hold-release":
            return self.holddesk.release(value, now)
        return self.holddesk.submit(value, now)

    # -- the agent --------------------------------------------------------------------------

    async def decide(self, value: Optional[bytes], key: Optional[bytes], now: int) -> None:
        """One inbox record: an approval, a hold command, or (anything else) a request — a
        message that is none of these is refused by the desk as ``malformed-request``."""
        typ = None
        msg = None
        try:
            msg = json.loads(value) if value is not None else None
            typ = msg.get("type") if isinstance(msg, dict) else None
        except (ValueError, UnicodeDecodeError):
            pass
        if typ == "approval":
            await self.outcomes.emit(self.desk.approve(value, now), now, key)
        elif typ in HOLD_MESSAGE_TYPES or typ == "hold-set" or key == HOLD_KEY:
            self.outcomes.emit_hold(self.hold_decide(typ, value if value is not None else b"", now), now, key)
        else:
            await self.outcomes.emit(self.desk.submit(value if value is not None else b"", now), now, key)
        self.dirty = True

    async def run(self, stream: Any) -> None:
        from .app import is_heartbeat

        async for events in stream.take_events(256, within=0.005):
            async with self.lock:
                if self.stale:
                    await self.reload()
                # without re-deliveries (counted query:already-decided), skipped records read back
                events = await self.gaps.complete(events)
                now = self.clock()
                for event in events:
                    msg = event.message
                    if not is_heartbeat(event):
                        try:
                            await self.decide(msg.value, msg.key, now)
                        except Exception as e:  # never let one record kill the agent (#175)
                            log.exception("query: unexpected error; record dead-lettered")
                            self.dead_letter(event, "internal-error", type(e).__name__)
                    self.offset = msg.offset
                if self.dirty:
                    try:
                        await self.save(now)
                    except Exception:  # reload what actually reached the broker before going on
                        log.exception("query: delivering a batch's outputs failed; reloading state")
                        self.count("query:save-errors")
                        self.stale = True

    async def tick(self) -> None:
        """Expire pending requests and lapsed holds; refresh the snapshot (which also keeps
        the compacted state topic appending, so its segments roll)."""
        if not self.owned:
            return
        try:
            async with self.lock:
                if self.stale:
                    await self.reload()
                now = self.clock()
                for d in self.desk.expire(now):
                    await self.outcomes.emit(d, now)
                    self.dirty = True
                for hd_ in self.holddesk.expire(now):
                    self.outcomes.emit_hold(hd_, now)
                    self.dirty = True
                for ev in self.junk.flush(now, self.junk_interval_ms):
                    self.writer.audit(ev, now)
                    self.dirty = True
                if self.dirty or now - self.saved_ms >= self.settings.heartbeat_ms // 2:
                    await self.save(now)
        except Exception:
            log.exception("query: tick failed; will retry")
            self.count("query:tick-errors")

    async def heartbeat(self) -> None:
        """Heartbeats on the inbox, responses and holds topics (their segments must roll for
        the retention bound, DESIGN.md "Hard facts"); the state topic gets its snapshot."""
        from .app import HEARTBEAT_HEADERS

        try:
            parts = {self.inbox: 1, self.holds_topic: 1, self.responses: self.settings.partitions}
            for topic, n in parts.items():
                for part in range(n):
                    topic.send_soon(key=HEARTBEAT_KEY, value=None, partition=part, headers=HEARTBEAT_HEADERS)
        except Exception:
            log.exception("query: heartbeat failed; will retry")
