"""The mapping table as the worker reads and writes it: bindings applied, due keys swept.

The decisions are ``stream.mapping``'s (what a binding or the passing of time does to a key's
intervals, holds included); this module only reads the table, opens and seals values through the
operator's vault (``agents.vault``: crypto-shredding), calls the decision and writes the result.
Every write goes to the table (``agents.mapping_table``), whose outbox orders it with the
stage's dead letters and the heartbeat; the mapping stage and the sweeper flush that outbox.

``TableWriter`` serves the mapping stage (``handle_batch``) and the sweeper (``sweep_once``);
``Sweeper`` is the timer around ``sweep_once``, with listeners told about every completed pass
(``after_sweep(now_ms, expired, seconds)``: the metrics time it, the canaries look at once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Iterable, Iterator, Mapping, Optional

from stream import binding_wire, mapping
from stream import intervals as iv
from stream.errors import CryptoError, Rejected
from stream.model import Binding
from stream.reset_index import ResetIndex

from .batch import Output
from .fence import PartitionsLost
from .kafka_io import HEARTBEAT_KEY

log = logging.getLogger("ipanon")
_CURRENT = object()  # apply_binding's default: read the hold set now

#: a sealed value at least this large is counted (``large_values``) and logged, at most once a
#: minute: its key's history is a quarter of the way to the producer's 1 MiB record limit, past
#: which the changelog cannot take it (docs/mapping.md, "Known limit")
LARGE_VALUE_BYTES = 256 * 1024
#: the largest value a binding may write: the producer refuses a record over its
#: ``max_request_size`` (1 MiB by default; 4 KiB left for the key, headers and batch header),
#: and the stage would retry it for ever.  A binding that would grow a value past it is
#: dead-lettered ``value-too-large`` instead, and the key keeps its value.
MAX_VALUE_BYTES = (1 << 20) - 4096
#: keys a reset opens between two turns of the event loop (``TableWriter.reset_steps``): ≈ 15 ms
RESET_CHUNK = 2_000


class TableWriter:
    """Bindings and sweeps on the table partitions this worker holds."""

    def __init__(self, table: Any, *, operators: Mapping[str, Any], rules: Mapping[str, Any],
                 vaults: Mapping[str, Any], holds: Callable[[], Any], clock: Callable[[], int],
                 count: Callable[..., None], dead_letter: Callable[[Any, str, str], None],
                 interrupted: Callable[[], bool] = lambda: False) -> None:
        """``table``: the ``MappingTable``; ``operators`` / ``rules`` / ``vaults``: per operator
        its ``OperatorRuntime``, its ``stream.mapping`` rules and its ``Vault``; ``holds()``: the
        current ``HoldSet`` or None; ``dead_letter(record, reason, detail)``: queue a record's
        dead letter in the table's outbox (ordered with the batch's writes); ``interrupted()``:
        a revoke is waiting for the batch (a long reset gives the batch up, ``handle_batch``)."""
        self.table = table
        self.operators = operators
        self.rules = rules
        self.vaults = vaults
        self.holds = holds
        self.clock = clock
        self.count = count
        self.dead_letter = dead_letter
        self.interrupted = interrupted
        self.large_value_bytes = LARGE_VALUE_BYTES
        self.max_value_bytes = MAX_VALUE_BYTES
        self._large_logged_ms: Optional[int] = None
        #: the keys a NAS's reset must visit (``stream.reset_index``): kept by ``store``, filled
        #: for restored values by the schedule rebuild (``rebuild_entry``), trusted once that
        #: rebuild finished for the table's epoch; until then, and in disk mode, a reset scans
        self.resets = ResetIndex()

    def load(self, op: Any, key: bytes) -> tuple[Any, iv.Intervals]:
        """(network, intervals) of a table key, or (None, ()) if absent.  A value whose epoch key
        was destroyed is, by design, unreadable: it is treated as gone (and tombstoned by the
        sweeper, which finds it due immediately)."""
        raw = self.table.get_raw(key)
        if raw is None:
            return None, ()
        try:
            return self.vaults[op.name].open(key, raw)
        except CryptoError:
            self.count("unreadable_values")
            return None, ()

    def apply_binding(self, partition: int, b: Binding, now: int, *, holds: Any = _CURRENT) -> str:
        """Read the binding's key(s), decide (``stream.mapping``), write; returns the outcome.
        ``holds``: the current ``HoldSet`` (``handle_batch`` reads it once per batch)."""
        if holds is _CURRENT:
            holds = self.holds()
        if b.action == "reset":
            for _ in self.reset_steps(partition, b, now):
                pass
            return "reset"
        op = self.operators[b.operator]
        rules = self.rules[b.operator]
        key = self.vaults[op.name].key(iv.slot_of(b), b.ip)
        _, old = self.load(op, key)
        # a hold keeps an expired interval here too, not only in the sweeper
        change = mapping.apply(old, b, now, rules,
                               is_held=None if holds is None else mapping.hold_predicate(holds, op.name, b.ip, now))
        if change.expired:
            self.count("expired", change.expired)
        if change.write:
            self.store(partition, key, b.ip, change.intervals, op, now, refuse_over=self.max_value_bytes, old=old)
        return change.outcome

    def reset_steps(self, partition: int, b: Binding, now: int) -> Iterator[None]:
        """A NAS's reset (``b``): close its open intervals on the keys of ``partition``, pausing
        (yielding) after every ``RESET_CHUNK`` keys opened, where ``handle_batch`` lets the event
        loop run.  The index names the keys once trusted; otherwise every key of the operator is
        opened, which at millions of keys must not hold the loop (heartbeats, the fence's clock)."""
        op = self.operators[b.operator]
        rules = self.rules[b.operator]
        if self.table.disk is None and self.resets.ready(self.table.epoch):
            keys: Iterable[bytes] = self.resets.keys(partition, b.operator, b.nas)
            self.count("resets:indexed")
        else:
            keys = self.table.keys_of([partition], f"{b.operator}|".encode())
            self.count("resets:scanned")
        for n, key in enumerate(keys, 1):
            net, old = self.load(op, key)
            if net is not None:
                change = mapping.reset(old, b.nas, b.at_ms, rules)
                if change.write:
                    self.store(partition, key, net, change.intervals, op, now, old=old)
            if n % RESET_CHUNK == 0:
                yield

    def store(self, partition: int, key: bytes, net: Any, ivs: iv.Intervals, op: Any,
              now: int, *, reschedule_ms: Optional[int] = None, refuse_over: Optional[int] = None,
              old: iv.Intervals = ()) -> None:
        """Seal and write ``ivs`` (a tombstone when empty) over ``old``, the key's stored
        intervals (for the reset index).  ``refuse_over``: raise ``Rejected`` (``value-too-large``)
        instead of writing a sealed value larger than that."""
        if ivs:
            # sealed under the epoch of the content's earliest expiry (stream.shred): every
            # version dies no later than a Stop that may shorten it; the sweeper re-seals it
            # while it lives on
            raw, revisit = self.vaults[op.name].seal_value(key, net, ivs, ttl_ms=op.ttl_ms,
                                                           stale_after_ms=op.stale_after_ms, now_ms=now)
            if refuse_over is not None and len(raw) > refuse_over:
                raise Rejected("value-too-large", f"the key's value would be {len(raw)} bytes, over the "
                               f"{refuse_over} a changelog record may hold (docs/mapping.md, \"Known limit\")")
            if len(raw) >= self.large_value_bytes:
                self._large_value(key, len(raw), now)
            self.table.put(partition, key, raw, revisit_ms=revisit if reschedule_ms is None else min(revisit, reschedule_ms))
        else:
            self.table.delete(partition, key)
            self.count("tombstones")
        if self.table.disk is None:  # disk mode never trusts the index (docs/mapping.md)
            self.resets.update(partition, op.name, key, old, ivs)

    def _large_value(self, key: bytes, size: int, now: int) -> None:
        self.count("large_values")
        if self._large_logged_ms is None or now - self._large_logged_ms >= 60_000:
            self._large_logged_ms = now
            log.warning("mapping table: a %d-byte value written for operator %s (limit 1 MiB per changelog record): "
                        "a key's history is growing towards it; see docs/mapping.md, \"Known limit\"",
                        size, iv.operator_of(key))

    async def handle_batch(self, records: list[Any]) -> list[Output]:
        """One ``MappingStage`` batch of bindings records: apply each to the table; every write
        (changelog, dead letters) is queued in the outbox, which the stage flushes before it
        commits.  Counted once per batch.  The stage holds its lock meanwhile, so a revoke waits
        for the batch even where a reset lets the event loop run (``reset_steps``)."""
        now = self.clock()
        holds = self.holds()  # the same hold set for the whole batch
        outcomes: dict[str, int] = {}
        rejected: dict[str, int] = {}
        for r in records:
            if r.value is None and r.key == HEARTBEAT_KEY:
                continue
            try:
                b = binding_wire.decode(r.value)
                if b.operator not in self.operators:
                    raise Rejected("unknown-operator", "operator has no profile")
                if b.action == "reset":  # may open many keys: the loop runs between chunks
                    for _ in self.reset_steps(r.partition, b, now):
                        await asyncio.sleep(0)
                        if self.interrupted():  # the revoke must not wait out a long scan
                            raise PartitionsLost("a rebalance began during a NAS reset; the batch is read "
                                                 "again from the last commit")
                    outcome = "mapping:reset"
                else:
                    outcome = "mapping:" + self.apply_binding(r.partition, b, now, holds=holds)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
            except Rejected as e:
                self.dead_letter(r, e.reason, e.detail)
                rejected[e.reason] = rejected.get(e.reason, 0) + 1
            except PartitionsLost:
                raise
            except Exception as e:
                log.exception("mapping: unexpected error; record dead-lettered")
                self.dead_letter(r, "internal-error", type(e).__name__)
                rejected["internal-error"] = rejected.get("internal-error", 0) + 1
        for name, n in outcomes.items():
            self.count(name, n)
        for reason, n in rejected.items():
            self.count(f"rejected:{reason}", n)
        return []

    # -- sweeper ----------------------------------------------------------------------------

    def next_expiry(self, key: bytes, value: bytes, partition: Optional[int] = None) -> Optional[int]:
        """A stored value's next expiry or re-seal instant (0: due now).  ``partition``: the
        schedule rebuild's key, whose open intervals the reset index notes as well."""
        op = self.operators.get(iv.operator_of(key))
        if op is None:
            return 0  # an operator removed from the configuration: its data goes now
        vault = self.vaults[op.name]
        try:  # every restored value passes here: its next expiry or re-seal instant
            _, ivs = vault.open(key, value)
        except CryptoError:
            return 0  # sealed under a destroyed epoch: garbage, tombstone it now
        if not ivs:
            return 0
        if partition is not None:
            self.resets.update(partition, op.name, key, (), ivs)
        return vault.revisit(value, ivs, ttl_ms=op.ttl_ms, stale_after_ms=op.stale_after_ms, now_ms=self.clock())

    def rebuild_entry(self, key: bytes, value: bytes) -> Optional[int]:
        """The memory schedule's rebuild of one key: its next expiry, its open intervals noted."""
        return self.next_expiry(key, value, self.table.partition_of(key))

    def sweep_once(self, now: int) -> int:
        """Drop expired intervals of due keys (tombstone when none is left), keep held ones
        (re-sealed so their epoch key outlives the hold), re-seal live values whose epoch key is
        due to go (``stream.shred``), destroy ended epoch keys."""
        dropped_total = 0
        holds = self.holds()
        for key, partition in self.table.due_items(now):
            if partition not in self.table.active or self.table.get_raw(key, partition) is None:
                continue
            op = self.operators.get(iv.operator_of(key))
            net, ivs = self.load(op, key) if op is not None else (None, ())
            if op is None or net is None:
                self.table.delete(partition, key)  # unknown operator or unreadable: gone
                self.count("tombstones")
                continue
            d = mapping.sweep(ivs, now, self.rules[op.name],
                              is_held=mapping.hold_predicate(holds, op.name, net, now))
            if d.write:
                dropped_total += d.expired
                self.store(partition, key, net, d.intervals, op, now, reschedule_ms=d.recheck_ms, old=ivs)
            elif d.intervals:
                raw = self.table.get_raw(key, partition)
                when = self.vaults[op.name].revisit(raw, d.intervals, ttl_ms=op.ttl_ms,
                                                    stale_after_ms=op.stale_after_ms, now_ms=now)
                if when <= now:  # its content outlives the epoch it is sealed under
                    self.store(partition, key, net, d.intervals, op, now, old=ivs)
                    self.count("resealed")
                else:
                    self.table.schedule(when, key, partition)
        if dropped_total:
            self.count("expired", dropped_total)
        if not self.table.schedule_complete:
            # a restored value may be due for re-sealing under an epoch about to go: the sweeper
            # must reach it first (a restart delays destruction by the restore and rebuild)
            return dropped_total
        for v in self.vaults.values():
            n = v.destroy_due(now)
            if n:
                self.count("epochs_shredded", n)
        return dropped_total


class Sweeper:
    """The sweeper timer's pass: ``sweep_once``, the listeners, then the outbox flushed."""

    def __init__(self, sweep_once: Callable[[int], int], *, clock: Callable[[], int],
                 flush: Callable[[], Awaitable[Any]], count: Callable[..., None]) -> None:
        self.sweep_once = sweep_once
        self.clock = clock
        self.flush = flush
        self.count = count
        #: called after every completed pass as ``f(now_ms, expired, seconds)``; a listener's
        #: failure is logged and the pass goes on
        self.listeners: list[Callable[[int, int, float], None]] = []

    async def run(self) -> None:
        try:
            now = self.clock()
            t0 = time.monotonic()
            n = self.sweep_once(now)
            elapsed = time.monotonic() - t0
            for listener in self.listeners:
                try:
                    listener(now, n, elapsed)
                except Exception:
                    log.exception("sweeper: a listener failed")
            await self.flush()
        except PartitionsLost as e:  # after a freeze (agents.fence): the revoke drops what is queued
            log.warning("sweeper: %s; its writes wait for the rebalance", e)
        except Exception:
            log.exception("sweeper: pass failed; will retry")
            self.count("sweeper_errors")
