"""The alert rules in deploy/prometheus pass Debian's promtool: syntax (`check rules`) and the
unit cases in ipanon-rules.test.yml, one of which fires the compliance alert."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import REPO

RULES = REPO / "deploy" / "prometheus"
promtool = shutil.which("promtool")
pytestmark = pytest.mark.skipif(promtool is None, reason="promtool not installed (apt-get install prometheus)")


def test_rules_pass_promtool_check():
    r = subprocess.run([promtool, "check", "rules", "ipanon-rules.yml"], cwd=RULES, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 14 rules found" in r.stdout + r.stderr  # 9 + two erasure canaries + large values + stalls + lost


def test_rule_unit_cases_fire_the_compliance_alert():
    text = (RULES / "ipanon-rules.test.yml").read_text()
    assert "alertname: IpanonComplianceRatioHigh" in text and "exp_alerts:\n          - exp_labels" in text
    r = subprocess.run([promtool, "test", "rules", "ipanon-rules.test.yml"], cwd=RULES, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr


def test_a_broken_expectation_fails(tmp_path):
    """The unit cases can fail: the same case expecting no alert at 5m is rejected."""
    bad = (RULES / "ipanon-rules.test.yml").read_text().replace(
        "      - eval_time: 5m\n        alertname: IpanonComplianceRatioHigh\n        exp_alerts:\n",
        "      - eval_time: 5m\n        alertname: IpanonComplianceRatioHigh\n        exp_alerts: []\n"
        "      - eval_time: 6m\n        alertname: IpanonComplianceRatioHighX\n        exp_alerts:\n", 1)
    shutil.copy(RULES / "ipanon-rules.yml", tmp_path / "ipanon-rules.yml")
    (tmp_path / "t.yml").write_text(bad)
    r = subprocess.run([promtool, "test", "rules", "t.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode != 0


def test_canary_alert_case_can_fail(tmp_path):
    """The canary case is not vacuous: with the measured figure under the promise, the critical
    alert it expects at 2m does not fire and promtool rejects the case."""
    text = (RULES / "ipanon-rules.test.yml").read_text()
    assert "alertname: IpanonCanaryPromiseBroken" in text
    bad = text.replace("values: '10 55 70'", "values: '10 55 59'", 1)
    assert bad != text
    shutil.copy(RULES / "ipanon-rules.yml", tmp_path / "ipanon-rules.yml")
    (tmp_path / "t.yml").write_text(bad)
    r = subprocess.run([promtool, "test", "rules", "t.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode != 0 and "IpanonCanaryPromiseBroken" in r.stdout + r.stderr
