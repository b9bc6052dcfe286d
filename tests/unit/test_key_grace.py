"""The vault's key grace (``stream.shred.key_grace_ms``): how long an epoch key outlives its
epoch, so the sweeper can still open (delete or re-seal) every value sealed under it."""

from __future__ import annotations

import pytest

from stream.shred import key_grace_ms


@pytest.mark.parametrize("period_ms,bucket_ms", [(1_000, 1_000), (1_000, 60_000), (30_000, 1_000), (5, 7)])
def test_the_grace_covers_the_sweepers_latest_visit(period_ms, bucket_ms):
    # a value due at t is reached by the sweeper at the latest one timer period and one schedule
    # bucket later; a held value is re-checked one period after that: the key must still exist
    latest_visit_after_due = period_ms + bucket_ms + period_ms
    assert key_grace_ms(period_ms, bucket_ms) > latest_visit_after_due


def test_the_worker_defaults():
    # 1 s sweeper period, 1 s schedule buckets: 4 s (tests/unit/test_shred.py GRACE, tests/e2e/test_shredding.py)
    assert key_grace_ms(1_000, 1_000) == 4_000
    assert key_grace_ms(2_000, 60_000) == 2 * 2_000 + 60_000 + 1_000
