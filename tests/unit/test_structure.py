"""Structure of the code: no class in ``agents/`` is over 250 lines, and no comment, docstring,
name or string in ``agents/``, ``stream/``, ``tests/`` or ``benchmarks/`` names an issue (issue
numbers and benchmark figures live in docs/benchmarks.md; a comment says why).

A class's size is ``end_lineno - lineno + 1`` of its ``ast.ClassDef`` (decorators excluded),
over every module under ``agents/`` including its subpackages.  A class that grows past the
bound is split by composition (as ``QueryAgent`` → ``DeskWriter`` / ``DeskOutcomes``)."""

from __future__ import annotations

import ast
import re
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


#: "issue N", "issues N", "issue#N", "issue-N", "_issueN": an issue's number where the code should say why
ISSUE_REF = re.compile(r"(?<![^\W_])issues?[ _-]?#?\d+", re.IGNORECASE)


def issue_references(source: str, name: str) -> list[str]:
    """``<file>:<line>`` and the line for every mention of an issue number in ``source``."""
    return [f"{name}:{i} {line.strip()}" for i, line in enumerate(source.splitlines(), 1) if ISSUE_REF.search(line)]


#: folders whose Python files may not name an issue
SCANNED = ("agents", "stream", "tests", "benchmarks")


def without_spelling_checks(source: str) -> str:
    """``source`` with the body of ``test_the_issue_check_sees_the_usual_spellings`` blanked: its
    strings are issue references on purpose, to prove the check sees them."""
    lines = source.splitlines()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name == "test_the_issue_check_sees_the_usual_spellings":
            lines[node.lineno - 1:node.end_lineno] = [""] * (node.end_lineno - node.lineno + 1)
    return "\n".join(lines)


def test_no_issue_numbers_in_the_code():
    modules = sorted(f for d in SCANNED for f in (REPO / d).rglob("*.py"))
    for d in SCANNED:
        assert sum(1 for f in modules if f.is_relative_to(REPO / d)) > 10, d  # the walk found it
    here = Path(__file__).resolve()
    found = [r for f in modules
             for r in issue_references(without_spelling_checks(f.read_text()) if f == here else f.read_text(),
                                       str(f.relative_to(REPO)))]
    assert found == [], f"issue numbers in code (say why instead; figures go to docs/benchmarks.md): {found}"


def test_the_scan_skips_only_the_spelling_checks():
    here = Path(__file__).read_text()
    assert issue_references(here, "t.py") != []  # the spellings below are found when not skipped
    blanked = without_spelling_checks(here)
    assert issue_references(blanked, "t.py") == []
    changed = [i for i, (a, b) in enumerate(zip(here.splitlines(), blanked.splitlines())) if a != b]
    # one short run of lines, starting at the spelling check's def: nothing else is skipped
    assert here.splitlines()[changed[0]].startswith("def test_the_issue_check_sees_the_usual_spellings")
    assert changed == list(range(changed[0], changed[0] + len(changed))) and len(changed) < 10


def test_the_issue_check_sees_the_usual_spellings():
    assert issue_references("# see issue 16\nx = 1  # (issues 4, 9)\n#: Issue#3\n", "m.py") == [
        "m.py:1 # see issue 16", "m.py:2 x = 1  # (issues 4, 9)", "m.py:3 #: Issue#3"]
    assert issue_references("tissue 5\nissued 3 keys\n", "m.py") == []
    assert issue_references("test_bench_issue8_smoke\nsee issue-16\n", "m.py") == [
        "m.py:1 test_bench_issue8_smoke", "m.py:2 see issue-16"]
