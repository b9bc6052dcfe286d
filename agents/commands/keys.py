"""``ipanon keys new-authority|new-staff|show|rotate`` — lawful-access key pairs; statistics key epochs.

``show`` and ``rotate`` manage the per-operator statistics key epochs (``agents.ratchet_store``,
docs/statistics.md "Key epochs"); they never print key bytes.

An authority gets two key pairs: Ed25519 to sign its requests and X25519 to open the answers
sealed to it.  A staff member gets one Ed25519 pair to sign approvals.  Private keys are written
as unencrypted PKCS#8 PEM files with mode 0600 under ``--out`` (never overwritten); the public
half is a registry entry (TOML) printed to stdout or written to ``--registry DIR/NAME.toml``.
The operator only ever needs the public halves; an authority's private keys belong to the
authority.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from stream.access import BASES, public_key_text
from stream.errors import ConfigError

from ..cli import CliError

_PEM = dict(encoding=serialization.Encoding.PEM, format=serialization.PrivateFormat.PKCS8,
            encryption_algorithm=serialization.NoEncryption())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "keys", help="create authority and staff key pairs for lawful access",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Create key pairs: private keys (mode 0600) under --out, registry TOML to stdout\n"
                    "or --registry DIR.",
        epilog="example:\n"
               "  ipanon keys new-authority se-police --bases lek-law-enforcement,emergency \\\n"
               "      --out ~/.ipanon/keys --registry config/authorities\n"
               "  ipanon keys new-staff alice --out ~/.ipanon/keys --registry config/staff",
    )
    ksub = p.add_subparsers(dest="keys_action", metavar="ACTION", required=True)
    a = ksub.add_parser("new-authority", help="signing (Ed25519) + encryption (X25519) key pairs",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="example:\n  ipanon keys new-authority rights-demo --bases ipred-court-order --out /tmp/k")
    a.add_argument("name", help="authority id: lower-case letters, digits, '-'")
    a.add_argument("--bases", default="lek-law-enforcement",
                   help=f"comma-separated legal bases it may use ({', '.join(BASES)})")
    a.add_argument("--display-name", default=None, help="human name for the registry entry")
    a.add_argument("--country", default="SE", help="ISO country code (ETSI TS 102 657 requestID)")
    a.add_argument("--per-hour", type=int, default=60, help="rate limit: requests per hour (default 60)")
    a.add_argument("--burst", type=int, default=10, help="rate limit: bucket size (default 10)")
    _common(a)
    a.set_defaults(func=run_authority)
    s = ksub.add_parser("new-staff", help="an approver's Ed25519 key pair",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="example:\n  ipanon keys new-staff alice --out /tmp/k --registry config/staff")
    s.add_argument("name", help="staff id: lower-case letters, digits, '-'")
    s.add_argument("--bases", default=",".join(BASES), help="bases this person may approve (default all)")
    s.add_argument("--display-name", default=None, help="human name for the registry entry")
    _common(s)
    s.set_defaults(func=run_staff)
    _register_epochs(ksub)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="directory for the private key files (created 0700)")
    p.add_argument("--registry", type=Path, default=None,
                   help="write the public registry entry to DIR/NAME.toml instead of stdout")


def _check_name(name: str) -> None:
    from stream.access import ID_RE
    if not ID_RE.match(name):
        raise CliError(f"name {name!r} must be lower-case letters, digits and '-' (max 63)")


def _bases(text: str) -> list[str]:
    bases = [b.strip() for b in text.split(",") if b.strip()]
    bad = [b for b in bases if b not in BASES]
    if bad or not bases:
        raise CliError(f"unknown basis {bad[0] if bad else '(none)'!r}: use {', '.join(BASES)}")
    return bases


def write_private(path: Path, key) -> None:
    """Write a private key as PKCS#8 PEM, mode 0600 from the first byte, never overwriting."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CliError(f"{path} already exists: keys are never overwritten (move it away first)") from None
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(**_PEM))


def load_private(path: Path, kind: str):
    """Load an Ed25519 (``kind='ed25519'``) or X25519 private key written by ``ipanon keys``.
    A key file its group or others can access is refused, like every secret."""
    from ..keystore import require_private
    from stream.errors import ConfigError

    if Path(path).exists():
        try:
            require_private(Path(path), "private key file")
        except ConfigError as e:
            raise CliError(str(e)) from None
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except FileNotFoundError:
        raise CliError(f"{path}: no such key file") from None
    except (ValueError, TypeError):
        raise CliError(f"{path}: not an unencrypted PEM private key") from None
    want = ed25519.Ed25519PrivateKey if kind == "ed25519" else x25519.X25519PrivateKey
    if not isinstance(key, want):
        raise CliError(f"{path}: not an {kind} private key")
    return key


def _toml_list(xs: list[str]) -> str:
    return "[" + ", ".join(f'"{x}"' for x in xs) + "]"


def _emit(args: argparse.Namespace, text: str) -> None:
    if args.registry is None:
        print(text, end="")
        return
    args.registry.mkdir(parents=True, exist_ok=True)
    path = args.registry / f"{args.name}.toml"
    if path.exists():
        raise CliError(f"{path} already exists: remove it first to re-register {args.name}")
    path.write_text(text)
    print(path)


def authority_toml(name: str, display: str, country: str, sign_pub, enc_pub, bases: list[str],
                   per_hour: int, burst: int) -> str:
    return (f'# Lawful-access authority registration (public keys only).\n'
            f'id = "{name}"\nname = "{display}"\ncountry = "{country}"\n'
            f'signing_key = "{public_key_text(sign_pub)}"\n'
            f'encryption_key = "{public_key_text(enc_pub)}"\n'
            f'bases = {_toml_list(bases)}\n\n[rate_limit]\nper_hour = {per_hour}\nburst = {burst}\n')


def staff_toml(name: str, display: str, sign_pub, bases: list[str]) -> str:
    return (f'# Staff member who may approve disclosures (public key only).\n'
            f'id = "{name}"\nname = "{display}"\n'
            f'signing_key = "{public_key_text(sign_pub)}"\nbases = {_toml_list(bases)}\n')


def run_authority(args: argparse.Namespace) -> int:
    _check_name(args.name)
    bases = _bases(args.bases)
    if args.per_hour <= 0 or args.burst <= 0:
        raise ConfigError("--per-hour and --burst must be positive")
    for suffix in ("sign", "enc"):
        if (args.out / f"{args.name}.{suffix}.pem").exists():
            raise CliError(f"{args.out / f'{args.name}.{suffix}.pem'} already exists: keys are never overwritten")
    sign, enc = ed25519.Ed25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()
    write_private(args.out / f"{args.name}.sign.pem", sign)
    write_private(args.out / f"{args.name}.enc.pem", enc)
    _emit(args, authority_toml(args.name, args.display_name or args.name, args.country, sign.public_key(),
                               enc.public_key(), bases, args.per_hour, args.burst))
    return 0


def run_staff(args: argparse.Namespace) -> int:
    _check_name(args.name)
    bases = _bases(args.bases)
    sign = ed25519.Ed25519PrivateKey.generate()
    write_private(args.out / f"{args.name}.sign.pem", sign)
    _emit(args, staff_toml(args.name, args.display_name or args.name, sign.public_key(), bases))
    return 0


# -- statistics key epochs ------------------------------------------------------------------------


def _register_epochs(ksub) -> None:
    for name, text, ex in (
        ("show", "per operator: oldest live statistics key epoch, current epoch, files (no key bytes)",
         "ipanon keys show --keys ~/.config/ipanon/keys"),
        ("rotate", "destroy statistics key epochs now: everything before the current epoch (or --to-epoch, "
                   "never a future one); says what was destroyed and removes the seed file once one was",
         "ipanon keys rotate --operator junet --keys ~/.config/ipanon/keys"),
    ):
        a = ksub.add_parser(name, help=text, formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog=f"example:\n  {ex}")
        a.add_argument("--operator", "-o", required=(name == "rotate"), help="operator name")
        a.add_argument("--keys", type=Path, help="directory of operator key files (default: IPANON_KEYS or the worker's)")
        a.add_argument("--operators", type=Path, help="directory of operator profiles (default config/operators)")
        if name == "rotate":
            a.add_argument("--to-epoch", type=int, default=None,
                           help="destroy every epoch before this one (default: the current epoch)")
        a.set_defaults(func=run_show if name == "show" else run_rotate)


def _epoch_context(args: argparse.Namespace):
    import time

    from stream.config import load_operators

    from ..runtime import keys_dir
    from ..settings import Settings

    s = Settings.from_env(bootstrap="unused:0", operators_dir=args.operators, keys_dir=args.keys)
    policies = load_operators(s.operators_dir)
    if args.operator and args.operator not in policies:
        raise CliError(f"operator {args.operator!r} has no profile in {s.operators_dir}")
    names = [args.operator] if args.operator else sorted(policies)
    args.ingest_lag_ms = s.ingest_lag_ms
    return keys_dir(s), policies, names, time.time_ns() // 1_000_000


def _utc(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_show(args: argparse.Namespace) -> int:
    from stream.config import format_duration
    from stream.keyring import epoch_bounds, epoch_of

    from ..keystore import key_path
    from ..ratchet_store import ratchet_path, read_ring

    kd, policies, names, now = _epoch_context(args)
    print(f"{'operator':12} {'period':>7} {'current':>8} {'oldest live':>11}  oldest live since     seed file  ratchet file")
    for n in names:
        pol = policies[n]
        cur = epoch_of(now, pol.key_epoch_ms)
        ring = read_ring(kd, n)
        oldest = "-" if ring is None else str(ring.oldest_epoch)
        since = "-" if ring is None else _utc(epoch_bounds(ring.oldest_epoch, pol.key_epoch_ms)[0])
        seed = "present" if key_path(kd, n).exists() else "absent"
        rp = ratchet_path(kd, n)
        print(f"{n:12} {format_duration(pol.key_epoch_ms):>7} {cur:>8} {oldest:>11}  {since:20}  {seed:9}  "
              f"{rp if rp.exists() else '(none yet: created by the worker)'}")
    return 0


def run_rotate(args: argparse.Namespace) -> int:
    """Destroy statistics epochs now, saying exactly what was destroyed (or that nothing was),
    and refusing a target in the future: the worker could pseudonymise nothing until it begins."""
    from stream.config import format_duration
    from stream.keyring import epoch_bounds, epoch_of

    from ..keystore import key_path
    from ..ratchet_store import load_or_create, read_ring

    kd, policies, names, now = _epoch_context(args)
    n = names[0]
    period = policies[n].key_epoch_ms
    current = epoch_of(now, period)
    target = args.to_epoch if args.to_epoch is not None else current
    if target < 0:
        raise CliError("--to-epoch must be >= 0")
    if target > current:
        begins = epoch_bounds(target, period)[0]
        raise CliError(f"--to-epoch {target} lies in the future (current epoch {current}, {format_duration(period)} "
                       f"each): the worker could pseudonymise nothing for {n} until epoch {target} begins at "
                       f"{_utc(begins)} ({format_duration(begins - now)} without statistics); refused. "
                       f"Use at most {current}")
    before = read_ring(kd, n)
    seed_before = key_path(kd, n).exists()
    ring = load_or_create(kd, n, epoch=target)
    if before is None:
        print(f"{n}: statistics ratchet created at epoch {ring.oldest_epoch} (since {_utc(epoch_bounds(ring.oldest_epoch, period)[0])}); "
              f"no earlier epoch was ever stored in {kd}")
    elif ring.oldest_epoch > before.oldest_epoch:
        print(f"{n}: destroyed statistics epochs {before.oldest_epoch}..{ring.oldest_epoch - 1}; oldest live epoch is "
              f"now {ring.oldest_epoch} (since {_utc(epoch_bounds(ring.oldest_epoch, period)[0])}); a running worker "
              f"follows within seconds")
    else:
        print(f"{n}: nothing destroyed: the oldest live epoch is already {before.oldest_epoch} "
              f"(current epoch {current}); epochs are destroyed by the worker as they end")
    live = epoch_of(max(0, now - args.ingest_lag_ms), period)
    if live < ring.oldest_epoch:
        print(f"{n}: records of epoch {live} may still arrive for {format_duration(args.ingest_lag_ms)} (the ingest "
              f"lag); they are no longer pseudonymised: the worker counts them as late and leaves them out")
    if seed_before and not key_path(kd, n).exists():
        print(f"{n}: seed file {key_path(kd, n).name} removed: it re-derived every destroyed epoch")
    elif key_path(kd, n).exists():
        print(f"{n}: seed file {key_path(kd, n)} is still present: it re-derives every epoch from 0 on; "
              f"it is removed when the first live epoch is destroyed")
    return 0
