"""What the analyst reads, on the real broker: ``stats tail`` and ``stats export`` give what
docs/stats-schema.json promises.

- ``ipanon stats tail`` prints records that validate against docs/stats-schema.json (its
  ``bucket_utc`` made 333 of 333 lines fail ``additionalProperties: false``);
- ``--last N`` is the newest N (it was the last N in partition order);
- ``ipanon stats export`` to JSON lines, CSV and Parquet: the rows are the topic's records,
  typed as the schema says, filtered by operator and time; with a consumer group a second
  export writes only the records that arrived since, and a third writes none; without pyarrow
  the Parquet export fails with one clear line.

The schema check is a small validator of the keywords docs/stats-schema.json uses (no
jsonschema dependency); it refuses a keyword it does not know, so it cannot pass by ignoring one.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import time

import pytest

from agents.kafka_io import count, read_all
from tests.conftest import REPO, wait_for
from tests.e2e.test_operations import produce

pytestmark = pytest.mark.broker

HOUR = 3_600_000
SCHEMA = json.loads((REPO / "docs" / "stats-schema.json").read_text())
_KNOWN = {"$schema", "$id", "title", "description", "$defs", "$ref", "oneOf", "type", "const", "enum", "pattern",
          "minimum", "maximum", "required", "additionalProperties", "properties"}
_TYPES = {"integer": lambda v: isinstance(v, int) and not isinstance(v, bool), "string": lambda v: isinstance(v, str),
          "null": lambda v: v is None, "object": lambda v: isinstance(v, dict)}


def errors(v, s, root=SCHEMA) -> list[str]:
    """Why ``v`` fails schema ``s`` (empty: valid)."""
    unknown = set(s) - _KNOWN
    assert not unknown, f"validator does not know {unknown}"
    if "$ref" in s:
        node = root
        for part in s["$ref"].lstrip("#/").split("/"):
            node = node[part]
        return errors(v, node, root)
    if "oneOf" in s:
        ok = [sub for sub in s["oneOf"] if not errors(v, sub, root)]
        return [] if len(ok) == 1 else [f"matches {len(ok)} of oneOf"]
    out = []
    if "type" in s:
        ts = s["type"] if isinstance(s["type"], list) else [s["type"]]
        if not any(_TYPES[t](v) for t in ts):
            return [f"{v!r} is not {ts}"]
    if "const" in s and v != s["const"]:
        out.append(f"{v!r} != {s['const']!r}")
    if "enum" in s and v not in s["enum"]:
        out.append(f"{v!r} not in {s['enum']}")
    if isinstance(v, str) and "pattern" in s and not re.search(s["pattern"], v):
        out.append(f"{v!r} !~ {s['pattern']}")
    if isinstance(v, int) and not isinstance(v, bool):
        if "minimum" in s and v < s["minimum"]:
            out.append(f"{v} < {s['minimum']}")
        if "maximum" in s and v > s["maximum"]:
            out.append(f"{v} > {s['maximum']}")
    if isinstance(v, dict):
        out += [f"missing {k}" for k in s.get("required", ()) if k not in v]
        props = s.get("properties", {})
        if s.get("additionalProperties") is False:
            out += [f"extra {k}" for k in v if k not in props]
        for k, sub in props.items():
            if k in v:
                out += [f"{k}: {e}" for e in errors(v[k], sub, root)]
    return out


def test_the_validator_catches_what_tail_used_to_print():
    rec = {"v": 1, "id": "0" * 32, "operator": "x", "kind": "nat", "bucket_ms": 0, "bucket_len_ms": 1, "epoch": 0,
           "prefix": "*", "k": 10, "sessions": 0, "subscribers": 10, "records": 1, "octets_in": 0, "octets_out": 0}
    assert errors(rec, SCHEMA) == []
    assert errors({**rec, "bucket_utc": "1970-01-01T00:00:00Z"}, SCHEMA)
    assert errors({**rec, "subscribers": "10"}, SCHEMA)


def cli(*args, env=None, check=True) -> subprocess.CompletedProcess:
    import os

    p = subprocess.run([sys.executable, "-m", "agents.cli", *args], cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, **(env or {})}, timeout=300)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def sessions(prefix: str, n: int, at_s: int, first: int = 0) -> list[dict]:
    return [{"User-Name": f"{prefix}{i}@isp.example", "Acct-Status-Type": "Start", "Acct-Session-Id": f"{prefix}-{i}",
             "NAS-IP-Address": "192.0.2.10", "Framed-IP-Address": f"10.30.{first // 200}.{i % 200 + 1}",
             "Event-Timestamp": at_s + i} for i in range(first, first + n)]


def _types(prop: dict) -> list[str]:
    """A property's JSON types (``const``/``enum`` without ``type``: the constant's type)."""
    t = prop.get("type")
    if t is None:
        c = prop.get("const", (prop.get("enum") or [""])[0])
        t = "integer" if isinstance(c, int) else "string"
    return t if isinstance(t, list) else [t]


def _csv_rows(text: str, schema: dict) -> list[dict]:
    """CSV back to typed records: empty cell = null, integer columns as int (the schema's types)."""
    out = []
    for row in csv.DictReader(io.StringIO(text)):
        d = {}
        for k, v in row.items():
            ts = _types(schema["properties"][k])
            d[k] = None if v == "" and "null" in ts else int(v) if "integer" in ts else v
        out.append(d)
    return out


def test_tail_and_export_give_schema_records_resumable_and_filtered(worker_factory, bootstrap, tmp_path):
    w = worker_factory(operators=("connect2ip", "framsteget")).start()
    t = w.topics
    base = ["--bootstrap", bootstrap, "--topic-prefix", t.prefix]
    now = int(time.time())
    b1 = (now * 1000 // HOUR - 1) * HOUR           # the previous hour's bucket
    b0 = b1 - HOUR
    c0 = sessions("c0-", 6, b0 // 1000 + 3300)     # connect2ip, bucket b0
    c1 = sessions("c1-", 6, b1 // 1000 + 60, first=6)
    f1 = sessions("f1-", 4, b1 // 1000 + 60, first=12)
    produce(bootstrap, t.raw_radius, c0 + c1, tmp_path, operator="connect2ip", name="c.jsonl")
    produce(bootstrap, t.raw_radius, f1, tmp_path, operator="framsteget", name="f.jsonl")
    wait_for(lambda: count(bootstrap, t.stats) >= 16, timeout_s=120, what="16 stats records")
    topic = {json.loads(r.value)["id"]: (r, json.loads(r.value)) for r in read_all(bootstrap, t.stats)}
    assert len(topic) == 16

    # tail: every line is a schema-valid stats record, exactly the topic's records
    lines = cli("stats", "tail", *base).stdout.splitlines()
    tailed = [json.loads(x) for x in lines]
    bad = [(d.get("id"), errors(d, SCHEMA["$defs"]["stats"])) for d in tailed if errors(d, SCHEMA["$defs"]["stats"])]
    assert not bad, f"{len(bad)} of {len(tailed)} tail lines fail docs/stats-schema.json, e.g. {bad[:2]}"
    assert sorted(tailed, key=lambda d: d["id"]) == sorted((d for _r, d in topic.values()), key=lambda d: d["id"])

    # --last: the newest N, i.e. connect2ip's 6 records of the later bucket
    last = [json.loads(x) for x in cli("stats", "tail", *base, "--operator", "connect2ip", "--last", "6").stdout.splitlines()]
    assert [d["bucket_ms"] for d in last] == [b1] * 6
    assert {d["id"] for d in last} == {i for i, (_r, d) in topic.items() if d["operator"] == "connect2ip" and d["bucket_ms"] == b1}
    assert [d["bucket_ms"] for d in (json.loads(x) for x in cli("stats", "tail", *base, "--last", "8").stdout.splitlines())] \
        == [b1] * 8

    # export, JSON lines, with a group: every record, typed as the schema
    out1 = tmp_path / "all.jsonl"
    p = cli("stats", "export", *base, "--format", "jsonl", "-o", str(out1), "--group", "nightly", "--progress")
    rows = [json.loads(x) for x in out1.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(topic)
    assert all(errors(r, SCHEMA["$defs"]["stats"]) == [] for r in rows)
    assert {r["id"]: r for r in rows} == {i: d for i, (_r, d) in topic.items()}
    assert "exported 16 records" in p.stderr and f"{t.prefix}-analyst-nightly committed" in p.stderr
    assert not (tmp_path / "all.jsonl.part").exists()

    # CSV, filtered by operator and time (buckets from b1 on): typed back, equal to the JSON rows
    out2 = tmp_path / "c1.csv"
    from_iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(b1 // 1000))
    cli("stats", "export", *base, "--format", "csv", "-o", str(out2), "--operator", "connect2ip", "--from", from_iso)
    text = out2.read_text()
    assert text.splitlines()[0].split(",") == SCHEMA["$defs"]["stats"]["required"]
    got = _csv_rows(text, SCHEMA["$defs"]["stats"])
    want = [r for r in rows if r["operator"] == "connect2ip" and r["bucket_ms"] >= b1]
    assert len(want) == 6 and sorted(got, key=lambda d: d["id"]) == sorted(want, key=lambda d: d["id"])
    out3 = tmp_path / "c0.jsonl"  # --to is exclusive: only the earlier bucket
    cli("stats", "export", *base, "-o", str(out3), "--to", str(b1))
    assert sorted(json.loads(x)["id"] for x in out3.read_text().splitlines()) == \
        sorted(r["id"] for r in rows if r["bucket_ms"] < b1)

    # Parquet: the same rows, int64 for the schema's integers, string for its strings
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    out4 = tmp_path / "all.parquet"
    cli("stats", "export", *base, "--format", "parquet", "-o", str(out4), "--operator", "framsteget")
    table = pq.read_table(out4)
    props = SCHEMA["$defs"]["stats"]["properties"]
    assert table.column_names == SCHEMA["$defs"]["stats"]["required"]
    for f in table.schema:
        ts = _types(props[f.name])
        assert f.type == (pa.int64() if "integer" in ts else pa.string()), f.name
    assert sorted(table.to_pylist(), key=lambda d: d["id"]) == \
        sorted((r for r in rows if r["operator"] == "framsteget"), key=lambda d: d["id"])

    # resume: the group gets only what arrived since, then nothing
    more = sessions("c2-", 3, b1 // 1000 + 120, first=16)
    produce(bootstrap, t.raw_radius, more, tmp_path, operator="connect2ip", name="more.jsonl")
    wait_for(lambda: count(bootstrap, t.stats) >= 19, timeout_s=120, what="3 more stats records")
    new = {json.loads(r.value)["id"] for r in read_all(bootstrap, t.stats)} - set(topic)
    out5 = tmp_path / "since.jsonl"
    cli("stats", "export", *base, "-o", str(out5), "--group", "nightly")
    assert sorted(json.loads(x)["id"] for x in out5.read_text().splitlines()) == sorted(new) and len(new) == 3
    out6 = tmp_path / "none.jsonl"
    p = cli("stats", "export", *base, "-o", str(out6), "--group", "nightly")
    assert out6.read_text() == "" and "exported 0 records" in p.stderr

    # without pyarrow: one clear line, exit 2, no file
    fake = tmp_path / "nopyarrow"
    (fake / "pyarrow").mkdir(parents=True)
    (fake / "pyarrow" / "__init__.py").write_text("raise ImportError('pyarrow hidden by the test')\n")
    p = cli("stats", "export", *base, "--format", "parquet", "-o", str(tmp_path / "x.parquet"),
            env={"PYTHONPATH": str(fake)}, check=False)
    assert p.returncode == 2 and "needs pyarrow" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "x.parquet").exists()
