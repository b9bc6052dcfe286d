"""Helpers for parser tests: parse a file the way ``ipanon parse`` does, without the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "tests" / "data"
SAMPLES = DATA / "samples"


def parse_file(fmt: str, path: Path, **ctx) -> list[dict]:
    from stream.parse import detect, get_format

    f = get_format(fmt)
    out = []
    with open(path, "rb") as fh:
        for rec in f.frame(fh):
            p = get_format(detect(rec)) if fmt == "auto" else f
            out.extend(b.to_dict() for b in p.parse(rec, operator="op", **ctx))
    return out


@pytest.fixture
def samples() -> Path:
    return SAMPLES
