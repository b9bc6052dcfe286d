"""On the real broker: a worker whose mapping table lives on disk (RocksDB) still forgets
on time.  Seconds-scale TTLs (a 60 s promise), bindings with recognisable subscribers and
addresses, a wait past the *computed* bound (the retention plan the worker runs with, whose
``worst_case_ms`` carries the disk term ``B_disk`` of ``stream.disk_bound``), then:

- no topic of the deployment (every partition, every record: keys, values, headers) and no file
  under the worker's data directory (RocksDB SSTs, WAL, MANIFEST, OPTIONS, LOG, anything) holds
  a subscriber id, the session tag, an address as text, or an address packed in 4/16 bytes;
- no file under the data directory holds any sealed value the worker ever wrote for the expired
  keys (16-byte windows of each version read from the changelog), nor the key ids of those keys:
  this does not rely on crypto-shredding (a store that never compacts fails it even when every
  copy left is undecryptable);
- nothing in those files opens under the remaining key state: every offset where a sealed value
  of a live epoch could start is tried, at every plausible length, with every table key.

Each check has a positive control so that it cannot pass vacuously: before expiry the data
directory holds a decryptable copy and the ciphertext of every fed key (the scanners see the
store), and after the bound the *kept* keys (sessions left open, alive for a day) are still
there and still open.

Planted defects (run by hand; the test must then fail): ``IPANON_TEST_PLANT=no-compaction``
(``DiskStore.compact_partition`` does nothing), ``no-erase-tick`` (``DiskStore.erase_tick`` does
nothing), ``no-reopen`` (``DiskStore.reopen`` does nothing: the MANIFEST keeps deleted keys),
``no-compaction-no-shred`` (no compaction and ``Vault.destroy_due`` does nothing: the leftover
copies still open).  The worker runs with the defect patched in before ``agents.cli.main``.
``tests/e2e/test_disk_restart.py`` uses ``checkpoint-off-by-one`` (the store's checkpoint read
one past where it is), ``checkpoint-trusted`` (a store's checkpoint taken as the changelog's
end: nothing read after a restart) — both with ``table_checkpoints.Checkpoints.check`` off, which
otherwise restores such a partition afresh — and ``no-disk-schedule`` (no entry in the on-disk
schedule).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import sys
import time
import uuid
from pathlib import Path

import pytest

from agents.kafka_io import read_all
from agents.lookup_client import lookup_many
from tests.conftest import wait_for
from tests.e2e.test_erasure import INGEST_LAG_MS, PROMISE_S, all_topic_bytes, fast_profile, produce

pytestmark = [pytest.mark.broker, pytest.mark.slow]

# -- the on-disk store in a worker -------------------------------------------------------------

#: seconds-scale erasure parameters: every held partition force-compacted every 4 s, a tick every
#: second, 6 s allowed for one tick's flushes, compactions and reopen (a few KB per partition here)
ERASURE = {"cycle_ms": 4_000, "tick_ms": 1_000, "compaction_allowance_ms": 6_000}

PLANTS = {
    "no-compaction": "import agents.disk_store as d; d.DiskStore.compact_partition = lambda self, p: None",
    "no-erase-tick": ("import agents.disk_store as d; d.DiskStore.erase_tick = lambda self, now_ms, **k: "
                      "{'at_ms': now_ms, 'compacted': [], 'duration_ms': 0.0, 'overran': False}"),
    "no-reopen": "import agents.disk_store as d; d.DiskStore.reopen = lambda self: None",
    "no-compaction-no-shred": ("import agents.disk_store as d, agents.vault as v; "
                               "d.DiskStore.compact_partition = lambda self, p: None; "
                               "v.Vault.destroy_due = lambda self, now_ms: 0"),
    # for tests/e2e/test_disk_restart.py
    # (with the table's own checkpoint checks off: they restore afresh a checkpoint past the end)
    "checkpoint-off-by-one": ("import agents.disk_store as d, agents.table_checkpoints as m; _c = d.DiskStore.checkpoint; "
                              "m.Checkpoints.check = lambda self, *a: None; "
                              "d.DiskStore.checkpoint = lambda self, p: (lambda c: None if c is None else c + 1)(_c(self, p))"),
    "checkpoint-trusted": ("import agents.disk_store as d, agents.table_checkpoints as m; _c = d.DiskStore.checkpoint; "
                           "m.Checkpoints.check = lambda self, *a: None; "
                           "d.DiskStore.checkpoint = lambda self, p: (lambda c: None if c is None else 2**62)(_c(self, p))"),
    "no-disk-schedule": "import agents.disk_store as d; d.Batch.schedule = lambda self, p, when_ms, key: self",
}


def disk_store_wiring() -> tuple[dict, list[str]]:
    """(Settings overrides, worker flags) selecting the on-disk store with ``ERASURE``; skips
    when the worker has no such setting."""
    from agents.settings import Settings

    fields = {f.name for f in dataclasses.fields(Settings)}
    if "table_store" not in fields:
        pytest.skip("agents.settings.Settings has no `table_store` setting: the on-disk mapping store "
                    "(agents/disk_store.py) is not wired into the worker yet")
    over = {"table_store": "disk", "erasure_cycle_ms": ERASURE["cycle_ms"], "erasure_tick_ms": ERASURE["tick_ms"],
            "compaction_allowance_ms": ERASURE["compaction_allowance_ms"]}
    flags = ["--table-store", "disk", "--erasure-cycle-ms", str(ERASURE["cycle_ms"]),
             "--erasure-tick-ms", str(ERASURE["tick_ms"]),
             "--compaction-allowance-ms", str(ERASURE["compaction_allowance_ms"])]
    return over, flags


def disk_worker(worker_factory, operators, *, extra=(), plant=None, **kw):
    """A ``WorkerProcess`` with the on-disk store; ``w.settings`` and ``w.plan`` are the worker's
    own (the plan with the disk term).  ``plant``: a key of ``PLANTS`` patched into the worker."""
    from agents.runtime import apply_topics

    over, flags = disk_store_wiring()
    w = worker_factory(operators=operators, extra=[*flags, *extra], **kw)
    w.settings = dataclasses.replace(w.settings, **over)
    w.plan = apply_topics(w.settings)
    plant = plant or os.environ.get("IPANON_TEST_PLANT") or None
    if plant:
        assert w.args[1:3] == ["-m", "agents.cli"], w.args[:3]
        w.args = [sys.executable, "-c", f"{PLANTS[plant]}\nimport sys\nfrom agents.cli import main\n"
                  f"sys.exit(main(sys.argv[1:]))", *w.args[3:]]
    return w


def store_dir(w) -> Path:
    """The worker's RocksDB directory (the one holding ``CURRENT``) under its data directory."""
    found = [p.parent for p in (w.dir / "data").rglob("CURRENT") if any(p.parent.glob("MANIFEST-*"))]
    assert found == [Path(w.settings.store_dir)], (
        f"expected one RocksDB directory, {w.settings.store_dir}, under {w.dir / 'data'}; found {found}")
    return found[0]


# -- scanning ----------------------------------------------------------------------------------

def files_under(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root``, whole (one test worker's data directory: small)."""
    out = {}
    total = 0
    for p in sorted(Path(root).rglob("*")):
        if p.is_file() and not p.is_symlink():
            try:
                out[str(p.relative_to(root))] = b = p.read_bytes()
            except FileNotFoundError:  # RocksDB deleted it between the listing and the read
                continue
            total += len(b)
    assert total < 512 * 2**20, f"{total} bytes under {root}: not a test worker's data directory"
    return out


def address_needles(addresses: list[str]) -> dict[str, "re.Pattern[bytes]"]:
    """An address as text (not as the prefix of a longer one) and packed in 4 or 16 bytes."""
    out = {}
    for a in addresses:
        ip = ipaddress.ip_address(a)
        text = re.escape(str(ip).encode())
        out[f"{ip} as text"] = re.compile(rb"(?<![0-9A-Za-z.:])" + text + rb"(?![0-9A-Za-z:]|\.[0-9])")
        if ip.version == 6 and ip.exploded != str(ip):
            out[f"{ip} as exploded text"] = re.compile(re.escape(ip.exploded.encode()))
        out[f"{ip} packed"] = re.compile(re.escape(ip.packed))
    return out


def windows(value: bytes, size: int = 16) -> list[bytes]:
    """Non-overlapping ``size``-byte windows of a sealed value after its 9-byte header (nonce and
    ciphertext: random, so a window found is that value): one of them survives a WAL block
    boundary cutting the value in two."""
    body = value[9:]
    return [body[i:i + size] for i in range(0, len(body) - size + 1, size)]


def ciphertext_hits(blobs: dict[str, bytes], values: dict[bytes, list[bytes]]) -> dict[bytes, list[str]]:
    """key → files holding a window of any of its sealed values."""
    hits: dict[bytes, list[str]] = {}
    for key, vs in values.items():
        ws = [x for v in vs for x in windows(v)]
        files = sorted({f for f, b in blobs.items() for x in ws if x in b})
        if files:
            hits[key] = files
    return hits


def decryptable(blobs: dict[str, bytes], vault, aads: list[bytes], lengths: range,
                now_ms: int) -> list[tuple[str, int, bytes, str]]:
    """(file, offset, table key, holders) of every sealed value in ``blobs`` that the vault's
    remaining key state opens: every offset where a seal header of a live epoch starts
    (``stream.keyring``: 0x01, 8-byte big-endian epoch), every length in ``lengths``, every key
    of ``aads`` as the authenticated data."""
    from stream.errors import CryptoError

    lo = vault.ring.oldest_epoch
    hi = vault.epoch_at(now_ms + 20 * PROMISE_S * 1000)
    out = []
    for f, b in blobs.items():
        for m in re.finditer(rb"\x01\x00\x00\x00", b):
            i = m.start()
            epoch = int.from_bytes(b[i + 1:i + 9], "big")
            # a nonce is 12 random bytes: a run of zeros (padding, a little-endian 1) is not one
            if not lo <= epoch <= hi or len(set(b[i + 9:i + 21])) < 6:
                continue
            for n in lengths:
                tok = b[i:i + n]
                if len(tok) < n:
                    break
                for aad in aads:
                    try:
                        _, ivs = vault.open(aad, tok)
                    except CryptoError:
                        continue
                    out.append((f, i, aad, ",".join(sorted({x.holder or "" for x in ivs}))))
    return out


def changelog_values(bootstrap, w) -> dict[bytes, list[bytes]]:
    """Every value on the mapping table's changelog, by key (tombstones left out)."""
    out: dict[bytes, list[bytes]] = {}
    for r in read_all(bootstrap, f"{w.settings.app_id}-mappings-changelog", timeout_s=20):
        if r.key is not None and r.value is not None:
            out.setdefault(r.key, []).append(r.value)
    return out


# -- the test ----------------------------------------------------------------------------------

def test_expired_mappings_leave_every_topic_and_every_file_of_the_disk_store(worker_factory, tmp_path, bootstrap):
    from agents.vault import Vault
    from stream.disk_bound import DiskBound
    from stream.model import parse_network

    op = f"disk{uuid.uuid4().hex[:6]}"
    w = disk_worker(worker_factory, ((op, fast_profile(op)),), ingest_lag_ms=INGEST_LAG_MS).start()
    wait_for(lambda: "ingest: assigned" in w.log(), timeout_s=150, what="the ingest stage to have its partitions")
    tag = uuid.uuid4().hex[:10]
    now = int(time.time())
    ms = now * 1000
    # the gone ones: sessions that end now; the kept ones: sessions left open (a day's lost-Stop window)
    gone = [(f"dsk-{tag}-g{i}@isp.example", f"100.64.{200 + i}.{i + 1}", f"2001:db8:{0xd0 + i:x}:1100::/56")
            for i in range(6)]
    kept = [(f"dsk-{tag}-k{i}@isp.example", f"100.64.{210 + i}.{i + 1}") for i in range(2)]
    radius = []
    for i, (sub, v4, v6) in enumerate(gone):
        c = {"User-Name": sub, "Acct-Session-Id": f"{tag}-g{i}", "NAS-IP-Address": "192.0.2.10",
             "Framed-IP-Address": v4, "Delegated-IPv6-Prefix": v6}
        radius += [{**c, "Acct-Status-Type": "Start", "Event-Timestamp": now - 40},
                   {**c, "Acct-Status-Type": "Stop", "Event-Timestamp": now - 5, "Acct-Session-Time": 35}]
    for i, (sub, v4) in enumerate(kept):
        radius.append({"User-Name": sub, "Acct-Session-Id": f"{tag}-k{i}", "NAS-IP-Address": "192.0.2.10",
                       "Framed-IP-Address": v4, "Acct-Status-Type": "Start", "Event-Timestamp": now - 40})
    public = "198.51.100.177"
    nat = []
    for i, (_, v4, _) in enumerate(gone[:2]):
        blk = {"sourceIPv4Address": v4, "postNATSourceIPv4Address": public,
               "portRangeStart": 1024 * (i + 1), "portRangeEnd": 1024 * (i + 2) - 1}
        nat += [{**blk, "natEvent": 16, "observationTimeMilliseconds": ms - 39_000},
                {**blk, "natEvent": 17, "observationTimeMilliseconds": ms - 6_000}]
    produce(bootstrap, w.topics.raw_radius, "radius-json", radius, tmp_path, op)
    produce(bootstrap, w.topics.raw_nat, "ipfix-json", nat, tmp_path, op)

    probe_ms = ms - 20_000
    v6_probe = {sub: str(ipaddress.ip_network(v6).network_address + 0x42) for sub, _, v6 in gone}
    queries = ([(sub, {"operator": op, "ip": v4, "from_ms": probe_ms, "to_ms": probe_ms + 1}) for sub, v4, _ in gone]
               + [(sub, {"operator": op, "ip": v6_probe[sub], "from_ms": probe_ms, "to_ms": probe_ms + 1})
                  for sub, _, _ in gone]
               + [(gone[i][0], {"operator": op, "ip": public, "port": port, "from_ms": probe_ms, "to_ms": probe_ms + 1})
                  for i, port in ((0, 1100), (1, 2100))]
               + [(sub, {"operator": op, "ip": v4, "from_ms": probe_ms, "to_ms": probe_ms + 1}) for sub, v4 in kept])

    def holders():
        qs = [dict(q) for _, q in queries]
        got = lookup_many(bootstrap, w.topics, qs, key=w.lookup_key, timeout_s=60)
        return [[h["subscriber"] for h in (got.get(q["id"]) or {}).get("holders") or ()] for q in qs]

    want = [[sub] for sub, _ in queries]
    wait_for(lambda: holders() == want, timeout_s=120, what="every binding answered from the disk store")

    # -- positive controls: the scanners see the store ------------------------------------------
    sdir = store_dir(w)
    for d in (w.dir / "data", sdir):  # the data directory and the store: nobody else's to read
        assert os.stat(d).st_mode & 0o077 == 0, f"{d} is mode {os.stat(d).st_mode & 0o777:o}"
    vault = lambda: Vault.open_or_create(op, w.keys, ttl_ms=w.plan.retention[op].ttl_ms, grace_ms=0,  # noqa: E731
                                         now_ms=int(time.time() * 1000), destroy=False)
    v = vault()
    gone_keys = {v.key("ip", parse_network(a)): sub for sub, v4, v6 in gone for a in (v4, v6)}
    kept_keys = {v.key("ip", parse_network(v4)): sub for sub, v4 in kept}
    nat_key = v.key("nat", parse_network(public))
    values = changelog_values(bootstrap, w)
    assert set(gone_keys) | set(kept_keys) | {nat_key} <= set(values), "a fed key has no changelog record"
    mine = set(gone_keys) | set(kept_keys) | {nat_key}
    sizes = [len(x) for k in mine for x in values[k]]
    lengths = range(min(sizes) - 16, max(sizes) + 48)
    before = files_under(w.dir / "data")
    seen = ciphertext_hits(before, {k: values[k] for k in mine})
    assert set(seen) == mine, (f"before expiry, {len(mine - set(seen))} of {len(mine)} fed keys have no sealed "
                               f"value in any file under the data directory: is the table on disk?")
    opened = {aad for _, _, aad, _ in decryptable(before, v, sorted(mine), lengths, int(time.time() * 1000))}
    assert opened == mine, f"before expiry the scanner opens {len(opened)} of the {len(mine)} fed keys' values"

    # -- the computed bound ------------------------------------------------------------------------
    ret = w.plan.retention[op]
    bound = DiskBound(**ERASURE)
    assert ret.disk_bound_ms == bound.bound_ms, (ret.disk_bound_ms, bound)
    assert ret.worst_case_ms >= ret.ttl_ms + ret.sweeper_period_ms + ret.schedule_bucket_ms + bound.bound_ms
    assert ret.worst_case_ms <= PROMISE_S * 1000
    assert all(t.role not in ("raw", "derived") or INGEST_LAG_MS + t.bound_ms <= PROMISE_S * 1000
               for t in w.plan.topics), [(t.name, t.bound_ms) for t in w.plan.topics]
    end_ms = ms - 5_000  # the last mapping's end (Stops and NAT deletes end no later)
    time.sleep(max(0.0, (end_ms + max(ret.worst_case_ms, PROMISE_S * 1000)) / 1000 - time.time()) + 1)

    # -- lookups: the gone ones gone, the kept ones kept -----------------------------------------
    got = holders()
    assert got == [[] if sub not in dict(kept) else [sub] for sub, _ in queries], got

    # -- topics ------------------------------------------------------------------------------------
    # (the kept ones too: they may be in the store only sealed)
    texts = [sub.encode() for sub, _, _ in gone] + [sub.encode() for sub, _ in kept] + [tag.encode()]
    addr = address_needles([a for _, v4, v6 in gone for a in (v4, str(ipaddress.ip_network(v6).network_address))]
                           + [v6_probe[sub] for sub, _, _ in gone] + [v4 for _, v4 in kept])
    blob = all_topic_bytes(bootstrap, w.topics.prefix)
    in_topics = [n for n in texts if n in blob] + [k for k, rx in addr.items() if rx.search(blob)]
    assert in_topics == [], f"after the bound, the deployment's topics still hold {in_topics}"
    v = vault()
    late = changelog_values(bootstrap, w)
    opened_cl = [(gone_keys.get(k, "nat"), _opens(v, k, x)) for k, xs in late.items()
                 if k in gone_keys or k == nat_key for x in xs if _opens(v, k, x)]
    assert opened_cl == [], f"the changelog still holds values the remaining keys open: {opened_cl[:3]}"

    # -- every file under the data directory ----------------------------------------------------
    after = files_under(w.dir / "data")
    assert any(n.endswith(".sst") for n in after) or any(n.endswith(".log") for n in after), sorted(after)
    # text and packed-address needles
    left = sorted({(f, n.decode()) for f, b in after.items() for n in texts if n in b}
                  | {(f, k) for f, b in after.items() for k, rx in addr.items() if rx.search(b)})
    # every version of every gone key's sealed value ever on the changelog; the gone keys' key ids
    for k, xs in late.items():
        if k in values:
            values[k] = list(dict.fromkeys(values[k] + xs))
    gone_all = {**{k: values[k] for k in gone_keys}, nat_key: values[nat_key]}
    copies = ciphertext_hits(after, gone_all)
    key_ids = {k: [f for f, b in after.items() if k[-14:] in b] for k in gone_keys}
    key_ids = {gone_keys[k]: fs for k, fs in key_ids.items() if fs}
    # anything the remaining keys open
    v = vault()
    opens = decryptable(after, v, sorted(mine), lengths, int(time.time() * 1000))
    leaked = [(f, i, gone_keys.get(k, "nat" if k == nat_key else k), h) for f, i, k, h in opens if k not in kept_keys]
    # positive control after the bound: the kept keys are still in the store and open
    kept_open = {k for _, _, k, _ in opens if k in kept_keys}
    kept_ids = {k for k in kept_keys if any(k[-14:] in b for b in after.values())}
    problems = {
        "needles in files": left[:10],
        "sealed copies of expired values (file per key)": {gone_keys.get(k, "nat"): fs for k, fs in copies.items()},
        "key ids of expired keys": key_ids,
        "values the remaining keys open": leaked[:10],
        "kept keys not opened (the scan missed the store)": sorted(kept_keys[k] for k in set(kept_keys) - kept_open),
        "kept key ids not found": sorted(kept_keys[k] for k in set(kept_keys) - kept_ids),
    }
    problems = {k: x for k, x in problems.items() if x}
    assert not problems, (f"{(time.time() * 1000 - end_ms) / 1000:.0f} s after the last mapping ended "
                          f"(computed worst case {ret.worst_case_ms / 1000:.0f} s, B_disk {bound.bound_ms / 1000:.0f} s), "
                          f"under {w.dir / 'data'}: {problems}")
    assert "Traceback" not in w.log(), w.log()[-3000:]


def _opens(vault, key: bytes, value: bytes) -> list:
    """The intervals ``value`` holds if the vault opens it (holder, start, end, ports), else []."""
    from stream.errors import CryptoError

    try:
        _, ivs = vault.open(key, value)
    except CryptoError:
        return []
    return [(x.holder, x.start_ms, x.end_ms, x.port_first, x.port_last) for x in ivs] or [("empty",)]
