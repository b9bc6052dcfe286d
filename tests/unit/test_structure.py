"""Structure of the worker's shell (issue 16): no class in ``agents/`` is over 250 lines.

A class's size is ``end_lineno - lineno + 1`` of its ``ast.ClassDef`` (decorators excluded),
over every module under ``agents/`` including its subpackages.  A class that grows past the
bound is split by composition (as ``QueryAgent`` → ``DeskWriter`` / ``DeskOutcomes``)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

MAX_CLASS_LINES = 250


def long_classes(source: str, name: str, limit: int = MAX_CLASS_LINES) -> list[str]:
    """``<file>:<line> <class> (<n> lines)`` for every class of ``source`` over ``limit`` lines."""
    out = []
    for node in ast.walk(ast.parse(source, filename=name)):
        if isinstance(node, ast.ClassDef):
            n = node.end_lineno - node.lineno + 1
            if n > limit:
                out.append(f"{name}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_no_class_in_agents_is_over_250_lines():
    modules = sorted((REPO / "agents").rglob("*.py"))
    assert len(modules) > 20  # the walk found the package
    too_long = [c for f in modules for c in long_classes(f.read_text(), str(f.relative_to(REPO)))]
    assert too_long == [], f"classes over {MAX_CLASS_LINES} lines (split them by composition): {too_long}"


def test_the_check_sees_a_long_class_and_nested_ones():
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_CLASS_LINES - 1))
    assert long_classes(f"class Fits:\n{body}", "m.py") == []
    too_long = f"class TooLong:\n{body}    y = 0\n"
    assert long_classes(too_long, "m.py") == ["m.py:1 TooLong (251 lines)"]
    nested = "def f():\n" + "".join("    " + line + "\n" for line in too_long.splitlines())
    assert long_classes(nested, "m.py") == ["m.py:2 TooLong (251 lines)"]
