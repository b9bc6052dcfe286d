"""Summarise a py-spy ``--format raw`` profile (collapsed stacks): where the worker's time goes.

Prints exactly one JSON line: total samples, the top functions by *self* samples (the frame on
top of the stack) and by *inclusive* samples (anywhere on the stack, counted once per stack),
and a coarse split by area (our code in ``stream/`` and ``agents/``, json, faust/mode,
aiokafka, asyncio, other).  py-spy samples only threads that are running (not idle) unless
asked otherwise, so shares are shares of CPU time.

    python benchmarks/profile_summary.py prof.txt [--top 25]
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^)]*?)(?::\d+)?\)$")

AREAS = (("faust/", "faust"), ("aiokafka/", "aiokafka"), ("kafka/", "kafka-python"), ("mode/", "mode"),
         ("asyncio/", "asyncio"), ("selectors", "asyncio"), ("json/", "json"), ("ipaddress", "ipaddress"),
         ("hmac", "hmac/hashlib"), ("dataclasses", "dataclasses"), ("logging/", "logging"),
         ("colorlog/", "logging"), ("stream/", "ipanon stream"), ("agents/", "ipanon agents"))  # first match wins


def _short(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    f = m["file"]
    for cut in ("site-packages/", "/main/", "python3.11/"):
        if cut in f:
            f = f.split(cut, 1)[1]
    return f"{m['func']} ({f})"


def _area(frame: str) -> str:
    for needle, name in AREAS:
        if needle in frame:
            return name
    return "other"


def summarise(path: str, top: int = 25) -> dict:
    self_c: Counter = Counter()
    incl: Counter = Counter()
    area_self: Counter = Counter()
    total = 0
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        if not line or " " not in line:
            continue
        stack, _, n = line.rpartition(" ")
        try:
            count = int(n)
        except ValueError:
            continue
        frames = [f for f in stack.split(";") if f]
        if frames and frames[0].startswith("process ") or frames and frames[0].startswith("thread "):
            frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        leaf = frames[-1]
        self_c[_short(leaf)] += count
        area_self[_area(leaf)] += count
        for f in {_short(f) for f in frames}:
            incl[f] += count

    def pct(c: Counter) -> list:
        return [[k, round(100 * v / total, 1)] for k, v in c.most_common(top)]

    return {"samples": total, "self_pct": pct(self_c), "inclusive_pct": pct(incl),
            "area_self_pct": {k: round(100 * v / total, 1) for k, v in area_self.most_common()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("profile")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    print(json.dumps(summarise(a.profile, a.top)))


if __name__ == "__main__":
    main()
