"""The test suite reads nothing outside the repository: a clone in an empty directory passes.

Two guards: ``outside_references`` scans every test source for paths that climb out of the
repository (``__file__`` parents above the root, ``<root>.parent``, ``..`` or absolute paths in
string literals); ``tests/conftest.py`` ``PATH_GUARD`` fails any test that opens such a path at
run time.  Both are checked here against paths that do reach outside."""

from __future__ import annotations

import io
import os
import re
import sys
import tokenize
import uuid
from pathlib import Path

import pytest

from agents.broker import cache_dir
from tests.conftest import PATH_GUARD, REPO

TESTS = REPO / "tests"
#: names the suite gives the repository root
ROOT_NAMES = r"(?:REPO|REPO_ROOT|ROOT|HERE_ROOT)"
#: absolute path literals that are places of the environment, not data beside the clone
ENV_PREFIXES = ("/tmp", "/proc/", "/dev/", "/sys/", "/etc/", "/usr/", "/bin/", "/var/tmp")


def outside_references(path: Path, text: str) -> list[str]:
    """Lines of a test source that name a path outside the repository root."""
    bad = []
    lines = text.splitlines()
    for m in re.finditer(r"Path\(__file__\)(?:\.resolve\(\))?(\.parents\[(\d+)\]|(?:\.parent\b)+)", text):
        up = int(m.group(2)) + 1 if m.group(2) is not None else m.group(1).count(".parent")
        target = path.resolve().parents[up - 1] if up <= len(path.resolve().parents) else Path("/")
        if not (target == REPO or REPO in target.parents):
            bad.append(f"{path.name}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)} is {target}")
    for i, line in enumerate(lines, 1):
        if line.rstrip().endswith("# path-guard"):  # the run-time guard names the place it refuses
            continue
        line = line.split("#", 1)[0]
        if re.search(rf"\b{ROOT_NAMES}\.parent\b", line) or re.search(r"/\s*[\"']shared[\"']", line):
            bad.append(f"{path.name}:{i}: {line.strip()}")
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return bad + [f"{path.name}: cannot be tokenised"]
    for tok in tokens:
        if tok.type != tokenize.STRING:
            continue
        if lines[tok.start[0] - 1].rstrip().endswith("# path-guard"):  # an attack string, not a path it opens
            continue
        s = tok.string
        body = re.sub(r"^[a-zA-Z]*[\"']{1,3}|[\"']{1,3}$", "", s)
        if "\n" in body:  # docstrings and multi-line text are prose, not paths
            continue
        if re.search(r"(^|/)\.\.(/|$)", body) or re.match(r"^(/work/|/home/|/root/|~/)", body) or \
                ("shared/samples" in body or "shared/seeds" in body):
            if not body.startswith(ENV_PREFIXES):
                bad.append(f"{path.name}:{tok.start[0]}: {s}")
    return bad


@pytest.mark.parametrize("snippet", [
    'SAMPLES = REPO.parent / "shared" / "samples"\n',
    'SEEDS = Path(__file__).resolve().parents[3] / "seeds"\n',
    'X = Path(__file__).parent.parent.parent.parent / "x"\n',
    'open("../shared/samples/nat-syslog.txt")\n',
    'p = "/work/shared/seeds/000.txt"\n',
    'p = ROOT / ".." / "x"\n',
])
def test_scanner_finds_paths_that_climb_out(snippet):
    assert outside_references(TESTS / "unit" / "test_example.py", snippet), snippet


@pytest.mark.parametrize("snippet", [
    'DATA = Path(__file__).resolve().parents[2] / "tests" / "data"\n',
    'REPO = Path(__file__).resolve().parents[1]\n',
    'open("/proc/self/status")\n',
    'x = "a..b"\n',
])
def test_scanner_accepts_paths_inside(snippet):
    assert outside_references(TESTS / "unit" / "test_example.py", snippet) == []


def test_no_test_source_reaches_outside_the_repository():
    """The benchmarks too: tests run their smoke modes and import their engines (fuzz_all)."""
    sources = sorted(p for p in [*TESTS.rglob("*.py"), *(REPO / "benchmarks").rglob("*.py")]
                     if p.resolve() != Path(__file__).resolve())
    assert len(sources) > 50 and any(p.name == "fuzz_all.py" for p in sources)  # the scan covers both
    bad = [b for p in sources for b in outside_references(p, p.read_text(encoding="utf-8"))]
    assert bad == []


def test_run_time_guard_catches_an_open_beside_the_clone():
    beside = REPO.parent / f"ipanon-guard-probe-{uuid.uuid4().hex}"  # never created
    assert PATH_GUARD.outside(beside)
    assert PATH_GUARD.active
    with pytest.raises(FileNotFoundError):
        open(beside)
    with pytest.raises(FileNotFoundError):
        os.listdir(beside)
    caught = [v for v in PATH_GUARD.violations if str(beside) in v]
    PATH_GUARD.violations.clear()  # this test provoked them; it must not fail for them
    assert [v.split()[0] for v in caught] == ["open", "os.listdir"]


@pytest.mark.parametrize("path,outside", [
    (REPO / "tests" / "data" / "samples" / "nat-syslog.txt", False),
    (Path("/tmp/pytest-of-x/y"), False),
    (Path("/usr/share/zoneinfo/UTC"), False),
    (cache_dir() / "kafka-4.1.1" / "libs", False),
    (Path("/nonexistent-top-level/samples"), True),
    (Path.home() / ".ssh" / "id_ed25519", True),
])
def test_run_time_guard_classifies(path, outside):
    assert PATH_GUARD.outside(path) is outside


def _peers():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ci_peers", REPO / ".ci" / "peers.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["ci_peers"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_every_optional_peer_the_tests_look_up_is_reported_by_make_test():
    """`make test` names each missing peer before the run (.ci/peers.py): every executable a
    test looks up must be one of its peers, every 'not installed' skip reason must start with a
    peer's name (that is how the skips are counted after the run), and the Debian packages are
    exactly .ci/apt-packages, which .ci/run installs."""
    peers = _peers()
    known = {e for p in peers.PEERS for e in p.executables}
    looked_up, reasons = set(), []
    for src in TESTS.rglob("*.py"):
        text = src.read_text(encoding="utf-8")
        looked_up |= set(re.findall(r"shutil\.which\(\s*[\"']([\w.-]+)[\"']", text))
        reasons += re.findall(r"reason=\s*[\"']([^\"']*not installed[^\"']*)[\"']", text)
    assert looked_up and looked_up <= known, looked_up - known
    assert reasons and all(any(r.startswith(p.name) for p in peers.PEERS) for r in reasons), reasons
    assert {p.apt for p in peers.PEERS} == set((REPO / ".ci" / "apt-packages").read_text().split())


def test_peer_report_counts_skips_per_peer(tmp_path, capsys):
    junit = tmp_path / "junit.xml"
    junit.write_text('<testsuites><testsuite>'
                     '<testcase name="a"><skipped message="promtool not installed (apt-get install prometheus)"/></testcase>'
                     '<testcase name="b"><skipped message="promtool not installed (apt-get install prometheus)"/></testcase>'
                     '<testcase name="c"><skipped message="chromium not installed (apt-get install chromium)"/></testcase>'
                     '<testcase name="d"><skipped message="no query agent in this tree"/></testcase>'
                     '<testcase name="e"/></testsuite></testsuites>')
    _peers().after(junit)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("== 3 tests skipped for missing peers (chromium: 1, promtool: 2); ")
    assert out[0].endswith("apt-get install -y --no-install-recommends chromium prometheus")
    assert out[1] == "== 1 skipped: no query agent in this tree"
