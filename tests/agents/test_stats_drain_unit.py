"""The upgrade drain's decisions without a broker (``agents.stats_drain``), against a fake of
the kafka-python consumer calls it makes (partitions, committed offsets with their metadata,
end offsets).

Reference: the group ``<app id>-stats`` needs draining iff it committed something on the
bindings topic and some partition is neither read to its end nor marked drained; the drain
then runs the old stage in that group until every partition is read up to the ends taken at
its start (marked drained), stops the stage and says so; with nothing to drain it never makes
a stage."""

from __future__ import annotations

import asyncio
from collections import namedtuple
from types import SimpleNamespace

import pytest

from agents import stats_drain as D

TOPIC = "tsd-bindings"
GROUP = "tsd-stats"
OM = namedtuple("OM", "offset metadata leader_epoch")


class FakeKafka:
    """One broker's view: end offsets per partition and the group's commits (offset, metadata)."""

    def __init__(self, ends: dict[int, int], commits: dict[int, tuple[int, str]]):
        self.ends = dict(ends)
        self.commits = dict(commits)
        self.consumers = 0

    def consumer(self, *, client_id=None, group_id=None, **kw):
        self.consumers += 1
        return FakeConsumer(self, group_id)


class FakeConsumer:
    def __init__(self, k: FakeKafka, group: str):
        self.k, self.group = k, group

    def partitions_for_topic(self, topic):
        return set(self.k.ends) if topic == TOPIC else None

    def committed(self, tp, metadata=False):
        assert self.group == GROUP, "committed offsets asked without the stats group"
        v = self.k.commits.get(tp.partition)
        if v is None:
            return None
        return OM(v[0], v[1], -1) if metadata else v[0]

    def end_offsets(self, tps):
        return {tp: self.k.ends[tp.partition] for tp in tps}

    def close(self):
        pass


@pytest.mark.parametrize("ends,commits,behind", [
    ({0: 5, 1: 0, 2: 7, 3: 1}, {}, False),                                   # a fresh deployment
    ({0: 5, 1: 0, 2: 7, 3: 1}, {0: (5, ""), 2: (7, ""), 3: (1, "")}, False),  # read to the end
    ({0: 5, 1: 0, 2: 7, 3: 1}, {0: (0, ""), 1: (0, ""), 2: (0, ""), 3: (0, "")}, True),
    ({0: 5, 1: 0, 2: 7, 3: 1}, {0: (5, ""), 2: (6, ""), 3: (1, "")}, True),   # one record left
    ({0: 5, 1: 0, 2: 7, 3: 1}, {2: (3, "")}, True),                           # others never committed
    ({0: 9, 1: 4, 2: 9, 3: 9}, {p: (2, D.DRAINED) for p in range(4)}, False),  # drained before, grown since
    ({0: 9, 1: 4, 2: 9, 3: 9}, {0: (2, D.DRAINED), 1: (2, D.DRAINED), 2: (2, ""), 3: (9, "")}, True),
])
def test_group_behind_decides_as_the_reference(ends, commits, behind):
    k = FakeKafka(ends, commits)
    got = D.group_behind(k, GROUP, TOPIC)
    if behind:
        assert got == ends  # the targets: the ends at this start
    else:
        assert got is None


@pytest.mark.parametrize("commits,reached,marked", [
    ({0: (0, ""), 1: (0, ""), 2: (0, ""), 3: (0, "")}, False, False),
    ({0: (5, ""), 1: (0, ""), 2: (7, ""), 3: (1, "")}, True, False),         # read to the targets, not marked
    ({0: (9, ""), 1: (3, ""), 2: (9, ""), 3: (9, "")}, True, False),         # past them (ingest appended)
    ({0: (5, D.DRAINED), 1: (0, D.DRAINED), 2: (7, D.DRAINED), 3: (1, D.DRAINED)}, True, True),
    ({0: (5, D.DRAINED), 1: (0, D.DRAINED), 2: (6, ""), 3: (1, D.DRAINED)}, False, False),
    ({0: (5, D.DRAINED), 2: (7, D.DRAINED), 3: (1, D.DRAINED)}, True, False),  # partition 1: empty, never committed
])
def test_drained_says_reached_and_marked_as_the_reference(commits, reached, marked):
    targets = {0: 5, 1: 0, 2: 7, 3: 1}
    k = FakeKafka({0: 9, 1: 3, 2: 9, 3: 9}, commits)
    assert D.drained(k, GROUP, TOPIC, targets) == (reached, marked)


class FakeStage:
    """The old stats stage as far as the drain sees it: once running, it commits the partitions
    up to the topic's end one after the other (slower than the drain polls), through the
    drain's commit hook (as ``BatchStage`` does)."""

    def __init__(self, k: FakeKafka, name, topics, handle, role):
        self.k, self.name, self.topics, self.handle, self.role = k, name, topics, handle, role
        self.consumer = None
        self.commit_hook = None
        self.running = self.cancelled = False

    async def run(self):
        self.running = True
        try:
            while True:
                for p, end in sorted(self.k.ends.items()):
                    await asyncio.sleep(0.05)
                    off, meta = self.commit_hook(SimpleNamespace(topic=TOPIC, partition=p), end) \
                        if self.commit_hook else (end, "")
                    self.k.commits[p] = (off, meta)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            self.running = False


def _drain(monkeypatch, k: FakeKafka):
    from agents.settings import Settings

    monkeypatch.setattr(D, "POLL_S", 0.01)
    stages = []

    def make_stage(name, topics, handle, *, role):
        st = FakeStage(k, name, topics, handle, role)
        stages.append(st)
        return st

    async def handle(records):
        return []

    s = Settings(bootstrap="127.0.0.1:1", app_id="tsd", topic_prefix="tsd")
    d = D.StatsDrain(settings=s, topic=TOPIC, handle=handle, make_stage=make_stage)
    d.clients = k
    return d, stages, handle


def test_the_drain_reads_in_the_stats_group_until_every_partition_is_drained_then_stops(monkeypatch):
    k = FakeKafka({0: 5, 1: 0, 2: 7, 3: 1}, {0: (0, ""), 1: (0, ""), 2: (0, ""), 3: (0, "")})
    d, stages, handle = _drain(monkeypatch, k)
    assert d.group == GROUP
    asyncio.run(asyncio.wait_for(d.run(), timeout=10))
    assert d.state == "done" and len(stages) == 1
    st = stages[0]
    assert (st.name, st.topics, st.handle, st.role) == ("stats", [TOPIC], handle, "bindings")
    assert st.cancelled and not st.running
    assert all(k.commits[p][0] >= end and k.commits[p][1] == D.DRAINED for p, end in k.ends.items())
    # the next start: nothing to drain, whatever was appended since
    k.ends = {p: e + 10 for p, e in k.ends.items()}
    d2, stages2, _ = _drain(monkeypatch, k)
    asyncio.run(asyncio.wait_for(d2.run(), timeout=10))
    assert d2.state == "idle" and stages2 == []


@pytest.mark.parametrize("commits", [{}, {0: (5, ""), 1: (0, ""), 2: (7, ""), 3: (1, "")}])
def test_nothing_to_drain_makes_no_stage(monkeypatch, commits):
    k = FakeKafka({0: 5, 1: 0, 2: 7, 3: 1}, commits)
    d, stages, _ = _drain(monkeypatch, k)
    asyncio.run(asyncio.wait_for(d.run(), timeout=10))
    assert d.state == "idle" and stages == [] and k.commits == commits
