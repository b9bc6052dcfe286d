"""The topics and the worker agree on the numbers behind the promise, or the worker does not start.

``ipanon topics apply`` and ``ipanon worker`` plan with the same ``Settings`` (flags, then
IPANON_* variables, then defaults).  Topics applied for a faster heartbeat than the worker's
have segments that roll later than the worker's plan allows: the worker must refuse to run on
them with one clear line, not keep data past the promise."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agents.keystore import ensure_demo_keys
from agents.runtime import apply_topics, prepare
from agents.settings import Settings
from stream.errors import ConfigError
from tests.conftest import REPO

pytestmark = pytest.mark.broker


def _settings(bootstrap, tmp_path, unique, **kw) -> Settings:
    return Settings(bootstrap=bootstrap, app_id=f"pa{unique}", topic_prefix=f"pa{unique}",
                    operators_dir=REPO / "config" / "operators", keys_dir=tmp_path / "keys",
                    data_dir=tmp_path / "data", **kw)


def test_worker_refuses_topics_applied_for_another_heartbeat(bootstrap, tmp_path, unique):
    ensure_demo_keys(tmp_path / "keys", ["connect2ip", "framsteget", "hektor", "junet", "op003"])
    apply_topics(_settings(bootstrap, tmp_path, unique, heartbeat_ms=1_000))
    # the same parameters: the worker starts
    ops, plan = prepare(_settings(bootstrap, tmp_path, unique, heartbeat_ms=1_000))
    assert plan.params.heartbeat_ms == 1_000 and set(ops) == {"connect2ip", "framsteget", "hektor", "junet", "op003"}
    # a slower heartbeat than the topics were planned for: refused before anything starts
    with pytest.raises(ConfigError) as e:
        prepare(_settings(bootstrap, tmp_path, unique, heartbeat_ms=600_000))
    assert "budget" in str(e.value) or "promise" in str(e.value)

    p = subprocess.run([sys.executable, "-m", "agents.cli", "worker", "--bootstrap", bootstrap,
                        "--app-id", f"pa{unique}", "--topic-prefix", f"pa{unique}",
                        "--keys", str(tmp_path / "keys"), "--data-dir", str(tmp_path / "data"),
                        "--web-port", "0", "--heartbeat-ms", "600000"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert "Traceback" not in p.stderr and "ipanon:" in p.stderr, p.stderr[-2000:]
