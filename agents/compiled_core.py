"""The pure core compiled with mypyc: build it, and load it only when it matches the sources.

The Python sources in ``stream/`` stay the single truth.  ``ipanon core build`` compiles the
modules in ``COMPILED`` with mypyc into ``<root>/<digest>/`` (``root()``: the environment's
``lib/ipanon-core``, i.e. inside the virtualenv, because the shared library is tied to its
interpreter) and never into the source tree, where a compiled module would silently shadow an
edited ``.py`` beside it.  ``install()`` (called when ``agents`` is imported, and by the test
suite's conftest) puts a finder in front of the import system that serves those modules from the
build, all or none, and only when:

- ``IPANON_CORE`` is ``auto`` (the default) or ``compiled``; ``interpreted`` never loads it;
- the build's digest equals the digest of the ``stream/`` sources now on disk (every ``.py`` of
  the package, not only the compiled ones: mypyc bakes in what it infers from the modules a
  compiled one imports), for this interpreter;
- every file of the build still has the SHA-256 its manifest records;
- none of the compiled modules is imported yet.  Compiled modules call each other's native
  code directly, so a mix of compiled and interpreted copies of one module is never allowed.

Otherwise the core runs interpreted and ``status()`` says why (``ipanon core status``; the
worker logs it at start).  ``IPANON_CORE=compiled`` turns a missing or stale build into an error
at start (``require()``) instead of the silent fall-back.

This module imports only the standard library: it runs before any other ipanon code.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

#: the modules compiled: the per-event hot path (intervals, binding codec, mapping rules,
#: statistics, aggregates, pseudonyms, sealing keys) and the RADIUS JSON parser
COMPILED = (
    "stream.intervals", "stream.binding_wire", "stream.mapping", "stream.stats", "stream.aggregate",
    "stream.pseudonym", "stream.keyring", "stream.schedule", "stream.consent", "stream.realm",
    "stream.detnat", "stream.parse._radius", "stream.parse._fastip", "stream.parse.radius_json",
    "stream.parse._time",
)
MYPY_VERSION = "2.4.1"
MODES = ("auto", "compiled", "interpreted")
#: bump when the build's layout or manifest changes
FORMAT = 1


class CoreError(Exception):
    """A compiled core that was asked for and cannot be used, or a build that failed."""


def root() -> Path:
    return Path(os.environ.get("IPANON_CORE_DIR") or Path(sys.prefix) / "lib" / "ipanon-core")


def package_dir(package: str = "stream") -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CoreError(f"package {package!r} not found")
    return Path(list(spec.submodule_search_locations)[0])


def source_digest(src: Path, package: str = "stream") -> str:
    """SHA-256 over the package's ``.py`` files (relative path and bytes) and the interpreter's
    ABI tag."""
    h = hashlib.sha256(f"ipanon-core/{FORMAT}/{sys.implementation.cache_tag}/{package}\n".encode())
    for path in sorted(src.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        h.update(path.relative_to(src).as_posix().encode() + b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:32]


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _unsafe(*paths: Path) -> str:
    """Why a build may not be trusted: loading it runs its code in the worker, and its digest is
    computable from public sources, so whoever else can write the build directory (``/tmp``, a
    shared group) could plant one.  Each existing path must belong to this user or root and be
    writable by neither group nor others."""
    for path in paths:
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if path.is_symlink():
            return f"{path} is a symbolic link: refused (run `ipanon core build`)"
        if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022:
            return (f"{path} is writable by others or belongs to another user (mode {st.st_mode & 0o777:o}, "
                    f"uid {st.st_uid}): refused, run `ipanon core build`")
    return ""


@dataclass
class Status:
    mode: str
    active: bool
    reason: str
    build: Optional[Path] = None
    #: a build exists (or was asked for) but cannot be used: worth a warning, not a quiet fall-back
    warn: bool = False

    def line(self) -> str:
        form = "compiled" if self.active else "interpreted"
        return f"core: {form} ({self.reason})"


class _Finder(importlib.abc.MetaPathFinder):
    """Serves exactly the modules of one verified build, as extension modules."""

    def __init__(self, files: dict[str, Path]):
        self.files = files

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001 (importlib's signature)
        file = self.files.get(name)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(name, str(file))
        return importlib.util.spec_from_file_location(name, str(file), loader=loader)


_status: Optional[Status] = None


def _check(mode: str, where: Path, package: str, modules: Sequence[str]) -> tuple[Status, dict[str, Path]]:
    if mode not in MODES:
        return Status(mode, False, f"IPANON_CORE={mode!r} is not one of {', '.join(MODES)}", warn=True), {}
    if mode == "interpreted":
        return Status(mode, False, "IPANON_CORE=interpreted"), {}
    try:
        digest = source_digest(package_dir(package), package)
    except (CoreError, OSError) as e:
        return Status(mode, False, f"cannot read the sources: {e}"), {}
    build = where / digest
    manifest_file = build / "manifest.json"
    unsafe = _unsafe(where, build, manifest_file)
    if unsafe:
        return Status(mode, False, unsafe, warn=True), {}
    if not manifest_file.is_file():
        others = sorted(p.name for p in where.iterdir() if p.is_dir()) if where.is_dir() else []
        if others:
            return Status(mode, False, f"the build in {where} is stale (the sources changed since it was "
                                       f"made): run `ipanon core build`", warn=True), {}
        return Status(mode, False, f"no build in {where}: run `ipanon core build`"), {}
    try:
        manifest = json.loads(manifest_file.read_text())
        files = {name: build / entry["file"] for name, entry in manifest["files"].items()}
        for name, entry in manifest["files"].items():
            unsafe = _unsafe(files[name].parent, files[name])
            if unsafe or not files[name].resolve().is_relative_to(build.resolve()):
                return Status(mode, False, unsafe or f"{files[name]} lies outside {build}: refused", warn=True), {}
            if _file_sha(files[name]) != entry["sha256"]:
                return Status(mode, False, f"{files[name]} does not match its manifest: run `ipanon core build`", warn=True), {}
    except (OSError, ValueError, KeyError, TypeError) as e:
        return Status(mode, False, f"the build in {build} is unreadable ({e}): run `ipanon core build`", warn=True), {}
    missing = sorted(set(modules) - set(files))
    if missing:
        return Status(mode, False, f"the build in {build} lacks {', '.join(missing)}: run `ipanon core build`", warn=True), {}
    loaded = sorted(m for m in modules if m in sys.modules)
    if loaded:
        return Status(mode, False, f"{', '.join(loaded)} was imported before the compiled core could be "
                                   f"installed", warn=True), {}
    return Status(mode, True, f"mypyc build {digest[:12]}, {len(modules)} modules", build), files


def activate(mode: str, *, where: Path, package: str = "stream",
             modules: Sequence[str] = COMPILED) -> Status:
    """Check the build in ``where`` for ``package`` and, if it may be used, put its finder first
    on ``sys.meta_path``.  Never raises: the reason for running interpreted is in the status."""
    try:
        status, files = _check(mode, where, package, modules)
    except Exception as e:  # never break an import over the accelerator; say why instead
        status, files = Status(mode, False, f"checking the build failed: {e!r}", warn=True), {}
    if status.active:
        sys.meta_path.insert(0, _Finder(files))
    return status


def install() -> Status:
    """``activate`` for ``stream/``, in the mode ``IPANON_CORE`` names, once per process."""
    global _status
    if _status is None:
        _status = activate(os.environ.get("IPANON_CORE", "auto").strip().lower() or "auto", where=root())
    return _status


def status() -> Status:
    """Which form this process runs (``install``'s result)."""
    return install()


def require() -> Status:
    """With ``IPANON_CORE=compiled``, a core that is not compiled is an error; otherwise the
    status."""
    s = status()
    if s.mode not in MODES:
        raise CoreError(s.reason)
    if s.mode == "compiled" and not s.active:
        raise CoreError(f"IPANON_CORE=compiled but the core runs interpreted: {s.reason}")
    return s


def build(*, where: Optional[Path] = None, package: str = "stream", modules: Sequence[str] = COMPILED,
          progress: Callable[[str], None] = lambda line: None) -> Path:
    """Compile ``modules`` of ``package`` with mypyc into ``<where>/<digest>/`` and return it.

    The sources are copied to a scratch directory and compiled there; the result is moved into
    place atomically with its manifest (file → SHA-256).  Other builds are removed, and
    a build that already matches the sources is kept.  Raises ``CoreError`` with the compiler's last lines on failure."""
    try:
        import mypy.version  # noqa: F401  (only the build needs mypy)
    except ImportError:
        raise CoreError("mypyc is not installed: pip install 'ipanon[compile]' "
                        f"(mypy=={MYPY_VERSION}); the core keeps running interpreted") from None
    where = where or root()
    src = package_dir(package)
    digest = source_digest(src, package)
    target = where / digest
    if target.is_dir():
        checked, _ = _check("auto", where, package, ())
        if checked.build == target:
            progress(f"{target} matches the sources: up to date")
            return target
    where.mkdir(mode=0o755, parents=True, exist_ok=True)
    unsafe = _unsafe(where)
    if unsafe:
        raise CoreError(unsafe.replace("run `ipanon core build`", "choose another IPANON_CORE_DIR"))
    with tempfile.TemporaryDirectory(prefix="ipanon-core-") as tmp:
        work = Path(tmp)
        shutil.copytree(src, work / package, ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyc"))
        paths = [str(Path(*m.split(".")).with_suffix(".py")) for m in modules]
        # Only the compiled modules must type-check.  The others are read for their types but run
        # interpreted; without this, whether mypy reported their errors depended on how the
        # package was installed (an editable install hid them as third-party code, `pip install .`
        # did not, and the build failed).
        (work / "mypy.ini").write_text(
            f"[mypy]\n\n[mypy-{package}.*]\nignore_errors = True\n\n"
            + "".join(f"[mypy-{m}]\nignore_errors = False\n\n" for m in modules))
        progress(f"compiling {len(paths)} modules of {package}/ with mypyc {mypy.version.__version__} "
                 f"(about a minute) …")
        started = time.monotonic()
        log = work / "mypyc.log"
        with log.open("wb") as out:
            rc = subprocess.call([sys.executable, "-m", "mypyc", *paths], cwd=work, stdout=out,
                                 stderr=subprocess.STDOUT, env={**os.environ, "MYPYC_OPT_LEVEL": "3"})
        if rc != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-15:]
            raise CoreError("mypyc failed (exit %d):\n  %s" % (rc, "\n  ".join(tail)))
        libs = list((work / "build").glob("lib.*"))
        if len(libs) != 1:
            raise CoreError(f"mypyc left no single build/lib.* directory in {work}")
        files: dict[str, dict[str, str]] = {}
        staging = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=where))
        try:
            for so in sorted(libs[0].rglob("*.so")):
                rel = so.relative_to(libs[0])
                name = ".".join((*rel.parts[:-1], rel.name.split(".", 1)[0]))
                dest = staging / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(so, dest)
                files[name] = {"file": rel.as_posix(), "sha256": _file_sha(dest)}
            missing = sorted(set(modules) - set(files))
            if missing:
                raise CoreError(f"mypyc built no module for {', '.join(missing)}")
            (staging / "manifest.json").write_text(json.dumps({
                "format": FORMAT, "digest": digest, "package": package, "python": sys.version.split()[0],
                "mypy": mypy.version.__version__, "modules": list(modules), "files": files,
                "seconds": round(time.monotonic() - started, 1)}, indent=1) + "\n")
            # whatever the umask: the loader refuses group- or world-writable files
            for path in (staging, *staging.rglob("*")):
                path.chmod(0o755 if path.is_dir() else 0o644)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    for other in where.iterdir():
        if other.is_dir() and other.name != digest:
            shutil.rmtree(other, ignore_errors=True)
    progress(f"built {target} in {time.monotonic() - started:.0f} s")
    return target
