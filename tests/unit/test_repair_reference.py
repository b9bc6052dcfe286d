"""``stream.intervals._repair`` against the straightforward definition it replaced.

``_repair`` cuts each interval at the first later start of another holder in its slot and
realm.  The reference below is that definition word for word (scan every later interval, ask
``Interval.same_slot``); the production version scans per port block when the blocks partition
the intervals, and everything otherwise.  Random keys must give identical intervals either way,
with both paths (grouped and full scan) exercised."""

from __future__ import annotations

import random

from stream import intervals as iv
from stream.intervals import Interval


def _repair_reference(ivs, realm_of=None):
    if len(ivs) < 2:
        return tuple(ivs)
    ivs.sort(key=lambda x: (x.start_ms, x.port_first or 0))
    for i, cur in enumerate(ivs):
        for later in ivs[i + 1:]:
            if later.start_ms <= cur.start_ms or (later.holder == cur.holder and later.session == cur.session
                                                  and later.vrf == cur.vrf):
                continue
            if not cur.same_slot(later):
                continue
            if realm_of is not None and realm_of(cur.nas) != realm_of(later.nas):
                continue
            if cur.end_ms is None or cur.end_ms > later.start_ms:
                cur = iv._moved(cur, cur.start_ms, later.start_ms, cur.last_ms, cur.until_ms)
                ivs[i] = cur
            break
    return tuple(ivs)


# disjoint blocks, a block touching another at one port, one overlapping two, one inside another
DISJOINT = [(1024 + 512 * k, 1535 + 512 * k) for k in range(8)]
AWKWARD = [(1535, 1600), (1024, 1279), (2000, 2600)]
REALMS = {"nas-a": "north", "nas-b": "south", "nas-c": "north"}


def _random_key(rng: random.Random, n: int, blocks, protos, ports: bool) -> list[Interval]:
    out = []
    for _ in range(n):
        start = rng.randrange(0, 400)
        end = rng.choice([None, start + rng.randrange(0, 120)])
        first, last = rng.choice(blocks) if ports else (None, None)
        out.append(Interval(start, end, rng.choice(["h1", "h2", "h3", "h4"]), session=rng.choice([None, "s1", "s2"]),
                            nas=rng.choice(["nas-a", "nas-b", "nas-c", None]), last_ms=(end or start),
                            port_first=first, port_last=last, vrf=rng.choice([None, None, "v1"]),
                            proto=rng.choice(protos)))
    return out


def test_repair_equals_the_reference_on_random_keys_on_both_paths():
    rng = random.Random(16)
    grouped = scanned = 0
    shapes = [
        (DISJOINT, [None], True),                    # port blocks, no protocol: grouped
        (DISJOINT, [6, 17], True),                   # per-protocol blocks: grouped
        (DISJOINT, [None, 6], True),                 # mixed "every protocol" and TCP: full scan
        (DISJOINT + AWKWARD, [None], True),          # touching / overlapping / nested: full scan
        (DISJOINT, [None], False),                   # an address slot (RADIUS, DHCP): full scan
    ]
    for case in range(3000):
        blocks, protos, ports = shapes[case % len(shapes)]
        ivs = _random_key(rng, rng.randrange(0, 30), blocks, protos, ports)
        realm_of = REALMS.get if case % 3 == 0 else None
        if len(ivs) > 2:
            if iv._slot_groups(sorted(ivs, key=iv._start_then_port)) is None:
                scanned += 1
            else:
                grouped += 1
        assert iv._repair(list(ivs), realm_of) == _repair_reference(list(ivs), realm_of), case
    assert grouped > 800 and scanned > 1200


def test_repair_equals_the_reference_on_a_busy_public_address():
    """A CGNAT public address with hundreds of blocks over 60 slots, some re-used by the same
    inside address, some still open (the case the grouped scan is for)."""
    rng = random.Random(7)
    ivs = []
    for k in range(600):
        first, last = DISJOINT[k % 8] if k % 2 else (8192 + 256 * (k % 52), 8447 + 256 * (k % 52))
        start = k * 10 + rng.randrange(0, 30)
        ivs.append(Interval(start, rng.choice([None, start + rng.randrange(5, 400)]), f"100.64.0.{rng.randrange(40)}",
                            last_ms=start, port_first=first, port_last=last))
    assert iv._slot_groups(sorted(ivs, key=iv._start_then_port)) is not None
    got = iv._repair(list(ivs))
    assert got == _repair_reference(list(ivs))
    assert sum(a != b for a, b in zip(got, sorted(ivs, key=iv._start_then_port))) > 50  # it did cut


def test_slot_groups_refuses_what_is_not_a_partition():
    def one(first, last, proto=None):
        return Interval(0, None, "h", port_first=first, port_last=last, proto=proto)

    assert iv._slot_groups([one(1, 10), one(11, 20), one(1, 10)]) == [[0, 2], [1]]
    assert iv._slot_groups([one(1, 10, 6), one(1, 10, 17)]) == [[0], [1]]
    assert iv._slot_groups([one(1, 10), one(10, 20)]) is None        # touch at port 10
    assert iv._slot_groups([one(1, 100), one(20, 30)]) is None       # nested
    assert iv._slot_groups([one(1, 10, None), one(11, 20, 6)]) is None  # "every protocol" beside TCP
    assert iv._slot_groups([one(1, 10), one(None, None)]) is None    # an address-slot interval
    assert iv._slot_groups([one(10, 1)]) is None                     # not a range
