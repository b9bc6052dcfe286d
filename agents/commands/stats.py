"""``ipanon stats tail|export`` — statistics records for analysts.

``tail`` prints the records exactly as the topic holds them (valid against
``docs/stats-schema.json``); ``export`` writes JSON lines, CSV or Parquet, resumable with a
consumer group, filtered by time and operator, typed as in the schema (docs/statistics.md).
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import os
import sys
import time
from typing import Any, Optional

#: column types of each record kind, in the schema's field order (a test checks them against
#: docs/stats-schema.json): "int" / "str", nullable or not
_STATS_TYPES = {
    "v": ("int", False), "id": ("str", False), "kind": ("str", False), "action": ("str", False),
    "operator": ("str", False), "bucket_ms": ("int", False), "bucket_len_ms": ("int", False),
    "epoch": ("int", False), "subscriber": ("str", True), "ip": ("str", True), "prefixlen": ("int", False),
    "inside": ("str", True), "counters": ("str", False), "octets_in": ("int", True), "octets_out": ("int", True),
    "session_time_s": ("int", True), "nat_block_size": ("int", True),
}
_AGG_TYPES = {
    "v": ("int", False), "id": ("str", False), "operator": ("str", False), "kind": ("str", False),
    "bucket_ms": ("int", False), "bucket_len_ms": ("int", False), "epoch": ("int", False),
    "prefix": ("str", False), "k": ("int", False), "sessions": ("int", False), "subscribers": ("int", False),
    "records": ("int", False), "octets_in": ("int", False), "octets_out": ("int", False),
}
FORMATS = ("jsonl", "csv", "parquet")
PARQUET_ROWS = 50_000          # rows per Parquet row group (bounded memory)
PROGRESS_S = 2.0


def columns(aggregates: bool) -> dict[str, tuple[str, bool]]:
    """The export's columns: the schema's fields in order, with their types."""
    from stream.aggregate import FIELDS as AGG_FIELDS
    from stream.stats import FIELDS

    types = _AGG_TYPES if aggregates else _STATS_TYPES
    fields = AGG_FIELDS if aggregates else FIELDS
    # every field the worker emits has a type here: a new field fails loudly, not as a string
    return {f: types[f] for f in fields}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stats", help="read pseudonymised statistics and k-anonymous aggregates",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read the statistics topics (schema: docs/stats-schema.json, docs/statistics.md).",
        epilog="example:\n  ipanon stats tail --operator junet\n  ipanon stats tail --aggregates --follow\n"
               "  ipanon stats export --format parquet --group daily -o stats.parquet",
    )
    ssub = p.add_subparsers(dest="stats_action", metavar="ACTION", required=True)
    t = ssub.add_parser("tail", help="print records as JSON lines (one per record, as on the topic)",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="example:\n  ipanon stats tail --aggregates --last 20")
    t.add_argument("--aggregates", action="store_true", help="read <prefix>-aggregates instead of <prefix>-stats")
    t.add_argument("--operator", "-o", help="only this operator's records")
    t.add_argument("--last", type=int, default=None,
                   help="only the newest N records (after filtering): latest buckets, then latest written")
    t.add_argument("--follow", "-f", action="store_true", help="keep printing new records until interrupted")
    t.add_argument("--bootstrap", help="Kafka bootstrap host:port (default: the running local broker)")
    t.add_argument("--topic-prefix", help="topic prefix (default ipanon)")
    t.set_defaults(func=run_tail)

    e = ssub.add_parser(
        "export", help="write records to JSON lines, CSV or Parquet (resumable with --group)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export every record up to the topic's end at start-up.  With --group the consumer\n"
                    "group <prefix>-analyst-<GROUP> remembers where the last export ended, so the next\n"
                    "run writes only newer records; offsets are committed only after the file is complete.",
        epilog="example:\n  ipanon stats export --format csv -o stats.csv --operator junet --from 2026-12-01\n"
               "  ipanon stats export --aggregates --format parquet --group nightly -o aggs-$(date +%F).parquet")
    e.add_argument("--aggregates", action="store_true", help="export <prefix>-aggregates instead of <prefix>-stats")
    e.add_argument("--format", choices=FORMATS, default="jsonl", help="output format (default jsonl)")
    e.add_argument("--output", "-o", required=True, help="output file, or - for stdout (jsonl and csv only)")
    e.add_argument("--group", "-g", help="resume from (and commit to) consumer group <prefix>-analyst-GROUP")
    e.add_argument("--operator", action="append", help="only this operator's records (repeatable)")
    e.add_argument("--from", dest="from_", help="only buckets starting at or after this time "
                   "(ISO 8601 UTC, e.g. 2026-12-01 or 2026-12-01T06:00Z, or Unix ms)")
    e.add_argument("--to", help="only buckets starting before this time (same forms)")
    e.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress on stderr every 2 s (default: when stderr is a terminal)")
    e.add_argument("--bootstrap", help="Kafka bootstrap host:port (default: the running local broker)")
    e.add_argument("--topic-prefix", help="topic prefix (default ipanon)")
    e.set_defaults(func=run_export)


# -- tail ------------------------------------------------------------------------------------


def decode(value: bytes) -> dict:
    """One record as printed: exactly the record on the topic (``bucket_ms`` is Unix ms, UTC)."""
    return json.loads(value)


def _emit(recs, operator):
    out = []
    for r in recs:
        if r.value is None:
            continue
        try:
            d = decode(r.value)
        except ValueError:
            continue
        if not isinstance(d, dict) or (operator and d.get("operator") != operator):
            continue
        out.append((r, d))
    return out


def newest(pairs: list[tuple[Any, dict]], n: int) -> list[dict]:
    """The newest ``n`` records, oldest first: ordered by bucket, then Kafka timestamp, then
    offset (a partition's offsets are its write order; partitions have no order between them,
    so reading them one after the other, as ``--last`` did, is not "newest")."""
    if n <= 0:
        return []
    key = lambda p: (p[1].get("bucket_ms") if isinstance(p[1].get("bucket_ms"), int) else -1,  # noqa: E731
                     p[0].timestamp if p[0].timestamp is not None else -1, p[0].offset, p[0].partition)
    return [d for _r, d in sorted(pairs, key=key)[-n:]]


def run_tail(args: argparse.Namespace) -> int:
    from kafka import TopicPartition
    from kafka.errors import KafkaError

    from ..cli import CliError
    from ..kafka_clients import Clients
    from ..kafka_io import read_all
    from ..settings import Settings
    from ..topics import Topics

    s = Settings.from_env(bootstrap=args.bootstrap, topic_prefix=args.topic_prefix)
    names = Topics(s.topic_prefix)
    topic = names.aggregates if args.aggregates else names.stats
    try:
        pairs = _emit(read_all(s.bootstrap, topic), args.operator)
        recs = newest(pairs, args.last) if args.last is not None else [d for _r, d in pairs]
        for d in recs:
            print(json.dumps(d, separators=(",", ":")))
        sys.stdout.flush()
        if not args.follow:
            return 0
        c = Clients.of(s).consumer(client_id="ipanon-stats-tail")
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        c.assign(tps)
        c.seek_to_end(*tps)
        try:
            while True:
                for _tp, batch in c.poll(timeout_ms=1000).items():
                    for _r, d in _emit(batch, args.operator):
                        print(json.dumps(d, separators=(",", ":")), flush=True)
        finally:
            c.close()
    except KafkaError as e:
        raise CliError(f"cannot read {topic} at {s.bootstrap} ({type(e).__name__}); is the broker running?") from None


# -- export ----------------------------------------------------------------------------------


def parse_time(text: Optional[str], what: str) -> Optional[int]:
    """Unix ms from ``--from``/``--to``: Unix ms, or ISO 8601 (a date, or a time; UTC unless an
    offset is given)."""
    from ..cli import CliError

    if text is None:
        return None
    t = text.strip()
    if t.isdigit():
        return int(t)
    try:
        d = _dt.datetime.fromisoformat(t[:-1] + "+00:00" if t.endswith(("Z", "z")) else t)
    except ValueError:
        raise CliError(f"{what} {text!r}: expected ISO 8601 (2026-12-01, 2026-12-01T06:00Z) or Unix ms") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    return int(d.timestamp() * 1000)


def typed(d: dict, cols: dict[str, tuple[str, bool]]) -> Optional[dict]:
    """``d`` with exactly the export's columns (absent → None, e.g. a field older records lack),
    or None if a value does not have the schema's type."""
    out = {}
    for name, (kind, _nullable) in cols.items():
        v = d.get(name)
        if v is not None:
            if kind == "int" and (not isinstance(v, int) or isinstance(v, bool)):
                return None
            if kind == "str" and not isinstance(v, str):
                return None
        out[name] = v
    return out


class _Writer:
    """One output file: written to ``<path>.part`` and renamed when complete (so a crashed run
    leaves no half file under the real name, and offsets are committed only after the rename)."""

    def __init__(self, fmt: str, path: str, cols: dict[str, tuple[str, bool]]) -> None:
        from ..cli import CliError

        self.fmt, self.path, self.cols = fmt, path, cols
        self.rows = 0
        self._buf: list[dict] = []
        self._pq: Any = None
        if fmt == "parquet":
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ImportError:
                raise CliError("Parquet export needs pyarrow, which is not installed: "
                               "pip install 'ipanon[parquet]' (or use --format jsonl|csv)") from None
            if path == "-":
                raise CliError("Parquet cannot be written to stdout: give --output FILE")
            self._pa, self._pqmod = pa, pq
            self.schema = pa.schema([pa.field(n, pa.int64() if k == "int" else pa.string(), nullable=nl)
                                     for n, (k, nl) in cols.items()])
        self._tmp = None if path == "-" else f"{path}.part"
        if self._tmp is None:
            self.f: Any = sys.stdout
        elif fmt != "parquet":
            self.f = open(self._tmp, "w", newline="", encoding="utf-8")
        if fmt == "csv":
            self._csv = csv.writer(self.f, lineterminator="\n")
            self._csv.writerow(list(cols))

    def write(self, row: dict) -> None:
        self.rows += 1
        if self.fmt == "jsonl":
            self.f.write(json.dumps(row, separators=(",", ":")) + "\n")
        elif self.fmt == "csv":
            self._csv.writerow(["" if row[c] is None else row[c] for c in self.cols])
        else:
            self._buf.append(row)
            if len(self._buf) >= PARQUET_ROWS:
                self._flush_parquet()

    def _flush_parquet(self) -> None:
        if self._pq is None:
            self._pq = self._pqmod.ParquetWriter(self._tmp, self.schema)
        if self._buf:
            cols = {c: [r[c] for r in self._buf] for c in self.cols}
            self._pq.write_table(self._pa.table(cols, schema=self.schema))
            self._buf = []

    def close(self) -> None:
        """Complete the file (fsync + rename); nothing is committed before this returns."""
        if self.fmt == "parquet":
            self._flush_parquet()  # also creates an empty file with the schema when no rows
            self._pq.close()
        elif self._tmp is not None:
            self.f.flush()
            os.fsync(self.f.fileno())
            self.f.close()
        else:
            self.f.flush()
        if self._tmp is not None:
            os.replace(self._tmp, self.path)

    def abort(self) -> None:
        if self._tmp is None:
            return
        try:
            if self.fmt == "parquet" and self._pq is not None:
                self._pq.close()
            elif self.fmt != "parquet":
                self.f.close()
            os.unlink(self._tmp)
        except OSError:
            pass


def analyst_group(prefix: str, name: str) -> str:
    """The analyst's consumer groups are ``<prefix>-analyst*`` (the ACL grants no other)."""
    base = f"{prefix}-analyst"
    return name if name.startswith(base) else f"{base}-{name}"


def run_export(args: argparse.Namespace) -> int:
    from kafka import TopicPartition
    from kafka.errors import KafkaError
    from kafka.structs import OffsetAndMetadata

    from ..cli import CliError
    from ..kafka_clients import Clients
    from ..settings import Settings
    from ..topics import Topics

    if args.output == "-" and args.format == "parquet":
        raise CliError("Parquet cannot be written to stdout: give --output FILE")
    t_from, t_to = parse_time(args.from_, "--from"), parse_time(args.to, "--to")
    if t_from is not None and t_to is not None and t_to <= t_from:
        raise CliError("--to must be later than --from")
    ops = set(args.operator or ())
    s = Settings.from_env(bootstrap=args.bootstrap, topic_prefix=args.topic_prefix)
    topic = Topics(s.topic_prefix).aggregates if args.aggregates else Topics(s.topic_prefix).stats
    cols = columns(args.aggregates)
    group = analyst_group(s.topic_prefix, args.group) if args.group else None
    show = sys.stderr.isatty() if args.progress is None else args.progress
    writer = _Writer(args.format, args.output, cols)  # pyarrow missing: clear error before any read
    n = {"read": 0, "filtered": 0, "invalid": 0}
    try:
        c = Clients.of(s).consumer(client_id="ipanon-stats-export", group_id=group, auto_offset_reset="earliest")
        try:
            parts = c.partitions_for_topic(topic)
            if not parts:
                raise CliError(f"{topic} does not exist at {s.bootstrap} (or this identity may not read it)")
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            c.assign(tps)
            ends = c.end_offsets(tps)
            starts = {}
            for tp in tps:
                off = c.committed(tp) if group else None
                if off is None:
                    c.seek_to_beginning(tp)
                    off = c.position(tp)
                else:
                    c.seek(tp, off)
                starts[tp] = off
            total = sum(max(0, ends[tp] - starts[tp]) for tp in tps)
            remaining = {tp for tp in tps if starts[tp] < ends[tp]}
            last_note = time.monotonic()
            while remaining:
                batch = c.poll(timeout_ms=10_000)
                if not batch:
                    raise CliError(f"no records from {topic} for 10 s with {len(remaining)} partitions unread; "
                                   "nothing was committed")
                for tp, recs in batch.items():
                    for r in recs:
                        if tp not in remaining or r.offset >= ends[tp]:
                            continue  # past the end taken at start: the next export's
                        n["read"] += 1
                        if r.value is None:
                            continue  # a tombstone: nothing to export
                        try:
                            d = json.loads(r.value)
                        except ValueError:
                            n["invalid"] += 1
                            continue
                        if not isinstance(d, dict):
                            n["invalid"] += 1
                            continue
                        b = d.get("bucket_ms")
                        if (ops and d.get("operator") not in ops) or (t_from is not None and (not isinstance(b, int) or b < t_from)) \
                                or (t_to is not None and (not isinstance(b, int) or b >= t_to)):
                            n["filtered"] += 1
                            continue
                        row = typed(d, cols)
                        if row is None:
                            n["invalid"] += 1
                            continue
                        writer.write(row)
                    if c.position(tp) >= ends[tp]:
                        remaining.discard(tp)
                if show and time.monotonic() - last_note >= PROGRESS_S:
                    last_note = time.monotonic()
                    pct = 100.0 * n["read"] / total if total else 100.0
                    print(f"exporting {topic}: {n['read']}/{total} records read ({pct:.0f}%), "
                          f"{writer.rows} written", file=sys.stderr, flush=True)
            writer.close()
            if group:
                c.commit({tp: OffsetAndMetadata(ends[tp], "", -1) for tp in tps})
        finally:
            c.close()
    except KafkaError as e:
        writer.abort()
        raise CliError(f"cannot read {topic} at {s.bootstrap} ({type(e).__name__}); is the broker running? "
                       "Nothing was committed.") from None
    except BaseException:
        writer.abort()
        raise
    where = "stdout" if args.output == "-" else args.output
    print(f"exported {writer.rows} records from {topic} to {where} ({args.format}); "
          f"{n['filtered']} filtered out, {n['invalid']} not of the schema's types (skipped)"
          + (f"; group {group} committed" if group else ""), file=sys.stderr)
    return 0
