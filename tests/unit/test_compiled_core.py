"""The compiled core's build and loader (agents/compiled_core.py), on a two-module toy package
compiled by the real mypyc: a build is used only whole, only while it matches the sources, and
only when nothing of it was imported before; every refusal says why.  Each check runs in a fresh
interpreter, since the import system is per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import agents.compiled_core as core

REPO = Path(__file__).resolve().parents[2]
TOY = ("toy.a", "toy.b")

pytest.importorskip("mypy", reason="mypyc is part of the dev extra (pip install -e '.[dev]')")


def _write_toy(src: Path) -> None:
    (src / "toy").mkdir(parents=True)
    (src / "toy" / "__init__.py").write_text("")
    (src / "toy" / "a.py").write_text("from toy.b import double\nfrom toy.loose import bits\n\n\n"
                                      "def f(x: int) -> int:\n    return double(x) + 1\n")
    (src / "toy" / "b.py").write_text("def double(x: int) -> int:\n    return x * 2\n")
    (src / "toy" / "plain.py").write_text("NOTE = 'interpreted'\n")
    # not compiled, and not clean for mypy: the build reads its types, its errors are not the build's
    (src / "toy" / "loose.py").write_text("import ipaddress\n\n\ndef bits(a: ipaddress.IPv4Address) -> int:\n"
                                          "    return a._ip\n")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A toy package and its build, made once; tests copy what they alter."""
    base = tmp_path_factory.mktemp("core")
    src, where = base / "src", base / "build"
    _write_toy(src)
    sys.path.insert(0, str(src))
    try:
        target = core.build(where=where, package="toy", modules=TOY)
    finally:
        sys.path.remove(str(src))
        for m in [m for m in sys.modules if m == "toy" or m.startswith("toy.")]:
            del sys.modules[m]
    return src, where, target


def _probe(src: Path, where: Path, *, mode: str = "auto", before: str = "") -> dict:
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(src)!r})
        {before}
        import agents.compiled_core as c
        from pathlib import Path
        s = c.activate({mode!r}, where=Path({str(where)!r}), package="toy", modules={TOY!r})
        import toy.a, toy.b
        try:
            c._status = s
            c.require()
            required = None
        except c.CoreError as e:
            required = str(e)
        print(json.dumps({{"active": s.active, "warn": s.warn, "reason": s.reason, "a": toy.a.__file__,
                          "b": toy.b.__file__, "f": toy.a.f(20), "required": required}}))
    """)
    env = {**os.environ, "IPANON_CORE": "interpreted", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _copy(toy, tmp_path: Path) -> tuple[Path, Path]:
    import shutil

    src, where, _ = toy
    shutil.copytree(src, tmp_path / "src")
    shutil.copytree(where, tmp_path / "build")
    return tmp_path / "src", tmp_path / "build"


def test_a_matching_build_serves_every_compiled_module_and_leaves_the_rest_interpreted(toy):
    src, where, target = toy
    got = _probe(src, where)
    assert got["active"] and not got["warn"], got
    assert got["a"].startswith(str(target)) and got["a"].endswith(".so")
    assert got["b"].startswith(str(target)) and got["b"].endswith(".so")
    assert got["f"] == 41 and got["required"] is None
    manifest = json.loads((target / "manifest.json").read_text())
    assert set(TOY) <= set(manifest["files"]) and manifest["mypy"] == core.MYPY_VERSION
    assert not list(src.rglob("*.so")), "the build must never land in the source tree"


def test_interpreted_mode_ignores_a_good_build(toy):
    src, where, _ = toy
    got = _probe(src, where, mode="interpreted")
    assert not got["active"] and not got["warn"] and got["a"].endswith(".py")


def test_an_edited_source_makes_the_build_stale_even_in_a_module_not_compiled(toy, tmp_path):
    src, where = _copy(toy, tmp_path)
    (src / "toy" / "plain.py").write_text("NOTE = 'edited'\n")
    got = _probe(src, where)
    assert not got["active"] and got["warn"] and "stale" in got["reason"]
    assert got["a"].endswith("a.py") and got["b"].endswith("b.py") and got["f"] == 41
    asked = _probe(src, where, mode="compiled")
    assert "IPANON_CORE=compiled" in asked["required"] and "stale" in asked["required"]


def test_a_tampered_build_file_is_refused(toy, tmp_path):
    src, where = _copy(toy, tmp_path)
    so = next(p for p in where.rglob("b.*.so"))
    data = bytearray(so.read_bytes())
    data[len(data) // 2] ^= 0xFF
    so.write_bytes(bytes(data))
    got = _probe(src, where)
    assert not got["active"] and got["warn"] and "does not match its manifest" in got["reason"]
    assert got["b"].endswith("b.py")


def test_a_broken_manifest_is_refused_with_a_reason(toy, tmp_path):
    src, where = _copy(toy, tmp_path)
    next(where.rglob("manifest.json")).write_text("{not json")
    got = _probe(src, where)
    assert not got["active"] and got["warn"] and "unreadable" in got["reason"]


def test_no_half_compiled_core_when_a_module_was_imported_first(toy):
    src, where, _ = toy
    got = _probe(src, where, before="import toy.b")
    assert not got["active"] and got["warn"] and "toy.b was imported before" in got["reason"]
    assert got["a"].endswith("a.py") and got["b"].endswith("b.py")


def test_an_unknown_mode_is_named(toy):
    src, where, _ = toy
    got = _probe(src, where, mode="fast")
    assert not got["active"] and got["warn"] and "'fast' is not one of auto, compiled, interpreted" in got["reason"]
    assert got["required"] and "'fast'" in got["required"]


def test_no_build_at_all_is_a_quiet_fall_back_but_an_error_when_compiled_is_required(toy, tmp_path):
    src, _, _ = toy
    got = _probe(src, tmp_path / "none")
    assert not got["active"] and not got["warn"] and "no build" in got["reason"]
    asked = _probe(src, tmp_path / "none", mode="compiled")
    assert "no build" in asked["required"]


def test_the_digest_covers_every_source_byte_and_nothing_else(tmp_path):
    _write_toy(tmp_path)
    first = core.source_digest(tmp_path / "toy", "toy")
    (tmp_path / "toy" / "__pycache__").mkdir()
    (tmp_path / "toy" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"x")
    (tmp_path / "toy" / "notes.txt").write_text("not a source")
    assert core.source_digest(tmp_path / "toy", "toy") == first
    (tmp_path / "toy" / "b.py").write_text("def double(x: int) -> int:\n    return x * 2  # \n")
    assert core.source_digest(tmp_path / "toy", "toy") != first


def test_a_failed_compile_names_the_compiler_error_and_leaves_no_build(tmp_path):
    _write_toy(tmp_path / "src")
    (tmp_path / "src" / "toy" / "b.py").write_text("def double(x: int) -> int:\n    return 'not an int'\n")
    sys.path.insert(0, str(tmp_path / "src"))
    try:
        with pytest.raises(core.CoreError, match="mypyc failed") as e:
            core.build(where=tmp_path / "build", package="toy", modules=TOY)
    finally:
        sys.path.remove(str(tmp_path / "src"))
        for m in [m for m in sys.modules if m == "toy" or m.startswith("toy.")]:
            del sys.modules[m]
    assert "Incompatible return value" in str(e.value)
    assert not [p for p in (tmp_path / "build").iterdir() if p.is_dir()]


def test_the_build_type_checks_only_the_compiled_modules_however_ipanon_is_installed(tmp_path):
    """Whether mypy reported errors in the modules that stay interpreted (``toy.loose`` here, the
    ipaddress internals of ``stream.model`` for real) depended on the environment: from this
    virtualenv it did not, from an interpreter that finds the packages on PYTHONPATH (as a
    container's `pip install .` beside a separately installed mypy did) it did, and the build
    failed.  The build's own mypy configuration makes only the compiled modules count."""
    import site

    src = tmp_path / "src"
    _write_toy(src)
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(src)!r})
        from pathlib import Path
        import agents.compiled_core as c
        try:
            print(c.build(where=Path({str(tmp_path / "build")!r}), package="toy", modules={TOY!r}).name)
        except c.CoreError as e:
            print("FAILED", e)
    """)
    env = {**os.environ, "IPANON_CORE": "interpreted",
           "PYTHONPATH": os.pathsep.join([str(REPO), *site.getsitepackages()])}
    out = subprocess.run([getattr(sys, "_base_executable", sys.executable), "-c", code], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "FAILED" not in out.stdout, out.stdout[-2000:]
    assert (tmp_path / "build" / out.stdout.split()[-1] / "manifest.json").is_file()


def test_the_suite_runs_the_core_its_status_reports():
    """Whatever form this run uses (make test runs both), the modules loaded agree with the
    status the worker and ``ipanon core status`` report."""
    import stream.intervals

    s = core.status()
    assert stream.intervals.__file__.endswith(".so") == s.active, (s, stream.intervals.__file__)
    if os.environ.get("IPANON_CORE") == "compiled":
        assert s.active, s.reason
    if os.environ.get("IPANON_CORE") == "interpreted":
        assert not s.active


def test_a_build_others_could_write_is_refused(toy, tmp_path):
    """Loading a build runs its code, and its digest is computable from public sources: a build
    directory that another user or group can write (``/tmp``) could hold a planted one."""
    src, where = _copy(toy, tmp_path)
    build = next(p for p in where.iterdir() if p.is_dir())
    build.chmod(0o777)
    got = _probe(src, where)
    assert not got["active"] and got["warn"] and "writable by others" in got["reason"]
    build.chmod(0o755)
    so = next(build.rglob("a.*.so"))
    so.chmod(0o666)
    got = _probe(src, where)
    assert not got["active"] and "writable by others" in got["reason"]
    so.chmod(0o644)
    assert _probe(src, where)["active"]


def test_a_build_of_another_user_is_refused_and_one_of_root_or_ours_is_served(toy, tmp_path):
    """The container image's build belongs to root and the worker runs as its own user: root's and
    our own files are trusted, another user's are not (they could swap the library)."""
    src, where = _copy(toy, tmp_path)
    build = next(p for p in where.iterdir() if p.is_dir())
    so = next(build.rglob("a.*.so"))
    other = 10001 if os.geteuid() != 10001 else 10002
    try:
        os.chown(so, other, -1)
    except PermissionError:
        pytest.skip("changing a file's owner needs root")
    got = _probe(src, where)
    assert not got["active"] and got["warn"] and "belongs to another user" in got["reason"]
    assert f"uid {other}" in got["reason"]
    os.chown(so, 0 if os.geteuid() == 0 else os.geteuid(), -1)
    assert _probe(src, where)["active"]


def test_a_symlinked_build_is_refused(toy, tmp_path):
    src, _, target = toy
    (tmp_path / "where").mkdir()
    (tmp_path / "where" / target.name).symlink_to(target)
    got = _probe(src, tmp_path / "where")
    assert not got["active"] and got["warn"] and "symbolic link" in got["reason"]


def test_build_if_possible_is_a_warning_where_a_plain_build_is_an_error(tmp_path):
    """``make install`` builds with ``--if-possible``: a machine whose C compiler fails still
    installs, says so, and runs the core interpreted; ``make core`` and CI's build stop."""
    env = {**os.environ, "CC": "/bin/false", "IPANON_CORE_DIR": str(tmp_path / "core"), "IPANON_CORE": "auto"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "agents.cli", "core", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)

    soft = cli("build", "--if-possible")
    assert soft.returncode == 0, soft.stderr[-2000:]
    assert "ipanon core: warning: not compiled, the core will run interpreted: mypyc failed" in soft.stderr
    hard = cli("build")
    assert hard.returncode == 2 and "mypyc failed" in hard.stderr, hard.stderr[-2000:]
    assert "Traceback" not in soft.stderr + hard.stderr
    status = cli("status")
    assert status.returncode == 1 and status.stdout.startswith("core: interpreted (no build in"), status.stdout
