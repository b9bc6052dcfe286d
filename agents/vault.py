"""Crypto-shredding of the mapping table: keyed-hash table keys and per-epoch sealed values.

Defence in depth behind the sweeper's tombstones.  Kafka keeps overwritten values
and tombstoned keys in old segments until the cleaner runs, and replicas and backups keep
what they copied; so every table value is sealed (AES-256-GCM, ``stream.keyring``) under the
key of the *epoch in which its last interval expires*, and that epoch key is destroyed shortly
after the epoch ends.  Any copy left anywhere is then unreadable.

- Table key: ``<operator> "|" <slot tag> <key id>`` (``stream.intervals.keyed_table_key``):
  slot tag ``i`` (address slots) or ``n`` (NAT port blocks), key id = the 16 bytes of
  HMAC(index key, address text) (``Keyring.key_id``): no address appears in a key, and the
  operator is read back with ``stream.intervals.operator_of``.  (IPv4 key ids can be inverted
  by anyone holding the index key by trying all 2^32 addresses — which is why the *values*,
  which hold the subscriber, are what we seal.)
- Value: ``Keyring.seal(stream.intervals.encode_value(network, intervals), epoch, aad=table
  key)`` — the binary format 2 of ``stream.intervals`` (a version byte, the network as a
  length and its 4/16 address bytes, the intervals without JSON punctuation) — under the epoch
  containing the *earliest* instant its content could legitimately expire, at least one period
  ahead (``stream.shred``: an open session as if a Stop came at its last event).  So a Start or
  Interim version dies no later than the Stop that may follow it.  A value whose content lives
  on past that instant (an open session gone quiet, a legal hold) is re-sealed by the sweeper
  under a later epoch before its key is destroyed.
- Destruction: epochs ending more than ``grace_ms`` ago are destroyed on every sweep:
  ``Keyring.destroy_before`` and the state file rewritten (temp + fsync + rename + dir fsync).

Key state: one file per operator, ``<data dir>/keys/<operator>.mapping.ratchet``, mode 0600:
``origin_ms (8 bytes BE) ‖ period_ms (8 bytes BE) ‖ Keyring.to_bytes()`` — only the oldest live
epoch key and the index key.  It is created from fresh random bytes on the worker's first
start, *not* from the operator key file: a seed that survives could re-derive every epoch, and
then destroying one would prove nothing.  Consequences stated plainly: the key directory must
be on local storage excluded from backups and snapshots; a worker that loses this file cannot
read the table it restores (it starts empty and the old values are, by design, garbage); and
several workers sharing a table must share this state (workers on one host: one key
directory; across hosts: a copy made before a joining worker's first start).  Workers on one
directory read and write the file one at a time (``flock`` on
``<operator>.mapping.ratchet.lock``): started together on an empty one, they all end with the
ring the first created.  The file never moves backwards (a write first adopts a newer state it
finds), so a worker that destroyed less cannot bring another's destroyed epochs back.
"""

from __future__ import annotations

import os
import secrets
import struct
from pathlib import Path
from typing import Optional

from stream import intervals as iv
from stream import shred
from stream.errors import ConfigError, CryptoError, Rejected
from stream.keyring import Keyring, epoch_bounds, epoch_of, sealed_epoch
from stream.model import IPNetwork, ip_text

from .ratchet_store import locked_state

_HEADER = struct.Struct(">QQ")
PURPOSE = "lawful_access"
MIN_PERIOD_MS = 1_000
MAX_PERIOD_MS = 3_600_000


def period_for(ttl_ms: int) -> int:
    """Epoch length: 1/24 of the TTL, between 1 s and 1 h."""
    return max(MIN_PERIOD_MS, min(MAX_PERIOD_MS, ttl_ms // 24))


class Vault:
    """One operator's table-key hashing and value sealing, with its ratchet state on disk."""

    def __init__(self, operator: str, path: Path, ring: Keyring, origin_ms: int, period_ms: int,
                 grace_ms: int) -> None:
        self.operator = operator
        self.path = path
        self.ring = ring
        self.origin_ms = origin_ms
        self.period_ms = period_ms
        self.grace_ms = grace_ms
        self.shredded_epochs = 0
        self._prefix = {slot: iv.keyed_table_key(operator, slot, b"") for slot in iv.SLOT_TAGS}

    def __repr__(self) -> str:
        return f"Vault({self.operator!r}, oldest_epoch={self.ring.oldest_epoch})"

    @classmethod
    def open_or_create(cls, operator: str, keys_dir: Path, *, ttl_ms: int, grace_ms: int, now_ms: int,
                       destroy: bool = True) -> "Vault":
        """The operator's vault, its state created on first use.  ``destroy=False``: leave ended
        epochs for the caller's first ``destroy_due`` (a worker does that once its restored table
        is scheduled, so values it must re-seal are not lost to a restart)."""
        keys_dir = Path(keys_dir)
        path = keys_dir / f"{operator}.mapping.ratchet"
        keys_dir.mkdir(parents=True, exist_ok=True)
        # two workers starting together on one key directory: the second must read the ring
        # the first created, not write a random one of its own over it
        with locked_state(path):
            if path.exists():
                st = path.stat()
                if st.st_mode & 0o077:
                    raise ConfigError(f"{path}: ratchet state is readable by group/others; run `chmod 600 {path}`")
                data = path.read_bytes()
                try:
                    origin, period = _HEADER.unpack_from(data)
                    ring = Keyring.from_bytes(data[_HEADER.size:])
                except (struct.error, CryptoError):
                    raise ConfigError(f"{path}: ratchet state is corrupt; move it away to start with an empty table") from None
                v = cls(operator, path, ring, origin, period, grace_ms)
            else:
                period = period_for(ttl_ms)
                ring = Keyring.create(operator, secrets.token_bytes(32), purpose=PURPOSE, epoch=0)
                v = cls(operator, path, ring, now_ms - now_ms % period, period, grace_ms)
                v._write()
        if destroy:
            v.destroy_due(now_ms)
        return v

    # -- keys and values ----------------------------------------------------------------------

    def key(self, slot: str, net: IPNetwork) -> bytes:
        return self._prefix[slot] + self.ring.key_id_bytes(ip_text(net))

    def seal(self, key: bytes, net: IPNetwork, ivs: iv.Intervals, *, until_ms: int, now_ms: int) -> bytes:
        epoch = self.epoch_at(max(until_ms, now_ms + self.period_ms))
        return self.ring.seal(iv.encode_value(net, ivs), epoch, aad=key)

    def seal_value(self, key: bytes, net: IPNetwork, ivs: iv.Intervals, *, ttl_ms: int, stale_after_ms: int,
                   now_ms: int) -> tuple[bytes, int]:
        """``ivs`` sealed under the epoch of its content's earliest expiry (``stream.shred``), and
        when the sweeper must look at it again (next expiry or re-seal, whichever first)."""
        # shred.seal_instant_ms, epoch_at and shred.revisit_ms, from one pass over the intervals
        earliest, nxt = shred.seal_plan(ivs, ttl_ms=ttl_ms, stale_after_ms=stale_after_ms)
        period, origin = self.period_ms, self.origin_ms
        at = max(earliest, now_ms + period)
        epoch = (at - origin) // period if at > origin else 0
        raw = self.ring.seal(iv.encode_value(net, ivs), epoch, aad=key)
        start = origin + epoch * period
        reseal = now_ms if start > at else max(earliest, start)
        return raw, reseal if nxt is None or reseal < nxt else nxt

    def revisit(self, raw: bytes, ivs: iv.Intervals, *, ttl_ms: int, stale_after_ms: int, now_ms: int) -> int:
        """When the sweeper must next look at a stored value holding ``ivs`` (its epoch is read
        from the header); ``<= now_ms`` means: re-seal it now."""
        start = self.epoch_start_ms(sealed_epoch(raw))
        return shred.revisit_ms(ivs, start, now_ms, ttl_ms=ttl_ms, stale_after_ms=stale_after_ms,
                                period_ms=self.period_ms)

    def open(self, key: bytes, raw: bytes) -> tuple[IPNetwork, iv.Intervals]:
        """Raises ``CryptoError`` when the value's epoch key is destroyed, it was tampered with,
        or it opens to something that is not a format-2 value (a table written by a release
        before format 2: such values are treated as unreadable and tombstoned by the sweeper)."""
        plaintext = self.ring.open(raw, aad=key)
        try:
            return iv.decode_value(plaintext)
        except Rejected as e:
            raise CryptoError(f"sealed table value does not decode: {e.detail}") from None

    def next_expiry(self, key: bytes, raw: bytes, *, ttl_ms: int, stale_after_ms: int) -> Optional[int]:
        """``next_expiry_ms`` of a sealed value's intervals without decoding them
        (``stream.intervals.next_expiry_of``); ``CryptoError`` exactly where ``open`` raises it."""
        plaintext = self.ring.open(raw, aad=key)
        try:
            return iv.next_expiry_of(plaintext, ttl_ms=ttl_ms, stale_after_ms=stale_after_ms)
        except Rejected as e:
            raise CryptoError(f"sealed table value does not decode: {e.detail}") from None

    # -- epochs -------------------------------------------------------------------------------

    def epoch_at(self, at_ms: int) -> int:
        return epoch_of(max(at_ms, self.origin_ms), self.period_ms, self.origin_ms)

    def destroy_due(self, now_ms: int) -> int:
        """Destroy every epoch that ended more than ``grace_ms`` ago; returns how many."""
        if now_ms - self.grace_ms < self.origin_ms:
            return 0
        cutoff = self.epoch_at(now_ms - self.grace_ms)  # epochs < cutoff have ended
        before = self.ring.oldest_epoch
        if cutoff <= before:
            return 0
        self.ring.destroy_before(cutoff)
        self._persist()
        self.shredded_epochs += cutoff - before
        return cutoff - before

    def epoch_start_ms(self, epoch: int) -> int:
        return epoch_bounds(epoch, self.period_ms, self.origin_ms)[0]

    def epoch_end_ms(self, epoch: int) -> int:
        return epoch_bounds(epoch, self.period_ms, self.origin_ms)[1]

    def _persist(self) -> None:
        with locked_state(self.path):
            self._write()

    def _write(self) -> None:
        # never move the file backwards: a worker sharing this key directory may have destroyed
        # further meanwhile, and writing our older state would bring its epochs back (the lock
        # makes that read and the write one step for every process)
        try:
            on_disk = Keyring.from_bytes(self.path.read_bytes()[_HEADER.size:]).oldest_epoch
        except (OSError, CryptoError):
            on_disk = 0
        if on_disk > self.ring.oldest_epoch:
            self.ring.destroy_before(on_disk)
        data = _HEADER.pack(self.origin_ms, self.period_ms) + self.ring.to_bytes()
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)



def max_until(ivs: iv.Intervals, *, ttl_ms: int, stale_after_ms: int) -> int:
    """The latest expiry instant among ``ivs`` (benchmarks seal synthetic values with it; the
    worker seals by ``Vault.seal_value``)."""
    return max((iv.expiry_ms(i, ttl_ms=ttl_ms, stale_after_ms=stale_after_ms) for i in ivs), default=0)
