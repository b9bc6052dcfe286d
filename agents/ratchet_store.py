"""Keyring (ratchet) state on disk: ``<keys_dir>/<operator>.<purpose>.ratchet``, mode 0600.

``stream.keyring`` does no I/O; this is the edge that persists ``Keyring.to_bytes()``.  Writes
are write-to-temp (created 0600) + fsync + rename + fsync(dir), so a crash leaves either the old
or the new state, never a torn one.  The state only ever moves forward: ``save`` first merges
the file's state (if its oldest epoch is newer, ours is advanced to it), under an ``flock`` on
``<file>.lock`` (``locked_state``) so that read and the write are one step across processes: a
running worker can never resurrect an epoch that ``ipanon keys rotate`` destroyed meanwhile.

First start: the ring is created from the operator's key file (``agents.keystore``, the seed)
at the epoch the caller asks for — every earlier epoch is never written to disk.  From then on
the worker needs only the ratchet file.  The seed can re-derive every epoch from 0 on, so it is
**retired the moment an epoch that was live on disk is destroyed** (``write_ring``): the file is
overwritten with random bytes, fsynced and unlinked, and the log says so.  An operator who wants
an escrow copy takes it off the machine before that, knowingly (docs/pseudonymisation.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import stat
from pathlib import Path
from typing import Optional

from stream.errors import ConfigError, CryptoError
from stream.keyring import Keyring

from .keystore import key_path, load_key

log = logging.getLogger("ipanon")


def ratchet_path(keys_dir: Path, operator: str, purpose: str = "statistics") -> Path:
    return Path(keys_dir) / f"{operator}.{purpose}.ratchet"


def read_ring(keys_dir: Path, operator: str, purpose: str = "statistics") -> Optional[Keyring]:
    """The persisted ring, or None if there is none.  Refuses group/world-readable files."""
    p = ratchet_path(keys_dir, operator, purpose)
    try:
        st = p.stat()
    except FileNotFoundError:
        return None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{p}: ratchet file is readable by group/others (mode {stat.S_IMODE(st.st_mode):o}); "
                          f"run `chmod 600 {p}`")
    try:
        ring = Keyring.from_bytes(p.read_bytes())
    except CryptoError as e:
        raise ConfigError(f"{p}: {e}") from None
    if ring.operator != operator or ring.purpose != purpose:
        raise ConfigError(f"{p}: holds the ring of another operator or purpose")
    return ring


def write_ring(keys_dir: Path, ring: Keyring) -> Path:
    """Atomically persist ``ring`` (never moving the stored state backwards)."""
    keys_dir = Path(keys_dir)
    p = ratchet_path(keys_dir, ring.operator, ring.purpose)
    with locked_state(p):  # a worker and `ipanon keys rotate`: the read and the write one step
        on_disk = read_ring(keys_dir, ring.operator, ring.purpose)
        if on_disk is not None and on_disk.oldest_epoch > ring.oldest_epoch:
            ring.destroy_before(on_disk.oldest_epoch)
        destroyed = on_disk is not None and ring.oldest_epoch > on_disk.oldest_epoch
        tmp = p.with_name(p.name + f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, ring.to_bytes())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, p)
        _fsync_dir(keys_dir)
    if destroyed and retire_seed(keys_dir, ring.operator):
        log.warning("keys: %s: epochs before %d destroyed; seed file %s removed (it re-derives every epoch)",
                    ring.operator, ring.oldest_epoch, key_path(keys_dir, ring.operator).name)
    return p


@contextlib.contextmanager
def locked_state(path: Path):
    """An exclusive ``flock`` on ``<path>.lock`` (empty, 0600): the processes sharing a key
    directory read and write one ratchet state file one at a time (also ``agents.vault``)."""
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _fsync_dir(d: Path) -> None:
    dfd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def retire_seed(keys_dir: Path, operator: str) -> bool:
    """Overwrite ``<operator>.key`` with random bytes, fsync and unlink it; False if absent.
    (The overwrite defeats an undelete of the inode; SSD wear levelling and snapshots may keep
    old blocks, which is why the key directory stays out of backups and snapshots.)"""
    p = key_path(keys_dir, operator)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        return False
    fd = os.open(p, os.O_WRONLY)
    try:
        os.write(fd, secrets.token_bytes(max(size, 1)))
        os.fsync(fd)
    finally:
        os.close(fd)
    p.unlink()
    _fsync_dir(Path(keys_dir))
    return True


def key_material(keys_dir: Path, operator: str) -> bytes:
    """What the worker needs to start: the seed while there is no ratchet yet (returned), or
    an existing statistics ratchet (``b""``: the seed is not needed and may be gone).
    ``ConfigError`` when neither is usable."""
    if not key_path(keys_dir, operator).exists() and read_ring(keys_dir, operator) is not None:
        return b""
    return load_key(keys_dir, operator)


def load_or_create(keys_dir: Path, operator: str, *, epoch: int, purpose: str = "statistics") -> Keyring:
    """The persisted ring (advanced to ``epoch`` if it is older), else a new one created from
    the operator key file at ``epoch``; either way the result is written back."""
    ring = read_ring(keys_dir, operator, purpose)
    if ring is None:
        ring = Keyring.create(operator, load_key(keys_dir, operator), purpose=purpose, epoch=epoch)
    elif ring.oldest_epoch < epoch:
        ring.destroy_before(epoch)
    write_ring(keys_dir, ring)
    return ring


def index_ring(keys_dir: Path, operator: str, purpose: str = "statistics") -> Keyring:
    """A ring for its *stable index key* only (consent keys): the persisted one if present,
    else derived from the key file without writing anything.  Both give the same index key."""
    ring = read_ring(keys_dir, operator, purpose)
    if ring is not None:
        return ring
    return Keyring.create(operator, load_key(keys_dir, operator), purpose=purpose)
