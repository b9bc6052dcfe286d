"""``ipanon demo --json`` end to end, as a newcomer runs it: it starts its own broker and
workers, and every check it reports must be correct (the demo compares with the generator's
truth, so these figures are the reference model's verdicts)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.broker, pytest.mark.slow]

KEYS = {"events_in", "radius_in", "dhcp_in", "cgnat_in", "bindings", "stats_out", "aggregates_out", "rejected",
        "lookups_checked", "lookups_correct", "lookups_answered", "lawful_checked", "lawful_correct",
        "expired_checked", "expired_gone", "audit_ok", "stats_raw_identifier_hits", "operators", "processing_s",
        "elapsed_s"}


def test_demo_json_reports_every_check_correct():
    rc = subprocess.run([sys.executable, "-m", "agents.cli", "demo", "--json"], cwd=REPO, capture_output=True,
                        text=True, timeout=900)
    assert rc.returncode == 0, rc.stderr[-3000:]
    s = json.loads(rc.stdout)  # stdout is the one JSON object, progress goes to stderr
    assert set(s) == KEYS
    assert s["operators"] == 5
    # all three families were fed and every good record became a binding; the malformed ones were refused
    assert s["radius_in"] > 0 and s["dhcp_in"] > 0 and s["cgnat_in"] > 0
    assert s["events_in"] == s["radius_in"] + s["dhcp_in"] + s["cgnat_in"]
    assert s["rejected"] == 3
    assert s["bindings"] >= s["events_in"] - s["rejected"]
    assert s["stats_out"] > 0 and s["aggregates_out"] > 0
    assert s["lookups_checked"] > 0 and s["lookups_correct"] == s["lookups_answered"] == s["lookups_checked"]
    assert s["lawful_checked"] >= 2 and s["lawful_correct"] == s["lawful_checked"]
    assert s["expired_checked"] == s["expired_gone"] == 1
    assert s["audit_ok"] is True
    assert s["stats_raw_identifier_hits"] == 0
    # the progress lines show each part of the mission
    for part in ("Kea DHCP", "CGNAT", "signed requests", "IPRED", "not retained", "audit trail ok"):
        assert part in rc.stderr, part
