"""The worker's components are wired through explicit ports, not patched methods: the sweeper tells
its listeners about each pass instead of having its method replaced."""

from __future__ import annotations

import asyncio

from agents.app import NO_PARTS
from agents.settings import Settings


def _pipeline(tmp_path, **kw):
    from agents.app import Pipeline

    s = Settings(bootstrap="127.0.0.1:9", app_id="tports", topic_prefix="tports", data_dir=tmp_path / "data",
                 keys_dir=tmp_path / "keys", web_enabled=False, web_port=0)
    return Pipeline(s, {}, clock=lambda: 1_000_000, **kw)


def test_the_sweeper_calls_its_listeners_after_each_pass_and_survives_a_failing_one(tmp_path):
    p = _pipeline(tmp_path, parts=NO_PARTS)
    seen = []

    def broken(now, n, seconds):
        raise RuntimeError("listener bug")

    p.after_sweep.append(broken)
    p.after_sweep.append(lambda now, n, seconds: seen.append((now, n, seconds >= 0)))
    sweep_once = p.writer.sweep_once
    asyncio.run(p.sweeper.run())
    asyncio.run(p.sweeper.run())
    assert seen == [(1_000_000, 0, True)] * 2
    assert p.writer.sweep_once == sweep_once and p.sweeper.sweep_once == sweep_once  # nobody replaced the method
    assert "sweeper_errors" not in p.counters


def _agents_modules():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "agents"
    for path in sorted(root.rglob("*.py")):
        yield path.relative_to(root.parent).as_posix(), ast.parse(path.read_text(), str(path))


def _violations(name, tree):
    """Functions taking a ``pipeline`` (the composition root ``agents.app.compose`` aside),
    importlib imports (the CLI's subcommand discovery in agents/cli.py aside) and assignments
    over another object's worker method, in one module."""
    import ast

    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            root = (name, node.name) == ("agents/app.py", "compose")  # the composition root
            if not root and any(x.arg == "pipeline" for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)):
                out.append(f"{name}:{node.lineno} {node.name}(pipeline)")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [x.name for x in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if "importlib" in mods and name != "agents/cli.py":
                out.append(f"{name}:{node.lineno} importlib")
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if (isinstance(t, ast.Attribute) and t.attr in ("sweep_once", "apply_binding", "resolve", "ebb")
                        and not (isinstance(t.value, ast.Name) and t.value.id == "self")):  # a port it was given
                    out.append(f"{name}:{node.lineno} .{t.attr} =")
    return out


def test_no_component_takes_the_pipeline_and_nothing_is_loaded_by_name_or_patched():
    """Components receive their ports: no function or constructor in agents/ takes a
    ``pipeline``, no worker component is loaded through importlib, and nothing assigns over a
    method such as ``sweep_once``."""
    assert [v for name, tree in _agents_modules() for v in _violations(name, tree)] == []


def test_the_check_sees_what_it_forbids():
    import ast

    bad = ast.parse("import importlib\nclass C:\n    def __init__(self, pipeline):\n"
                    "        pipeline.sweep_once = print\n")
    assert _violations("agents/x.py", bad) == ["agents/x.py:1 importlib", "agents/x.py:3 __init__(pipeline)",
                                               "agents/x.py:4 .sweep_once ="]
    assert _violations("agents/cli.py", ast.parse("import importlib")) == []
