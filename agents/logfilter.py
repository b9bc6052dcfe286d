"""Rate limit for repeated Kafka client log lines.

While the broker is away, aiokafka, kafka-python and Faust log the same connection error for
every reconnect attempt of every client: a 39 s outage wrote 153 767 ERROR lines (16 MB).
``RepeatFilter`` lets the first record of a kind through, drops the repeats for ``interval_s``,
and the first record after the interval carries how many were dropped, so every occurrence is
still counted.  A kind is (logger name, level, message template): the template, not the
formatted text, so the same error about another node or partition counts as a repeat.

Installed on the root logger's handlers (a filter on a logger sees only records created on that
very logger, not those propagated from its children) by ``install`` when the worker sets up
logging (``agents.commands.worker``).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable

#: loggers whose repeats are limited (prefixes of logger names)
CLIENT_LOGGERS = ("aiokafka", "kafka", "faust", "mode", "ipanon.batch")
DEFAULT_INTERVAL_S = 10.0


class RepeatFilter(logging.Filter):
    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, prefixes: Iterable[str] = CLIENT_LOGGERS,
                 clock: Callable[[], float] = time.monotonic, min_level: int = logging.WARNING) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.prefixes = tuple(prefixes)
        self.clock = clock
        self.min_level = min_level
        self._seen: dict[tuple, list] = {}   # kind → [window start, repeats dropped in it]
        self.suppressed = 0

    def _limited(self, name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in self.prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.min_level or not self._limited(record.name):
            return True
        if getattr(record, "_ipanon_repeat_checked", False):  # several handlers, one decision
            return record._ipanon_repeat_pass  # type: ignore[attr-defined]
        kind = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        state = self._seen.get(kind)
        if state is not None and now - state[0] < self.interval_s:
            state[1] += 1
            self.suppressed += 1
            ok = False
        else:
            if state is not None and state[1]:
                record.msg = (f"{record.getMessage()} [{state[1]} more like this in the last "
                              f"{now - state[0]:.0f} s, not shown]")
                record.args = ()  # already formatted (None would be formatted again by mode's formatter)
            if len(self._seen) > 10_000:  # bounded: kinds are templates, few in practice
                self._seen.clear()
            self._seen[kind] = [now, 0]
            ok = True
        record._ipanon_repeat_checked = True  # type: ignore[attr-defined]
        record._ipanon_repeat_pass = ok  # type: ignore[attr-defined]
        return ok


def install(logger: logging.Logger = logging.root, *, interval_s: float = DEFAULT_INTERVAL_S) -> RepeatFilter:
    """Put one ``RepeatFilter`` on every handler of ``logger`` (the root: where Faust's worker
    writes), replacing any installed before."""
    f = RepeatFilter(interval_s)
    for h in logger.handlers:
        for old in [x for x in h.filters if isinstance(x, RepeatFilter)]:
            h.removeFilter(old)
        h.addFilter(f)
    return f
