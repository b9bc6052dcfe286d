"""Keyring (ratchet) state on disk: ``<keys_dir>/<operator>.<purpose>.ratchet``, mode 0600.

``stream.keyring`` does no I/O; this is the edge that persists ``Keyring.to_bytes()``.  Writes
are write-to-temp (created 0600) + fsync + rename + fsync(dir), so a crash leaves either the old
or the new state, never a torn one.  The state only ever moves forward: ``save`` first merges
the file's state (if its oldest epoch is newer, ours is advanced to it), so a running worker can
never resurrect an epoch that ``ipanon keys rotate`` destroyed meanwhile.

First start: the ring is created from the operator's key file (``agents.keystore``) at the
epoch the caller asks for — every earlier epoch is never written to disk.  Caveat (say it
plainly): while ``<operator>.key`` itself stays in the key directory, every epoch can be
re-derived from it; for epochs to be truly destroyed the seed must leave the machine after the
ratchet file exists (docs/statistics.md "Key epochs").
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Optional

from stream.errors import ConfigError, CryptoError
from stream.keyring import Keyring

from .keystore import load_key


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
    on_disk = read_ring(keys_dir, ring.operator, ring.purpose)
    if on_disk is not None and on_disk.oldest_epoch > ring.oldest_epoch:
        ring.destroy_before(on_disk.oldest_epoch)
    p = ratchet_path(keys_dir, ring.operator, ring.purpose)
    tmp = p.with_name(p.name + f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, ring.to_bytes())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, p)
    dfd = os.open(keys_dir, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return p


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
