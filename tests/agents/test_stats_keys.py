"""Statistics key epochs on disk (agents.ratchet_store) and `ipanon keys show|rotate`."""

from __future__ import annotations

import os
import stat

import pytest

from agents.cli import main
from agents.keystore import ensure_demo_keys
from agents.ratchet_store import index_ring, load_or_create, ratchet_path, read_ring, write_ring
from stream.consent import consent_key
from stream.errors import ConfigError, CryptoError
from stream.keyring import Keyring, epoch_of


@pytest.fixture
def keys(tmp_path):
    d = tmp_path / "keys"
    ensure_demo_keys(d, ["junet", "connect2ip"])
    return d


def seed(keys, op="junet"):
    return bytes.fromhex((keys / f"{op}.key").read_text().strip())


def test_created_at_the_asked_epoch_mode_0600_and_same_keys_as_the_seed(keys):
    ring = load_or_create(keys, "junet", epoch=5)
    p = ratchet_path(keys, "junet")
    assert stat.S_IMODE(p.stat().st_mode) == 0o600 and ring.oldest_epoch == 5
    assert read_ring(keys, "junet").oldest_epoch == 5
    ref = Keyring.create("junet", seed(keys))
    assert ring.hmac(7).pseudonym("x") == ref.hmac(7).pseudonym("x")
    with pytest.raises(CryptoError):
        read_ring(keys, "junet").hmac(4)               # never written down
    assert seed(keys).hex() not in p.read_bytes().hex()


def test_state_only_moves_forward(keys):
    old = load_or_create(keys, "junet", epoch=3)
    assert main(["keys", "rotate", "--operator", "junet", "--keys", str(keys), "--to-epoch", "9"]) == 0
    write_ring(keys, old)                              # a worker holding epoch 3 persists…
    assert old.oldest_epoch == 9                       # …and is advanced, not the file rolled back
    assert read_ring(keys, "junet").oldest_epoch == 9
    assert load_or_create(keys, "junet", epoch=2).oldest_epoch == 9


def test_group_readable_ratchet_is_refused(keys):
    load_or_create(keys, "junet", epoch=0)
    os.chmod(ratchet_path(keys, "junet"), 0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_ring(keys, "junet")


def test_consent_keys_agree_between_seed_and_ratchet(keys):
    from_seed = index_ring(keys, "junet")              # no ratchet yet: derived, nothing written
    assert not ratchet_path(keys, "junet").exists()
    load_or_create(keys, "junet", epoch=40)
    assert consent_key(index_ring(keys, "junet"), "kund-1") == consent_key(from_seed, "kund-1")


def test_keys_show_and_rotate_cli(keys, tmp_path, capsys):
    assert main(["keys", "show", "--keys", str(keys)]) == 0
    out = capsys.readouterr().out
    assert "junet" in out and "none yet" in out and seed(keys).hex() not in out
    assert main(["keys", "rotate", "--operator", "junet", "--keys", str(keys)]) == 0
    import time
    now_epoch = epoch_of(time.time_ns() // 1_000_000, 7 * 86_400_000)
    assert read_ring(keys, "junet").oldest_epoch == now_epoch
    capsys.readouterr()
    assert main(["keys", "show", "--operator", "junet", "--keys", str(keys)]) == 0
    line = [l for l in capsys.readouterr().out.splitlines() if l.startswith("junet")][0]
    assert f" {now_epoch} " in line and line.count(str(now_epoch)) >= 2   # current == oldest live
    assert main(["keys", "rotate", "--operator", "nobody", "--keys", str(keys)]) == 2
