"""The README's `ipanon query` example works on a fresh checkout: git keeps no file modes, so
the demo private keys arrive 0644, which ipanon refuses; the example's own preparation must make
every key it names loadable.  Reproduced here: the demo keys copied with a clone's 0644 modes,
the example's lines before the first `ipanon` command run in that copy, then each `--key` of
the example loaded the way `ipanon query` loads it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from agents.commands.keys import load_private
from stream.errors import IpanonError
from tests.conftest import REPO


def _query_block() -> list[str]:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    (block,) = [b for b in blocks if "ipanon query submit" in b]
    return block.splitlines()


def test_the_example_prepares_the_keys_it_uses(tmp_path):
    lines = _query_block()
    first = next(i for i, l in enumerate(lines) if l.startswith("ipanon "))
    prep = [l for l in lines[:first] if l.strip()]
    keys = re.findall(r"--key (\S+)", "\n".join(lines))
    assert keys and prep, "the example names keys but does nothing about their modes"
    demo = tmp_path / "config" / "keys" / "demo"
    demo.mkdir(parents=True)
    for p in (REPO / "config" / "keys" / "demo").glob("*.pem"):
        shutil.copy(p, demo / p.name)
        os.chmod(demo / p.name, 0o644)               # what a fresh clone has
    kinds = {".sign.pem": "ed25519", ".enc.pem": "x25519"}
    kind = lambda k: next(v for s, v in kinds.items() if k.endswith(s))  # noqa: E731
    with pytest.raises(IpanonError, match="chmod 600"):
        load_private(tmp_path / keys[0], kind(keys[0]))   # refused as cloned
    for line in prep:
        assert subprocess.run(["bash", "-c", line], cwd=tmp_path, timeout=30).returncode == 0, line
    for k in keys:
        load_private(tmp_path / k, kind(k))              # loadable after the example's own step


def test_make_install_sets_the_demo_key_modes_too():
    p = subprocess.run(["make", "-n", "install"], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "chmod 600 config/keys/demo/*.pem" in p.stdout
