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


def _relinked(keys, op, epoch, subjects, pseudonyms) -> int:
    """The seed-relink attack on a key directory: every file tried as a seed and as a ratchet."""
    import re

    n = 0
    for f in keys.iterdir():
        data = f.read_bytes()
        rings = []
        if re.fullmatch(r"[0-9a-f]{64}", data.decode("ascii", "replace").strip()):
            rings.append(Keyring.create(op, bytes.fromhex(data.decode().strip())))
        try:
            rings.append(Keyring.from_bytes(data))
        except CryptoError:
            pass
        for r in rings:
            try:
                n += sum(r.hmac(epoch).pseudonym(s) in pseudonyms for s in subjects)
            except CryptoError:
                pass
    return n


def test_destroying_a_live_epoch_retires_the_seed_and_nothing_on_disk_relinks_it(keys):
    subjects = [f"kund-{i}@isp.example" for i in range(16)]
    ring = load_or_create(keys, "junet", epoch=30)           # first start: from the seed
    assert (keys / "junet.key").exists()                     # nothing destroyed yet: kept
    pseudonyms = {ring.hmac(30).pseudonym(s) for s in subjects}
    assert _relinked(keys, "junet", 30, subjects, pseudonyms) == 32   # the seed and the ratchet
    on_disk = read_ring(keys, "junet")                       # the worker's tick, as it runs
    ring.destroy_before(max(31, on_disk.oldest_epoch))
    write_ring(keys, ring)
    assert not (keys / "junet.key").exists()
    assert _relinked(keys, "junet", 30, subjects, pseudonyms) == 0
    assert (keys / "connect2ip.key").exists()                # another operator's seed is untouched


def test_worker_key_material_needs_the_seed_only_until_the_ratchet_exists(keys):
    from agents.ratchet_store import key_material

    assert len(key_material(keys, "junet")) == 32
    load_or_create(keys, "junet", epoch=3)
    assert main(["keys", "rotate", "--operator", "junet", "--keys", str(keys), "--to-epoch", "4"]) == 0
    assert not (keys / "junet.key").exists()
    assert key_material(keys, "junet") == b""                # starts from the ratchet alone
    with pytest.raises(ConfigError, match="no key file"):
        key_material(keys, "framsteget")                     # neither seed nor ratchet


def test_rotate_says_what_it_destroyed_or_that_nothing_was(keys, capsys):
    import time

    now_epoch = epoch_of(time.time_ns() // 1_000_000, 7 * 86_400_000)
    load_or_create(keys, "junet", epoch=now_epoch - 2)
    assert main(["keys", "rotate", "--operator", "junet", "--keys", str(keys)]) == 0
    out = capsys.readouterr().out
    assert f"destroyed statistics epochs {now_epoch - 2}..{now_epoch - 1}" in out
    assert "seed file junet.key removed" in out
    assert main(["keys", "rotate", "--operator", "junet", "--keys", str(keys)]) == 0
    out = capsys.readouterr().out
    assert f"nothing destroyed: the oldest live epoch is already {now_epoch}" in out
    assert read_ring(keys, "junet").oldest_epoch == now_epoch


def test_rotate_to_a_future_epoch_is_refused_and_changes_nothing(keys, capsys):
    import time

    now_epoch = epoch_of(time.time_ns() // 1_000_000, 7 * 86_400_000)
    load_or_create(keys, "junet", epoch=now_epoch)
    assert main(["keys", "rotate", "--operator", "junet", "--keys", str(keys), "--to-epoch", str(now_epoch + 1)]) == 2
    err = capsys.readouterr().err
    assert "lies in the future" in err and "refused" in err and "Traceback" not in err
    assert read_ring(keys, "junet").oldest_epoch == now_epoch and (keys / "junet.key").exists()
