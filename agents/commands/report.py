"""``ipanon report compliance|verify`` — the signed compliance report a DPO can file.

``compliance`` gathers the figures for one operator and one period — the retention plan and
each topic's actual configs from the broker, the audit topic, the holds topic, the bindings
topic and the table's changelog (read from the beginning, no consumer group), the key state in
the key directory, optionally the worker's metrics — and hands them to ``stream.compliance``,
which decides every figure and renders the page.  It writes ``report.json``, ``report.html``,
``manifest.json`` (their SHA-256) and ``report.sig`` (Ed25519 over the manifest, by the
operator's report key ``<keys>/<operator>.report.key``, created 0600 on first use; its public
half ``<operator>.report.pub`` is what a DPO or regulator checks with).

``verify`` exits 0 when the directory is exactly what was signed, 1 on any change (naming the
file), 2 when it cannot check (no trusted key).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import stat
import struct
import sys
import time
from pathlib import Path
from typing import Any, Optional

from ..cli import CliError

REPORT_KEY_SUFFIX = ".report.key"
REPORT_PUB_SUFFIX = ".report.pub"
#: an operator name as profiles allow it (stream.config): what may name a key file
OPERATOR_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")

EXAMPLES = """examples:
  ipanon report compliance --operator connect2ip --from 2026-11-01 --to 2026-12-01 --out report-c2ip-2026-11
  ipanon report compliance --operator junet --from now-30d --out /tmp/junet --metrics-url http://127.0.0.1:6066/metrics
  ipanon report verify report-c2ip-2026-11 --key connect2ip.report.pub
"""


def _scrape(url: str) -> str:
    """The worker's /metrics text at ``url`` (``--metrics-url``), or one clear error."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.read().decode("utf-8", "replace")
    except OSError as e:
        raise CliError(f"cannot read the worker's metrics at {url} ({type(e).__name__}); "
                       f"check --metrics-url or leave it out") from None

def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="the signed compliance report for a DPO: write it, verify it",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Write or verify a signed, printable compliance report per operator.",
                       epilog=EXAMPLES)
    rsub = p.add_subparsers(dest="report_action", metavar="ACTION", required=True)
    c = rsub.add_parser("compliance", help="write report.json, report.html and their signature for one operator",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    c.add_argument("--operator", required=True, help="operator profile name (e.g. connect2ip)")
    c.add_argument("--from", dest="from_", required=True,
                   help="period start: 2026-11-01, 2026-11-01T06:00Z, now-30d or Unix ms")
    c.add_argument("--to", default="now", help="period end (exclusive; default now)")
    c.add_argument("--out", type=Path, required=True, help="directory to write the report into (created)")
    c.add_argument("--bootstrap", default=None, help="Kafka bootstrap (default $IPANON_BOOTSTRAP or the local broker)")
    c.add_argument("--prefix", default=None, help="topic prefix (default $IPANON_TOPIC_PREFIX or ipanon)")
    c.add_argument("--app-id", default=None, help="worker app id naming the changelog (default $IPANON_APP_ID or ipanon)")
    c.add_argument("--operators", type=Path, default=None,
                   help="operator profile directory (default $IPANON_OPERATORS or config/operators)")
    c.add_argument("--keys", type=Path, default=None, help="key directory (default $IPANON_KEYS or <data dir>/keys)")
    c.add_argument("--data-dir", type=Path, default=None, help="worker data directory (default $IPANON_DATA_DIR)")
    c.add_argument("--anchor-key", type=Path, default=None,
                   help="the desk's audit anchor public key (default <keys>/audit-anchor.pub)")
    c.add_argument("--metrics-url", default=None,
                   help="the worker's /metrics URL, for its expiry counters, and its canary gauges when "
                        "<prefix>-canary-results holds no measurement for the period (default: not read)")
    c.add_argument("--heartbeat-ms", type=int, default=None, help="worker heartbeat (default $IPANON_HEARTBEAT_MS or 60000)")
    c.add_argument("--sweeper-period-ms", type=int, default=None,
                   help="sweeper period (default $IPANON_SWEEPER_PERIOD_MS or 1000)")
    c.add_argument("--ingest-lag-ms", type=int, default=None,
                   help="ingest lag the worker plans with (default $IPANON_INGEST_LAG_MS or 300000)")
    c.set_defaults(func=run_compliance)
    v = rsub.add_parser("verify", help="check a report directory against its signature; say who signed it and when",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="example:\n  ipanon report verify report-c2ip-2026-11 --key keys/connect2ip.report.pub")
    v.add_argument("dir", type=Path, help="the report directory")
    v.add_argument("--key", type=Path, default=None,
                   help="the operator's report public key (default <keys>/<operator>.report.pub)")
    v.set_defaults(func=run_verify)


# -- keys -----------------------------------------------------------------------------------


def _keys_dir(explicit: Optional[Path]) -> Path:
    if explicit is not None:
        return explicit
    if os.environ.get("IPANON_KEYS"):
        return Path(os.environ["IPANON_KEYS"])
    data = os.environ.get("IPANON_DATA_DIR") or str(Path.home() / ".local" / "state" / "ipanon" / "worker")
    return Path(data) / "keys"


def load_report_key(keys_dir: Path, operator: str):
    """The operator's Ed25519 report key (``<keys>/<operator>.report.key``, 64 hex characters,
    mode 0600), created on first use like the audit anchor key; the public half goes to
    ``<operator>.report.pub`` (``ed25519:<hex>``)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from stream.access import public_key_text
    from stream.errors import ConfigError

    from ..keystore import require_private

    keys_dir = Path(keys_dir)
    path = keys_dir / f"{operator}{REPORT_KEY_SUFFIX}"
    if not path.exists():
        keys_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
    require_private(path, "report key")
    try:
        key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(path.read_text().strip()))
    except ValueError:
        raise ConfigError(f"{path}: the report key must hold 64 hex characters") from None
    pub = keys_dir / f"{operator}{REPORT_PUB_SUFFIX}"
    text = public_key_text(key.public_key()) + "\n"
    if not pub.exists() or pub.read_text() != text:
        pub.write_text(text)
    return key


# -- gathering ------------------------------------------------------------------------------


def _state_header(path: Path, skip: int) -> tuple[Optional[int], Optional[int], bytes]:
    """(oldest live epoch, mtime ms, header bytes) of a ratchet state file, reading only its
    header (version byte + oldest epoch): the report never loads key material."""
    try:
        data = path.read_bytes()[: skip + 9]
        mtime = int(path.stat().st_mtime * 1000)
    except FileNotFoundError:
        return None, None, b""
    if len(data) < skip + 9:
        raise CliError(f"{path}: key state is truncated")
    _, oldest = struct.unpack_from(">BQ", data, skip)
    return oldest, mtime, data[:skip]


#: a key is reported past due once its destroying timer had this much time after the due instant:
#: two of its periods and 10 s for a loaded machine (the sweeper: IPANON_SWEEPER_PERIOD_MS; the
#: statistics key timer: agents.stats_agent.KEYS_TICK_S)
OVERDUE_MARGIN_MS = 10_000


def _epochs(settings, op, from_ms: int, to_ms: int, now_ms: int) -> list[dict]:
    from stream.compliance import epoch_figures

    from ..app import vault_grace_ms
    from ..runtime import keys_dir
    from ..stats_agent import KEYS_TICK_S

    kd = keys_dir(settings)
    out = []
    oldest, mtime, head = _state_header(kd / f"{op.name}.mapping.ratchet", 16)
    origin, period = struct.unpack(">QQ", head) if head else (0, 0)
    out.append(epoch_figures(purpose="lawful_access (mapping table values)", oldest_live_epoch=oldest,
                             origin_ms=origin, period_ms=period, due_after_ms=vault_grace_ms(settings),
                             state_written_ms=mtime, from_ms=from_ms, to_ms=to_ms, now_ms=now_ms,
                             slack_ms=2 * settings.sweeper_period_ms + OVERDUE_MARGIN_MS))
    late = os.environ.get("IPANON_STATS_LATE_MS")
    late_ms = int(late) if late and late.isdigit() else settings.ingest_lag_ms
    oldest, mtime, _ = _state_header(kd / f"{op.name}.statistics.ratchet", 0)
    out.append(epoch_figures(purpose="statistics (pseudonym keys)", oldest_live_epoch=oldest, origin_ms=0,
                             period_ms=op.key_epoch_ms, due_after_ms=late_ms, state_written_ms=mtime,
                             from_ms=from_ms, to_ms=to_ms, now_ms=now_ms,
                             slack_ms=int(2 * KEYS_TICK_S * 1000) + OVERDUE_MARGIN_MS))
    return out


def _worker_metrics(url: Optional[str]) -> Optional[dict]:
    if not url:
        return None
    from stream.compliance import iso

    text = _scrape(url)
    vals: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, _, value = line.rpartition(" ")
        try:
            vals[name] = vals.get(name, 0.0) + float(value)
        except ValueError:
            continue
    def get(n):
        return vals.get(n)
    started = get("ipanon_worker_start_timestamp_seconds")
    swept = get("ipanon_sweeper_last_run_timestamp_seconds")
    return {"intervals_expired_total": int(get("ipanon_intervals_expired_total") or 0),
            "tombstones_total": int(get("ipanon_tombstones_total") or 0),
            "started": iso(int(started * 1000)) if started else None,
            "sweeper_last_run": iso(int(swept * 1000)) if swept else None,
            "epochs_shredded_total": {m.group(1): int(v) for k, v in sorted(vals.items())
                                      if (m := re.fullmatch(r'ipanon_epochs_shredded_total\{purpose="([^"]+)"\}', k))}}


#: what the canary figures are, said in the report (they come from the worker's gauges)
CANARY_SOURCE = ("Measured by the worker's erasure canaries (docs/operations.md): per store, the worst time from a "
                 "canary mapping's end until it was observed gone, over the worker's recent canaries (the last 64 "
                 "finished and every pending one) when the report was made, read from --metrics-url.")


def _canary_results(bootstrap: str, topic: str, operator: str, from_ms: int, to_ms: int) -> dict:
    """The canary section from the measurements on ``<prefix>-canary-results`` in the period
    (``stream.compliance.canary_results_section``); no measurement there: ``measured`` False."""
    from stream import compliance as C

    from ..kafka_io import read_all

    results, bad = [], 0
    for r in read_all(bootstrap, topic):
        x = C.parse_canary_result(r.value)
        if x is None:
            bad += 1  # counted and said in the report, never silently dropped
        else:
            results.append(x)
    return C.canary_results_section(results, operator=operator, from_ms=from_ms, to_ms=to_ms, topic=topic,
                                    unreadable=bad)


def _canaries(url: Optional[str], operator: str) -> dict:
    """The canary section from the worker's ``ipanon_canary_*`` gauges (no --metrics-url, or no
    canary figure for the operator: the section says there are no measurements).  The fallback
    when the results topic holds no measurement for the period."""
    from stream import canary as K
    from stream import compliance as C

    if not url:
        return C.canary_section()
    text = _scrape(url)
    names = {"ipanon_canary_persistence_seconds": "measured_ms", "ipanon_canary_bound_seconds": "bound_ms",
             "ipanon_canary_promise_seconds": "promise_ms"}
    figs: dict[str, dict] = {}
    for m in re.finditer(r'^(ipanon_canary_\w+)\{operator="([^"]+)",store="([^"]+)"\} (\S+)$', text, re.M):
        if m[1] in names and m[2] == operator:
            try:
                figs.setdefault(m[3], {"store": m[3]})[names[m[1]]] = int(round(float(m[4]) * 1000))
            except ValueError:
                continue
    rows = K.report_rows(figs[s] for s in K.STORES if s in figs)
    sec = C.canary_section(rows)
    if rows:
        sec["statement"] = CANARY_SOURCE
    return sec


def _location(admin, settings, topics: list[str]) -> dict:
    from kafka.admin import ConfigResource, ConfigResourceType

    from ..runtime import keys_dir

    cluster = admin.describe_cluster()
    brokers = sorted(cluster["brokers"], key=lambda b: b["node_id"] if "node_id" in b else b["broker_id"])
    dirs: dict[str, str] = {}
    try:
        ids = [str(b.get("node_id", b.get("broker_id"))) for b in brokers]
        res = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, i) for i in ids], config_filter="all")
        for bid, cfg in res.get("broker", {}).items():
            dirs[str(bid)] = (cfg.get("log.dirs", {}).get("value") or cfg.get("log.dir", {}).get("value") or "")
    except Exception:  # noqa: BLE001 - a broker that hides its configs: the directories are left out
        pass
    desc = admin.describe_topics(topics)
    def replicas(part: dict) -> int:  # kafka-python 3 says replica_nodes, older versions replicas
        return len(part.get("replica_nodes", part.get("replicas")) or ())

    rfs = {t.get("name", t.get("topic")): min(replicas(p) for p in t["partitions"]) for t in desc if t.get("partitions")}
    return {"bootstrap": settings.bootstrap,
            "brokers": [{"id": b.get("node_id", b.get("broker_id")), "host": b["host"], "port": b["port"],
                         "log_dirs": dirs.get(str(b.get("node_id", b.get("broker_id"))), "")} for b in brokers],
            "replication_factor": min(rfs.values()) if rfs else None,
            "topics": [{"name": n, "replication_factor": rfs[n]} for n in sorted(rfs)],
            "data_dir": str(Path(settings.data_dir).resolve()), "keys_dir": str(keys_dir(settings).resolve())}


def _audit(bootstrap: str, topic: str, anchor: Path, now_ms: int) -> tuple[dict, list[dict]]:
    from stream.audit import AuditError, anchor_key_id, parse_record, verify_anchored
    from stream.compliance import iso

    from ..query_agent import read_anchor_public
    from .audit import read_topic

    begin: dict = {}
    rows = read_topic(bootstrap, topic, begin=begin)
    recs = []
    for r in rows:
        try:
            recs.append(parse_record(r[3]))
        except AuditError:
            pass  # verify_anchored below names it
    base = {"topic": topic, "records": len(rows)}
    if not anchor.exists():
        return {**base, "ok": False, "head": None, "last_checkpoint_seq": None, "last_checkpoint": None,
                "anchor_key_id": None, "problem": "no-anchor-key",
                "detail": f"{anchor} not found: the trail's signed checkpoints could not be checked"}, recs
    key = read_anchor_public(anchor)
    # one checkpoint period of the default heartbeat and more: the report is a record of what
    # the trail held, a stale anchor is reported by `ipanon audit verify`'s own age check
    rep = verify_anchored([r[3] for r in rows], offsets=[r[1] for r in rows], first_offset=begin.get(0, 0),
                          public_key=key, now_ms=now_ms, max_unanchored_ms=10_000)
    return {**base, "ok": rep.ok, "head": rep.head, "last_checkpoint_seq": rep.last_checkpoint_seq,
            "last_checkpoint": iso(rep.last_checkpoint_ms), "anchor_key_id": anchor_key_id(key),
            "problem": rep.problem, "detail": rep.detail}, recs


def gather(args: argparse.Namespace, now_ms: int) -> dict:
    """Read everything the report needs and build it (``stream.compliance.build_report``)."""
    from stream import compliance as C
    from stream.config import load_operators
    from stream.intervals import operator_of
    from stream.policy import rows_with_bounds, topic_bound_ms

    from ..broker import REPO_ROOT
    from ..kafka_admin import admin_client, topic_configs
    from ..kafka_io import HEARTBEAT_KEY, read_all
    from ..settings import Settings
    from .topics import build_plan

    ops_dir = args.operators or Path(os.environ.get("IPANON_OPERATORS") or REPO_ROOT / "config" / "operators")
    settings = Settings.from_env(bootstrap=args.bootstrap, operators_dir=ops_dir, topic_prefix=args.prefix,
                                 app_id=args.app_id, keys_dir=args.keys, data_dir=args.data_dir,
                                 heartbeat_ms=args.heartbeat_ms, sweeper_period_ms=args.sweeper_period_ms,
                                 ingest_lag_ms=args.ingest_lag_ms)
    operators = load_operators(ops_dir)
    op = operators.get(args.operator)
    if op is None:
        raise CliError(f"no operator profile {args.operator!r} in {ops_dir} (have: {', '.join(sorted(operators))})")
    from_ms = C.parse_instant(args.from_, now_ms=now_ms, where="--from")
    to_ms = C.parse_instant(args.to, now_ms=now_ms, where="--to")
    if to_ms <= from_ms:
        raise CliError(f"--to ({C.iso(to_ms)}) must be later than --from ({C.iso(from_ms)})")
    bootstrap = settings.bootstrap
    from .audit import check_connection

    check_connection(bootstrap)
    plan_args = argparse.Namespace(operators=ops_dir, prefix=settings.topic_prefix, app_id=settings.app_id,
                                   partitions=None, replication_factor=None, bootstrap=bootstrap,
                                   heartbeat_ms=settings.heartbeat_ms, sweeper_period_ms=settings.sweeper_period_ms,
                                   ingest_lag_ms=settings.ingest_lag_ms, broker_settings=None)
    admin = admin_client(bootstrap)
    try:
        plan, source = build_plan(plan_args, admin)
        existing = set(admin.list_topics())
        names = [t.name for t in plan.topics if t.name in existing]
        actual = topic_configs(admin, names)
        bounds = {n: topic_bound_ms(cfg, plan.broker, plan.params.heartbeat_ms) for n, cfg in actual.items()}
        stores = C.store_rows(plan, rows_with_bounds(plan, bounds), op.name)
        missing = sorted({r["store"] for r in stores if r["kind"] == "topic"} - set(names))
        for r in stores:
            if r["store"] in missing:  # a topic the plan needs but the broker lacks: planned bound, said so
                r["store"] += " (not on the broker: planned bound)"
        mine = sorted({r["store"].split(" ")[0] for r in stores if r["kind"] == "topic"} & set(names))
        location = _location(admin, settings, mine)
    finally:
        admin.close()

    prefix, app_id = settings.topic_prefix, settings.app_id
    anchor = args.anchor_key or (Path(settings.keys_dir or Path(settings.data_dir) / "keys") / "audit-anchor.pub")
    audit, recs = _audit(bootstrap, f"{prefix}-audit", anchor, now_ms)

    hold_ops: dict[str, str] = {}
    for r in read_all(bootstrap, f"{prefix}-holds", heartbeats=True):
        if r.key and r.key != HEARTBEAT_KEY and r.value:
            try:
                hold_ops[r.key.decode()] = json.loads(r.value)["operator"]
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                continue

    scanner = C.IdentityScanner(op.identity_fields)
    tombstones: list[int] = []
    changelog = f"{app_id}-mappings-changelog"
    first_ts = None
    rows = read_all(bootstrap, changelog, heartbeats=True)
    for r in rows:
        if r.key is None or r.key == HEARTBEAT_KEY or operator_of(r.key) != op.name:
            continue
        first_ts = r.timestamp if first_ts is None else min(first_ts, r.timestamp)
        if r.value is None:
            tombstones.append(r.timestamp)
        scanner.scan_sealed(changelog, r.partition, r.offset, r.key, r.value,
                            what="the mapping table's changelog: keys (operator + keyed hash) and sealed values")
    for r in read_all(bootstrap, f"{prefix}-bindings"):
        scanner.scan_binding(f"{prefix}-bindings", r.partition, r.offset, r.value, operator=op.name,
                             what="canonical bindings (address ↔ subscriber account id), every field")

    canaries = _canary_results(bootstrap, f"{prefix}-canary-results", op.name, from_ms, to_ms)
    if not canaries["measured"]:  # nothing recorded for the period (an older worker): the current gauges
        canaries = _canaries(args.metrics_url, op.name)
    expiries = C.expiry_figures(tombstones, from_ms=from_ms, to_ms=to_ms, changelog_records=len(rows),
                                changelog_first_ms=first_ts, worker=_worker_metrics(args.metrics_url))
    p = plan.params
    return C.build_report(
        op=op, from_ms=from_ms, to_ms=to_ms, generated_ms=now_ms, stores=stores, bounds_source=source,
        plan_params={"heartbeat_ms": p.heartbeat_ms, "sweeper_period_ms": p.sweeper_period_ms,
                     "schedule_bucket_ms": p.schedule_bucket_ms, "ingest_lag_ms": p.ingest_lag_ms,
                     "ttl_ms": plan.retention[op.name].ttl_ms},
        epochs=_epochs(settings, op, from_ms, to_ms, now_ms), expiries=expiries,
        holds=C.hold_figures(recs, hold_ops, operator=op.name, from_ms=from_ms, to_ms=to_ms),
        requests=C.request_figures(recs, from_ms=from_ms, to_ms=to_ms), desk_operators=sorted(operators),
        audit=audit, location=location, separation=scanner.result(), canaries=canaries)


def write_report(out: Path, report: dict, key, now_ms: int) -> dict:
    """Write the four files; returns the manifest."""
    from stream import compliance as C

    body = (json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    page = C.render_html(report).encode("utf-8")
    m = C.manifest({"report.json": body, "report.html": page}, operator=report["operator"]["name"],
                   signed_ms=now_ms, public_key=key.public_key())
    mbytes, sig = C.sign(m, key)
    out.mkdir(parents=True, exist_ok=True)
    st = out.stat()
    if st.st_mode & stat.S_IWOTH:
        # whoever else may write it can plant links before and swap files after
        raise CliError(f"{out}: the report directory is writable by others (mode {stat.S_IMODE(st.st_mode):o}); "
                       f"use a directory of your own")
    for name, data in (("report.json", body), ("report.html", page), (C.MANIFEST_FILE, mbytes),
                       (C.SIGNATURE_FILE, sig)):
        path = out / name
        try:  # never through a planted symbolic link (it could point at any file of the operator's)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as e:
            what = "a symbolic link" if path.is_symlink() else "not a regular file we can write"
            raise CliError(f"{path}: {what} ({e.strerror}); refusing to write the report there") from None
        with os.fdopen(fd, "wb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise CliError(f"{path}: not a regular file; refusing to write the report there")
            f.write(data)
    return m


def run_compliance(args: argparse.Namespace) -> int:
    now_ms = int(time.time() * 1000)
    report = gather(args, now_ms)
    kd = _keys_dir(args.keys)
    key = load_report_key(kd, report["operator"]["name"])
    m = write_report(args.out, report, key, now_ms)
    v = report["verdict"]
    print(f"compliance report for {report['operator']['display_name']} {report['period']['from']} .. "
          f"{report['period']['to']} written to {args.out}: {'every promise kept' if v['kept'] else 'NOT KEPT'}; "
          f"signed with report key {m['key_id']} ({kd / (report['operator']['name'] + REPORT_PUB_SUFFIX)})")
    for p in v["problems"]:
        print(f"  problem: {p}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from stream import compliance as C
    from stream.errors import ConfigError

    from ..query_agent import read_anchor_public

    d = args.dir
    if not d.is_dir():
        raise CliError(f"{d}: not a directory")

    def read(name: str) -> Optional[bytes]:
        try:
            return (d / name).read_bytes()
        except FileNotFoundError:
            return None

    mbytes = read(C.MANIFEST_FILE)
    keyfile = args.key
    if keyfile is None:
        try:
            op = json.loads(mbytes or b"{}").get("operator")
        except ValueError:
            op = None
        if not isinstance(op, str) or not op:
            print(f"report {d}: ALTERED or unsigned: {C.MANIFEST_FILE} is missing or unreadable", file=sys.stderr)
            return 1
        if not OPERATOR_NAME.fullmatch(op):
            # the directory must never choose the trusted key: a name like "/tmp/r/x" or
            # "../r/x" would point at a public key shipped inside the forged report itself
            print(f"report {d}: ALTERED — {C.MANIFEST_FILE} names no valid operator", file=sys.stderr)
            return 1
        keyfile = _keys_dir(None) / f"{op}{REPORT_PUB_SUFFIX}"
        if not keyfile.exists():
            raise CliError(f"no trusted report key for {op!r}: {keyfile} not found; pass --key <operator>.report.pub "
                           f"(the public key the operator gave you)")
    try:
        trusted = read_anchor_public(keyfile)  # the same ed25519:<hex> file format
    except ConfigError as e:
        raise CliError(str(e)) from None
    try:
        v = C.verify_files({n: read(n) for n in C.REPORT_FILES}, mbytes, read(C.SIGNATURE_FILE), trusted)
    except C.ReportError as e:
        print(f"report {d}: ALTERED — {e}", file=sys.stderr)
        return 1
    # "exactly what was signed": a file added next to the signed ones is a change too
    extra = sorted(p.name for p in d.iterdir() if p.name not in (*C.REPORT_FILES, C.MANIFEST_FILE, C.SIGNATURE_FILE))
    if extra:
        print(f"report {d}: ALTERED — not part of the signed report: {', '.join(extra)}", file=sys.stderr)
        return 1
    print(f"report {d}: intact; signed by {v.operator}'s report key {v.key_id} at {C.iso(v.signed_ms)}")
    for name, digest in sorted(v.files.items()):
        print(f"  {name}  sha256 {digest}")
    return 0
