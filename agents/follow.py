"""Tail a growing log file across rotation, and remember how far it was shipped.

Used by ``ipanon produce --follow``.  ``Follower.lines()`` is an endless iterator of complete
lines (a trailing line without its newline is held back until it is finished).  After each
line it sets ``Follower.pos`` to the position just past that line, so a framer that yields a
record right after consuming its last line (every framer in ``stream.parse`` does; the detail
framer ends a record only at a blank line) leaves ``pos`` exactly at the record's end.

Rotation (checked whenever the end of the file is reached):
- *rename + new file* (logrotate ``create``, Kea's and FreeRADIUS's own rotation): the path now
  names another inode.  The old file is read to its end first (a last line without newline is
  taken as complete: the writer has moved on), then an empty line is fed to the framer so a
  record cut at the end of the old file is closed, then the new file is read from offset 0.
- *truncation* (logrotate ``copytruncate``): the file is shorter than the position; reading
  restarts at 0 (lines written between the copy and the truncate are lost by copytruncate
  itself — prefer ``create``).

Position state (``StateFile``): ``{"dev", "ino", "offset"}`` of the last record whose sending was
*acknowledged*, written atomically (temp file + fsync + rename).  On restart:
- same inode, offset ≤ size → resume at the offset;
- the path names a new inode → the directory is searched for the old inode (the rotated file,
  e.g. ``detail.1``); if found, it is drained from the saved offset first; if it is gone, the
  new file is read from 0 and a warning says records may have been missed;
- offset > size (truncated while stopped) → from 0.
Files whose records need leading context (``Format.header_lines``, the Kea CSV header) get
those lines replayed to the framer when resuming mid-file; ``pos`` does not move for them.

Guarantee (docs/ingest.md): **at-least-once**.  The caller commits a position only after the
producer's ``flush()`` returned with every record up to it acknowledged (acks=all), so a
restart never skips a record; a crash between the acknowledgement and the state write re-sends
the records since the last commit (bounded by the commit interval).  Nothing is de-duplicated
here: a re-sent record yields the same binding again, which the mapping treats as a repeat.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

CHUNK = 256 * 1024


class FollowStopped(Exception):
    """Raised out of ``lines()`` when ``stop()`` says so, so framers do not flush a partial
    record as if the input had ended."""


@dataclass(frozen=True)
class Position:
    dev: int
    ino: int
    offset: int


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> Optional[Position]:
        try:
            d = json.loads(self.path.read_text())
            return Position(int(d["dev"]), int(d["ino"]), int(d["offset"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, pos: Position, *, source: str = "") -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump({"dev": pos.dev, "ino": pos.ino, "offset": pos.offset, "source": source}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def _find_inode(directory: Path, dev: int, ino: int) -> Optional[Path]:
    try:
        with os.scandir(directory) as it:
            for e in it:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                if st.st_ino == ino and st.st_dev == dev and e.is_file(follow_symlinks=False):
                    return Path(e.path)
    except OSError:
        return None
    return None


class Follower:
    def __init__(self, path: Path, *, start: Optional[Position] = None, header_lines: int = 0,
                 poll_s: float = 0.2, on_idle: Callable[[], None] = lambda: None,
                 stop: Callable[[], bool] = lambda: False,
                 warn: Callable[[str], None] = lambda m: print(f"ipanon: {m}", file=sys.stderr)) -> None:
        self.path = Path(path)
        self.start = start
        self.header_lines = header_lines
        self.poll_s = poll_s
        self.on_idle = on_idle
        self.stop = stop
        self.warn = warn
        self.pos: Optional[Position] = None
        self.rotations = 0

    # -- helpers -------------------------------------------------------------------------

    def _open_wait(self):
        while True:
            try:
                return open(self.path, "rb")
            except FileNotFoundError:
                self.on_idle()
                if self.stop():
                    raise FollowStopped() from None
                time.sleep(self.poll_s)

    def _header(self, fh) -> list[bytes]:
        out = []
        here = fh.tell()
        fh.seek(0)
        for _ in range(self.header_lines):
            line = fh.readline()
            if not line.endswith(b"\n"):
                break
            out.append(line)
        fh.seek(here)
        return out

    def _drain(self, fh, dev: int, ino: int, offset: int) -> Iterator[bytes]:
        """Every remaining line of a file that will not grow any more, then a record break."""
        fh.seek(offset)
        for line in fh:
            offset += len(line)
            self.pos = Position(dev, ino, offset)
            yield line if line.endswith(b"\n") else line + b"\n"
        yield b"\n"

    # -- the iterator --------------------------------------------------------------------

    def lines(self) -> Iterator[bytes]:
        fh = self._open_wait()
        st = os.fstat(fh.fileno())
        dev, ino, offset = st.st_dev, st.st_ino, 0
        s = self.start
        if s is not None:
            if (s.dev, s.ino) == (dev, ino):
                if s.offset <= st.st_size:
                    offset = s.offset
                else:
                    self.warn(f"{self.path} is shorter than the saved position: reading it from the start")
            else:
                old = _find_inode(self.path.parent, s.dev, s.ino)
                if old is not None:
                    with open(old, "rb") as ofh:
                        if s.offset <= os.fstat(ofh.fileno()).st_size:
                            yield from self._drain(ofh, s.dev, s.ino, s.offset)
                else:
                    self.warn(f"{self.path} was rotated while stopped and the old file is gone: "
                              "records written to it after the saved position may be missed")
        if offset and self.header_lines:
            yield from self._header(fh)
        fh.seek(offset)
        self.pos = Position(dev, ino, offset)
        buf = b""
        try:
            while True:
                chunk = fh.read(CHUNK)
                if chunk:
                    buf += chunk
                    *complete, buf = buf.split(b"\n")
                    for line in complete:
                        offset += len(line) + 1
                        self.pos = Position(dev, ino, offset)
                        yield line + b"\n"
                    continue
                try:
                    st2 = os.stat(self.path)
                except FileNotFoundError:
                    st2 = None
                if st2 is not None and (st2.st_dev, st2.st_ino) != (dev, ino):
                    # rotated: finish the old file (its writer has moved on), then switch
                    buf += fh.read()
                    parts = buf.split(b"\n")
                    last = len(parts) - 1
                    for i, line in enumerate(parts):
                        if i == last and not line:
                            break  # nothing after the final newline
                        offset += len(line) + (1 if i < last else 0)
                        self.pos = Position(dev, ino, offset)
                        yield line + b"\n"
                    buf = b""
                    yield b"\n"
                    fh.close()
                    fh = self._open_wait()
                    st = os.fstat(fh.fileno())
                    dev, ino, offset = st.st_dev, st.st_ino, 0
                    self.pos = Position(dev, ino, 0)
                    self.rotations += 1
                    continue
                if st2 is not None and st2.st_size < offset:
                    self.warn(f"{self.path} was truncated: reading it from the start")
                    fh.seek(0)
                    buf = b""
                    offset = 0
                    self.pos = Position(dev, ino, 0)
                    self.rotations += 1
                    yield b"\n"
                    continue
                self.on_idle()
                if self.stop():
                    raise FollowStopped()
                time.sleep(self.poll_s)
        finally:
            fh.close()
