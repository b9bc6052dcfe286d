"""Adversarial checks of the stats stage's fast paths (5ea6abf) against the plain definitions
they replace: ``stream.stats.record_json`` against ``compact_json`` on hostile values (quotes,
backslashes, control characters, U+2028, lone surrogates, astral characters, huge and
over-the-limit ints, bools, NaN and infinities); ``decode_contribution``'s one-expression check
against the field-by-field checks on contributions with several fields broken at once; and
``ContributionEncoder`` against ``encode_contribution(contribution(built))`` with its cache warm.
Fixed seeds; no timing."""

from __future__ import annotations

import json
import random

import pytest

from stream import aggregate as agg
from stream import stats
from stream.errors import Rejected
from tests.unit.test_stats_fastpaths import _built, _decode_by_fields

_TEXT = ['"', "\\", "\n", "\x00", "\x1f", "\x7f", "é", "\u2028", "\ud800", "\udfff", "\U0001f600", "a", "/"]


def _hostile_text(rng: random.Random) -> str:
    return "".join(rng.choice(_TEXT) for _ in range(rng.randrange(0, 8)))


def _outcome(f, arg):
    try:
        return "ok", f(arg)
    except Exception as e:  # noqa: BLE001 - the same exception type is part of "the same"
        return "raised", type(e).__name__


def test_record_json_is_compact_json_on_hostile_values():
    rng = random.Random(1)
    pool = [None, 0, -1, 2**70, -(2**64), True, False, 1.5, float("nan"), float("inf"), 10**5000]
    for _ in range(5000):
        d = {k: (_hostile_text(rng) if rng.random() < 0.5 else rng.choice(pool)) for k in stats.FIELDS}
        assert _outcome(stats.record_json, d) == _outcome(stats.compact_json, d), d


def test_decode_fast_check_accepts_nothing_the_field_checks_refuse():
    rng = random.Random(7)
    good = json.loads(agg.encode_contribution(agg.contribution(_built(5, 1)[0]))[1])
    values = [None, True, False, 0, 1, -1, 2, 1.0, 0.0, 1e300, "", "1", "radius", "stop", "nat", [], {}, [1],
              10**30, "\ud800"]
    for _ in range(20_000):
        d = dict(good)
        for _ in range(rng.randrange(1, 4)):
            k = rng.choice([*good, "other"])
            if rng.random() < 0.15:
                d.pop(k, None)
            else:
                d[k] = rng.choice(values)
        raw = json.dumps(d).encode()
        want = _outcome(_decode_by_fields, raw)
        got = _outcome(agg.decode_contribution, raw)
        assert got[0] == want[0] and (got[0] != "ok" or got == want), raw


def test_rejections_keep_their_reason():
    for raw in (b'{"v":1,"octets_in":NaN}', b'{"v":1e999}', b"\xef\xbb\xbf{}", b'{"a":"\xff"}', b'{"v":1} x'):
        with pytest.raises(Rejected) as e:
            agg.decode_contribution(raw)
        assert e.value.reason == "bad-contribution"


def test_contribution_encoder_output_does_not_depend_on_its_cache():
    x = next(b for b in _built(20, 3) if b.record is not None)
    enc = agg.ContributionEncoder()
    assert enc.encode(x) == agg.encode_contribution(agg.contribution(x))  # the cell is now cached
    for name in ("bucket_ms", "bucket_len_ms"):
        odd = x._replace(record={**x.record, name: float(x.record[name])})
        want = agg.encode_contribution(agg.contribution(odd))  # "...000.0": decode_contribution refuses it
        assert agg.ContributionEncoder().encode(odd) == want  # cold cache: the encoder, as promised
        assert enc.encode(odd) == want  # warm cache: must not depend on what was encoded before
