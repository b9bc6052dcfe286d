"""The compliance walk: this worker's partitions of the mapping table, folded into per-operator figures.

``agents.metrics`` exports the result (``ipanon_compliance_ratio``, ``ipanon_mappings_live`` …)
and the status page shows it.  The fold itself is pure (``stream.compliance_fold``); this module
reads the table, opens values through the operators' vaults, keeps each key's summary while its
value stays the same, and runs in slices between event-loop turns.  A table on disk is walked
from the store (``agents.disk_walk``).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator, Mapping, Optional, Union

from stream import intervals as iv
from stream.compliance_fold import Fold, OperatorState, pack_summary, summarize

#: A compliance scan result is reused for this long (a scrape and the status page may both ask).
SCAN_CACHE_S = 1.0
#: A walk's result is reused for at least this many times the walk's own duration, so walking
#: the table takes at most 1/20 of the worker's time however large the table is
#: (bench_lawful_latency: back-to-back walks of a large table left no time to answer lookups).
SCAN_DUTY_FACTOR = 20.0
#: The background walk does this much work at a time, then sleeps ``WALK_PAUSE_S``: it takes at
#: most a fifth of the event loop while it runs.  A lawful answer passes through many loop turns
#: (Faust's consumer, stream, agent, producer and acks); with back-to-back 2 ms slices it waited
#: out one slice at each, and answers during a 10M-key walk took 100-370 ms instead of ~13 ms
#: (bench_lawful_latency).  The pause lets a whole answer run between two slices.
WALK_SLICE_S = 0.001
WALK_PAUSE_S = 0.004
#: At most this many table values are opened (decrypted) per scan; the rest wait for the next.
OPEN_BUDGET = 5_000


def fold_held(fold: Fold, key: bytes, raw: bytes, vaults: Any, stale: Mapping, held: Callable) -> bool:
    """Fold a held key's value, opened afresh (a hold's coverage depends on the hold, so its
    summary is never cached); False when the value cannot be read (an unreadable value must
    not break a scrape).  Both walks, in memory and on disk (``agents.disk_walk``), use it."""
    operator = iv.operator_of(key)
    try:
        net, ivs = vaults[operator].open(key, raw) if vaults else (None, iv.decode(raw))
        fold.add(operator, summarize(ivs, stale[operator], held(net)))
        return True
    except Exception:  # noqa: BLE001
        return False


class ComplianceWalk:
    """Walks the table partitions this worker holds (see the module docstring)."""

    def __init__(self, operators: Mapping[str, Any], *, clock: Callable[[], int], table: Any,
                 vaults: Optional[Mapping[str, Any]] = None, holds: Callable[[], Any] = lambda: None,
                 mono: Callable[[], float] = time.monotonic) -> None:
        """``table``: the mapping table, read only (``data``, ``active``, ``key_partition()`` and
        ``epoch`` if it has one, or ``disk``: ``agents.disk_walk``); ``vaults``: name → ``Vault``
        (None: plain values); ``holds()``: the current ``HoldSet`` or None."""
        self.operators = operators
        self.clock = clock
        self.table = table
        self.vaults = vaults
        self.holds = holds
        self.mono = mono
        self._scan: tuple[float, Optional[int], dict[str, OperatorState]] = (-1e9, None, {})
        #: True in a worker (``agents.metrics.serve`` starts the background walk): ``scan()``
        #: then only reads the walk's results
        self.background = False
        self.walks = 0
        self.scan_seconds = 0.0
        self.scan_errors = 0
        self.scan_pending = 0
        self.open_budget = OPEN_BUDGET
        #: the walk's cache: per key, the value object it summarised and its packed summary (two
        #: dicts of bytes/ints: untracked by the cyclic GC, 116 B per key; ``pack_summary``)
        self._seen: dict[bytes, bytes] = {}
        self._packed: dict[bytes, Union[int, bytes]] = {}
        self._packed_for: Optional[list[str]] = None  # the operator names the op indices refer to

    def scan(self, now_ms: Optional[int] = None) -> tuple[int, dict[str, OperatorState]]:
        """The last compliance walk's result: ``(now_ms it was taken at, state per operator)``.

        In a running worker the walk runs in the background (``walk_in_background``, a timer of
        ``agents.metrics.serve``), in slices of at most ``WALK_SLICE_S`` between event-loop
        turns, so a scrape or the status page never walks the table itself: at 10M keys one walk costs
        seconds of CPU, and a walk inside the event loop held every lookup answer for as long
        (bench_lawful_latency saw 10-40 s).  Without the background walker (tests, benchmarks,
        or ``now_ms`` given) this walks synchronously, reusing the last result for
        ``SCAN_CACHE_S`` or ``SCAN_DUTY_FACTOR`` times the last walk's duration when longer."""
        cached_at, cached_now, cached = self._scan
        if now_ms is None:
            if self.background:
                return (cached_now if cached_now is not None else self.clock()), cached
            if self.mono() - cached_at < self._reuse_s():
                return cached_now, cached
        for _ in self.walk(now_ms):
            pass
        return self._scan[1], self._scan[2]

    def _reuse_s(self) -> float:
        return max(SCAN_CACHE_S, SCAN_DUTY_FACTOR * self.scan_seconds)

    async def walk_in_background(self) -> None:
        """One background walk when the last result is due for renewal (the timer calls this
        every ``SCAN_CACHE_S``); yields to the event loop between slices."""
        import asyncio

        if self.mono() - self._scan[0] < self._reuse_s():
            return
        for _ in self.walk(slice_s=WALK_SLICE_S):
            await asyncio.sleep(WALK_PAUSE_S)

    def walk(self, now_ms: Optional[int] = None, slice_s: Optional[float] = None) -> Iterator[None]:
        """Walk this worker's partitions of the mapping table and publish the result
        (``self._scan``); a generator that yields after each slice of ``slice_s`` seconds of
        work (never, when ``slice_s`` is None).  Between slices the agents may write: a key
        gone or moved to a revoked partition by then is skipped, one written since is seen
        with its value at the time the walk reaches it.  A rebalance during the walk
        abandons it (the next starts over on the new partitions).

        Opening a sealed value is the walk's main cost (``benchmarks/bench_metrics_scan.py``), too
        much to repeat for every key on every walk.  So each key's
        clock-independent summary is kept with the value object it came from and reused while
        the table still holds that same object; only new or changed values are opened, at most
        ``open_budget`` per walk.  Keys not opened yet (a large table just recovered) are
        reported as ``ipanon_compliance_scan_pending`` and picked up by the next walks.  A table
        on disk is walked from the store, its summaries kept there (``agents.disk_walk``)."""
        if getattr(self.table, "disk", None) is not None:
            from .disk_walk import walk as disk_walk

            yield from disk_walk(self, now_ms, slice_s)
            return
        mono = self.mono
        t_start = mono()
        now = self.clock() if now_ms is None else now_ms
        table = self.table
        epoch = getattr(table, "epoch", 0)  # stand-ins without rebalances (benchmarks) have none
        store = getattr(table.data, "data", table.data)  # a Faust MemoryStore's own dict
        # values are sealed per operator epoch when the pipeline has vaults (crypto-shredding,
        # agents/vault.py): ``Vault.open(key, raw) -> (network, intervals)``; plain encoding before
        vaults = self.vaults
        ops = self.operators
        stale = {n: o.stale_after_ms for n, o in ops.items()}
        names = sorted(ops)
        index = {n: i for i, n in enumerate(names)}
        fold = Fold(now, {n: o.ttl_ms for n, o in ops.items()}, names)
        # updated in place: a new 10M-entry dict per walk meant resizes that held the event
        # loop for up to 0.4 s
        seen, packed = self._seen, self._packed
        if self._packed_for != names:
            seen.clear()  # op indices are positions in the sorted operator names
            packed.clear()
        self._packed_for = names
        kept = errors = pending = 0
        budget = self.open_budget
        held_keys = self._held_keys(now)  # keys a legal hold may cover: summarised afresh every walk
        kp = table.key_partition()
        active = table.active
        # a snapshot of the keys (10M: 0.14 s, the one block a walk costs at that size); taken
        # from the end, so the list shrinks as the walk goes instead of being freed at once
        keys = list(store)
        busy = 0.0
        s0 = mono()
        i = 0
        while keys:
            i += 1
            if slice_s is not None and not i & 63 and mono() - s0 >= slice_s:
                busy += mono() - s0
                yield
                if getattr(table, "epoch", 0) != epoch:
                    return
                s0 = mono()
                kp = table.key_partition()
                active = table.active
            key = keys.pop()
            raw = store.get(key)
            if raw is None or kp.get(key) not in active:
                if seen.pop(key, None) is not None:
                    del packed[key]
                continue
            if key in held_keys:
                if seen.pop(key, None) is not None:
                    del packed[key]
                if fold_held(fold, key, raw, vaults, stale, held_keys[key]):
                    kept += 1
                else:
                    errors += 1
                continue
            was = seen.get(key)
            if was is raw:
                kept += 1
                fold.add_packed(packed[key])
                continue
            if was is not None:  # changed since summarised: never keep the old one
                del seen[key], packed[key]
            if budget <= 0:
                pending += 1
                continue
            budget -= 1
            operator = iv.operator_of(key)
            try:
                ivs = vaults[operator].open(key, raw)[1] if vaults else iv.decode(raw)
                summary = pack_summary(index[operator], summarize(ivs, stale[operator]))
            except Exception:  # noqa: BLE001 - an unreadable value must not break a scrape
                errors += 1
                continue
            seen[key] = raw
            packed[key] = summary
            kept += 1
            fold.add_packed(summary)
        if len(seen) > kept:
            # keys deleted before the snapshot was taken still have summaries: drop every entry
            # whose key no longer holds that value (sliced like the walk; only when needed)
            stale_keys = list(seen)
            while stale_keys:
                i += 1
                if slice_s is not None and not i & 63 and mono() - s0 >= slice_s:
                    busy += mono() - s0
                    yield
                    s0 = mono()
                key = stale_keys.pop()
                was = seen.get(key)
                if was is not None and store.get(key) is not was:
                    del seen[key], packed[key]
        self.scan_seconds = busy + mono() - s0
        self.scan_errors = errors
        self.scan_pending = pending
        self.walks += 1
        self._scan = (t_start, now, fold.result())

    def _held_keys(self, now_ms: int) -> dict:
        """Table keys an active legal hold may cover (each hold names one address or at most a
        /64: the keys of its address's containing networks, both slots), each with a factory
        ``f(network) -> is_held(interval)``.  Empty without holds or vaults."""
        holds = self.holds()
        vaults = self.vaults
        if not holds or not getattr(holds, "holds", ()) or not vaults:
            return {}
        out: dict = {}
        for h in holds.holds:
            vault = vaults.get(h.operator)
            if vault is None or now_ms >= h.until_ms:
                continue
            op = h.operator

            def factory(net: Any, op: str = op) -> Any:
                def held(i: iv.Interval) -> bool:
                    ports = (i.port_first, i.port_last) if i.port_first is not None else None
                    return holds.is_held(op, net, (i.start_ms, i.end_ms), now_ms, ports=ports)
                return held

            for slot in ("ip", "nat"):
                for net in iv.candidate_networks(h.network.network_address):
                    out[vault.key(slot, net)] = factory
        return out
