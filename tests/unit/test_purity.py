"""The pure core stays pure: nothing under stream/ imports Kafka, Faust, mode or Prometheus,
and nothing reads the wall clock or the environment (time arrives as ``now_ms``)."""

from __future__ import annotations

import ast
from pathlib import Path

STREAM = Path(__file__).resolve().parents[2] / "stream"
FORBIDDEN_MODULES = {"faust", "aiokafka", "kafka", "prometheus_client", "mode"}
# reading the clock or the environment inside the core breaks "time is an argument"
FORBIDDEN_CALLS = {("time", "time"), ("time", "time_ns"), ("time", "monotonic"),
                   ("datetime", "now"), ("datetime", "utcnow"), ("os", "getenv"), ("os", "environ")}


def _py_files():
    files = sorted(STREAM.rglob("*.py"))
    assert files, "stream/ has no modules?"
    return files


def test_stream_imports_no_io_frameworks():
    offenders = []
    for path in _py_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for n in names:
                if n.split(".")[0] in FORBIDDEN_MODULES:
                    offenders.append(f"{path.relative_to(STREAM.parent)}:{node.lineno} imports {n}")
    assert offenders == []


def test_stream_does_not_read_clock_or_environment():
    offenders = []
    for path in _py_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if (node.value.id, node.attr) in FORBIDDEN_CALLS:
                    offenders.append(f"{path.relative_to(STREAM.parent)}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert offenders == []


def test_the_checker_catches_a_forbidden_import(tmp_path):
    # the rule must be able to fail: run the same walk over a module that breaks it
    bad = ast.parse("import faust\nfrom kafka import KafkaProducer\n")
    hits = [n for n in ast.walk(bad) if isinstance(n, (ast.Import, ast.ImportFrom))]
    mods = [(h.names[0].name if isinstance(h, ast.Import) else h.module).split(".")[0] for h in hits]
    assert set(mods) <= FORBIDDEN_MODULES and len(mods) == 2
