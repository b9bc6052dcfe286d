"""The model-based checker's short run (a few minutes): every fault kind once, lookups compared
with the reference model after each, the statistics and dead-letter topics checked, then the
expiry phase.  Any mismatch fails with the seed, the key's history and both answers.
``IPANON_CHECKER_SEED`` picks another history (docs/checker.md)."""

from __future__ import annotations

import json
import os

import pytest


@pytest.mark.broker
@pytest.mark.slow
def test_checker_short_run(broker, tmp_path):
    from tests.checker.driver import Params, run

    reports: list[str] = []
    seed = int(os.environ.get("IPANON_CHECKER_SEED", "14"))
    res = run(Params(seed=seed, events=1500, restarts=4, lookups=500, restart_probe=40), broker, tmp_path,
              report=reports.append)
    assert res["mismatches"] == 0, f"seed {seed}: {json.dumps(res)}\n" + "\n\n".join(reports)
    assert res["lookups"] >= 450 and res["events"] >= 1300 and res["expiry_checked"] > 0
    assert set(res["restart_kinds"]) >= {"sigterm", "sigkill", "twin-join", "twin-leave", "broker"}
