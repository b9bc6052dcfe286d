"""Operator key material on disk (the edge; derivation lives in ``stream``).

One file per operator, ``<keys_dir>/<operator>.key``: 32 random bytes as 64 hex characters.
The file must be readable by its owner only (mode 0600 or stricter): a group- or
world-readable key file stops the worker with a clear error, because anyone who can read it can
re-identify every pseudonym of that operator.  ``ensure_demo_keys`` creates fresh keys for the
demo and tests; production keys are provisioned by the operator (see README "Keys").
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import Iterable

from stream.errors import ConfigError


def key_path(keys_dir: Path, operator: str) -> Path:
    return Path(keys_dir) / f"{operator}.key"


def require_private(path: Path, what: str = "secret file") -> Path:
    """``path`` if it is a regular file that neither its group nor others can read, write or
    execute (mode 0600 or stricter); else ``ConfigError`` naming the file and the fix.

    One rule for every secret ipanon reads: operator keys, authority and staff
    private keys, SASL password files, TLS private keys.  Checked on the file itself (after
    symlinks), because that is what the kernel checks on open.  The message never includes
    the contents."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ConfigError(f"{p}: {what} not found") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{p}: {what} is not a regular file")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{p}: {what} is accessible by group/others (mode {stat.S_IMODE(st.st_mode):o}); "
                          f"run `chmod 600 {p}`")
    return p


def load_key(keys_dir: Path, operator: str) -> bytes:
    p = key_path(keys_dir, operator)
    if not p.exists():
        raise ConfigError(f"{p}: no key file for operator {operator!r}; create one with "
                          f"`(umask 077; head -c32 /dev/urandom | xxd -p -c64 > {p})`") from None
    require_private(p, "key file")
    text = p.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"{p}: key file must hold 64 hex characters") from None
    if len(key) != 32:
        raise ConfigError(f"{p}: key file must hold 32 bytes (64 hex characters)")
    return key


def ensure_demo_keys(keys_dir: Path, operators: Iterable[str]) -> None:
    keys_dir = Path(keys_dir)
    keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    for op in operators:
        p = key_path(keys_dir, op)
        if not p.exists():
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")


#: The lookup key shared by the workers and the query desk of one deployment
#: (``stream.lookup_wire``): 32 random bytes as 64 hex characters, mode 0600.
LOOKUP_KEY_FILE = "lookup.key"


def ensure_lookup_key(keys_dir: Path) -> Path:
    """Create ``<keys_dir>/lookup.key`` from fresh random bytes if it does not exist (O_EXCL,
    mode 0600; a worker does this on its first start, like the audit anchor key).  Several
    workers of one deployment must share it: copy it to a worker with its own key directory
    before its first start, or its lookups are refused as unauthenticated."""
    keys_dir = Path(keys_dir)
    keys_dir.mkdir(parents=True, exist_ok=True)
    p = keys_dir / LOOKUP_KEY_FILE
    if p.exists():
        return p
    # written whole to a private temp file, then linked into place: a worker starting at the
    # same moment sees either no key or the complete one, and the first link wins
    tmp = keys_dir / f".{LOOKUP_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, p)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return p


def load_lookup_key(keys_dir: Path, *, create: bool = False) -> bytes:
    """The deployment's lookup key (``ConfigError`` if missing, not private or not 32 bytes)."""
    p = Path(keys_dir) / LOOKUP_KEY_FILE
    if create:
        ensure_lookup_key(keys_dir)
    require_private(p, "lookup key")
    try:
        key = bytes.fromhex(p.read_text().strip())
    except ValueError:
        raise ConfigError(f"{p}: the lookup key must hold 64 hex characters") from None
    if len(key) != 32:
        raise ConfigError(f"{p}: the lookup key must hold 32 bytes (64 hex characters)")
    return key
