"""The outbox tells Faust's sensors about a flush's writes once per topic batch where a sensor
only counts (ipanon's records-out sensor, Faust's Monitor) and once per write otherwise: every
sensor ends with what a call per write with a value (Faust's own sends) would have given it."""

from __future__ import annotations

from faust.sensors.base import Sensor, SensorDelegate
from faust.sensors.monitor import Monitor

from agents.metrics import Metrics, _sensor_class
from agents.outbox import _count_out, _Sent
from agents.topics import Topics


class _Beacon:
    def new(self, _sensor):
        return None


class _App:
    beacon = _Beacon()


class _Recording(Sensor):
    """A sensor the outbox knows nothing about: called per write, with each write's sizes."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.calls: list = []

    def on_send_initiated(self, producer, topic, message, keysize, valsize):
        self.calls.append((topic, message.value, keysize, valsize))


def _sensors():
    m = Metrics({}, clock=lambda: 0, table=None, names=Topics("p"))
    mon, rec = Monitor(), _Recording()
    d = SensorDelegate(_App())
    for s in (mon, _sensor_class()(m), rec):
        d.add(s)
    return d, m, mon, rec


def _out(m: Metrics) -> dict:
    return {tuple(s.labels.items()): s.value for fam in m.records_out.collect() for s in fam.samples
            if s.name.endswith("_total")}


WRITES = {"p-mapping-changelog": [(None, b"k%d" % i, (b"v" * i) if i % 5 else None, i % 4, None, None) for i in range(23)],
          "p-deadletter": [(None, None, b'{"reason":"x"}', None, None, None)] * 3,
          "p-stats": [(None, b"t", None, 0, None, None)]}


def test_batched_counts_equal_a_call_per_write():
    batched, m1, mon1, rec1 = _sensors()
    each, m2, mon2, rec2 = _sensors()
    for topic, ws in WRITES.items():
        _count_out(batched, topic, ws)
        for w in ws:  # the reference: Faust's delegate, once per write with a value
            if w[2] is not None:
                each.on_send_initiated(None, topic, _Sent(w[2]), len(w[1] or b""), len(w[2]))
    assert mon1.messages_sent == mon2.messages_sent == 18 + 3
    assert dict(mon1.messages_sent_by_topic) == dict(mon2.messages_sent_by_topic) == {"p-mapping-changelog": 18, "p-deadletter": 3}
    assert _out(m1) == _out(m2) == {(("role", "changelog"),): 18.0, (("role", "deadletter"),): 3.0}
    assert rec1.calls == rec2.calls and len(rec1.calls) == 21


def test_an_object_that_is_not_faust_s_delegate_is_called_per_write():
    class Plain:
        def __init__(self):
            self.n = 0

        def on_send_initiated(self, producer, topic, message, keysize, valsize):
            self.n += 1

    p = Plain()
    _count_out(p, "t", WRITES["p-mapping-changelog"])
    assert p.n == 18
