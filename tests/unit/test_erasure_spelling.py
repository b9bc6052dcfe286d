"""Adversary: a consent withdrawal's erasure notices must reach every statistics record of the
subscriber it stops, whatever spelling of the id the access network logged.

Consent is matched on a normalised id (stream.consent: case, width, surrounding space), so
``ipanon consent withdraw junet Kund-77@isp.example`` stops the records of ``kund-77@…`` and
``KUND-77@…`` from then on.  The notices for the records already emitted name the pseudonym of
the id *as typed*, while each stats record carries the pseudonym of the id *as logged*
(stream.stats: HMAC of the raw subscriber).  A consumer honouring the notices
(``honour_erasures``, the reference model of docs/statistics.md) therefore kept every record
logged under another spelling (2 of 3 here): the withdrawal was not honoured for them.  Now both
pseudonymise the id as consent sees it (``normalise_subscriber``)."""

from __future__ import annotations

import json
from pathlib import Path

from stream.config import load_operators
from stream.consent import erasure_notices, honour_erasures
from stream.keyring import Keyring, epoch_of
from stream.model import Binding, parse_network
from stream.stats import StatsBuilder

OPS = load_operators(Path(__file__).resolve().parents[2] / "config" / "operators")
SEED = bytes(range(32))
T0 = 1_717_999_200_000 + 123_456
LOGGED = ["kund-77@isp.example", "Kund-77@isp.example", "KUND-77@ISP.EXAMPLE"]


def _records(pol, ring):
    bld = StatsBuilder(pol, ring)
    bs = [Binding(kind="radius", action="start", operator=pol.name, ip=parse_network(f"100.64.12.{i + 1}"),
                  subscriber=s, session=f"s{i}", nas="192.0.2.10", at_ms=T0 + i * 1000)
          for i, s in enumerate(LOGGED)]
    return [b.record for b in bld.build_many(bs) if b.record is not None]


def test_a_withdrawal_erases_the_records_of_every_spelling_it_stops():
    pol = OPS["junet"]
    assert pol.statistics.consent_required and pol.statistics.subscriber != "drop"
    ring = Keyring.create(pol.name, SEED, epoch=epoch_of(T0, pol.key_epoch_ms))
    recs = _records(pol, ring)
    assert len(recs) == len(LOGGED) and all(r["subscriber"] for r in recs)
    out = erasure_notices(ring, "Kund-77@isp.example", key_epoch_ms=pol.key_epoch_ms,
                          promise_ms=pol.statistics.erasure_ms, bucket_ms=pol.statistics.bucket_ms,
                          now_ms=T0 + 60_000)
    notices = [json.loads(v) for _k, v in out]
    assert honour_erasures(recs, notices) == []  # before: the kund-77 and KUND-77 records stay
