"""``agents.follow``: tailing across rotation and truncation, resuming from saved positions."""

from __future__ import annotations

import os

from agents.follow import Follower, FollowStopped, Position, StateFile
from stream.parse import get_format

DETAIL = get_format("radius-detail")


def rec(n: int) -> bytes:
    return (f"Sun Nov 22 09:36:08 2026\n\tUser-Name = \"u{n}\"\n\tAcct-Status-Type = Start\n"
            f"\tAcct-Session-Id = \"s{n}\"\n\tNAS-IP-Address = 192.0.2.1\n"
            f"\tFramed-IP-Address = 100.64.0.{n}\n\tEvent-Timestamp = {1718000000 + n}\n\n").encode()


def run(path, start=None, *, actions=(), header_lines=0, fmt=DETAIL):
    """Follow until idle, performing one action (a callable) each time the follower goes idle."""
    todo = list(actions)
    out: list[tuple[bytes, Position]] = []
    idle = {"n": 0}

    def on_idle():
        if todo:
            todo.pop(0)()
        else:
            idle["n"] += 1

    f = Follower(path, start=start, header_lines=header_lines, poll_s=0.01, on_idle=on_idle,
                 stop=lambda: idle["n"] >= 2, warn=lambda m: None)
    try:
        for r in fmt.frame(f.lines()):
            out.append((r, f.pos))
    except FollowStopped:
        pass
    return out


def test_records_end_where_their_blank_line_ends(tmp_path):
    p = tmp_path / "detail"
    p.write_bytes(rec(1) + rec(2) + rec(3)[:40])  # third record half-written
    got = run(p)
    assert [r for r, _ in got] == [rec(1).rstrip(b"\n"), rec(2).rstrip(b"\n")]
    assert got[-1][1].offset == len(rec(1) + rec(2))


def test_resume_neither_skips_nor_repeats(tmp_path):
    p = tmp_path / "detail"
    p.write_bytes(rec(1) + rec(2))
    first = run(p)
    with open(p, "ab") as f:
        f.write(rec(3))
    again = run(p, start=first[-1][1])
    assert [r for r, _ in again] == [rec(3).rstrip(b"\n")]


def test_rotation_by_rename_drains_old_file_then_reads_new(tmp_path):
    p = tmp_path / "detail"
    p.write_bytes(rec(1))

    def rotate():
        with open(p, "ab") as f:
            f.write(rec(2)[:-1])  # last record lacks its blank line when the file is rotated
        os.rename(p, tmp_path / "detail.1")
        p.write_bytes(rec(3))

    got = run(p, actions=[rotate])
    assert [r for r, _ in got] == [rec(i).rstrip(b"\n") for i in (1, 2, 3)]
    assert got[-1][1].ino == os.stat(p).st_ino


def test_restart_after_rotation_while_stopped_finds_the_old_inode(tmp_path):
    p = tmp_path / "detail"
    p.write_bytes(rec(1))
    pos = run(p)[-1][1]
    with open(p, "ab") as f:
        f.write(rec(2))
    os.rename(p, tmp_path / "detail-20240610")
    p.write_bytes(rec(3))
    got = run(p, start=pos)
    assert [r for r, _ in got] == [rec(2).rstrip(b"\n"), rec(3).rstrip(b"\n")]


def test_truncation_restarts_at_zero(tmp_path):
    p = tmp_path / "detail"
    p.write_bytes(rec(1) + rec(2))

    def truncate():
        p.write_bytes(rec(3))  # copytruncate: same inode, shorter

    got = run(p, actions=[truncate])
    assert [r for r, _ in got] == [rec(i).rstrip(b"\n") for i in (1, 2, 3)]


def test_kea_csv_resume_replays_the_header(tmp_path):
    kea = get_format("kea-csv")
    header = b"address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context\n"
    row1 = b"10.0.0.1,aa:bb:cc:dd:ee:01,,20,1718000020,1,0,0,,0,\n"
    row2 = b"10.0.0.2,aa:bb:cc:dd:ee:02,,20,1718000020,1,0,0,,0,\n"
    p = tmp_path / "kea-leases4.csv"
    p.write_bytes(header + row1)
    pos = run(p, fmt=kea, header_lines=kea.header_lines)[-1][1]
    with open(p, "ab") as f:
        f.write(row2)
    got = run(p, start=pos, fmt=kea, header_lines=kea.header_lines)
    assert [r for r, _ in got] == [header + row2.rstrip(b"\n")]
    assert len(kea.parse(got[0][0], operator="op")) == 1


def test_state_file_round_trip(tmp_path):
    s = StateFile(tmp_path / "sub" / "state.json")
    assert s.load() is None
    s.save(Position(1, 2, 3))
    assert s.load() == Position(1, 2, 3)
