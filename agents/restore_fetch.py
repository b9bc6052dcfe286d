"""The changelog restore's records without aiokafka's ``ConsumerRecord``.

A fresh restore spends most of its one GIL thread in aiokafka (docs/benchmarks.md "Fresh restore:
vector memtables"), a good part of it in ``PartitionRecords._consumer_record``, which copies each decoded record into an 11-field ``ConsumerRecord`` (sizes, checksum, a tuple of
the headers).  The restore reads only ``key``, ``value``, ``headers``, ``offset`` and
``timestamp``, which the decoded record (``aiokafka.record``'s ``DefaultRecord``) already has.

``install`` wraps that method once: a consumer whose ``key_deserializer`` is ``RAW`` gets the
decoded records themselves; every other consumer goes through aiokafka's own method as before
(one more Python call per record).  aiokafka is pinned below 0.15 (pyproject.toml; as for
``agents.outbox``'s use of its accumulator), and ``install`` checks the method's signature: where
it does not match, nothing is wrapped and ``RAW`` is an identity deserializer, so the restore
gets ``ConsumerRecord``s with the same keys.
"""

from __future__ import annotations

import inspect
from typing import Any, Optional


class _Raw:
    """The restore consumer's ``key_deserializer``: marks it for ``install``'s hook; the
    identity where the hook is not installed."""

    __slots__ = ()

    def __call__(self, b: Any) -> Any:
        return b

    def __repr__(self) -> str:
        return "agents.restore_fetch.RAW"


RAW = _Raw()
_installed: Optional[bool] = None


def install() -> bool:
    """Wrap ``aiokafka``'s ``PartitionRecords._consumer_record`` (once); False where it does
    not have the expected form (nothing wrapped)."""
    global _installed
    if _installed is not None:
        return _installed
    try:
        from aiokafka.consumer import fetcher

        cls = fetcher.PartitionRecords
        orig = cls._consumer_record
        ok = list(inspect.signature(orig).parameters) == ["self", "tp", "record"] and \
            "_key_deserializer" in inspect.getsource(cls.__init__)
    except Exception:  # another aiokafka: the restore reads ConsumerRecords
        ok = False
    if not ok:
        _installed = False
        return False

    def _consumer_record(self: Any, tp: Any, record: Any, _orig: Any = orig, _raw: _Raw = RAW) -> Any:
        if self._key_deserializer is _raw:
            return record
        return _orig(self, tp, record)

    _consumer_record.__wrapped__ = orig  # type: ignore[attr-defined]
    cls._consumer_record = _consumer_record
    _installed = True
    return True
