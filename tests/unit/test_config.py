"""Operator profiles: every seed profile loads with the values its policy sentence gives, and
every kind of bad profile is a ConfigError naming the file and the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stream.config import (AddressScheme, format_duration, load_operator, load_operators,
                           parse_duration, parse_operator)
from stream.errors import ConfigError

OPERATORS = Path(__file__).resolve().parents[2] / "config" / "operators"
DAY = 86_400_000

MINIMAL = """
name = "acme"
[identity]
[purposes.lawful_access]
promise = "24h"
[purposes.statistics]
promise = "24h"
consent_required = false
"""


def test_every_seed_profile_loads():
    ops = load_operators(OPERATORS)
    assert sorted(ops) == ["connect2ip", "framsteget", "hektor", "junet", "op003"]
    for op in ops.values():
        assert op.path.endswith(f"{op.name}.toml")
        assert op.lawful_access.source, f"{op.name}: the promise must cite its policy sentence"
        assert op.notes.strip(), f"{op.name}: documented choices missing"


def test_seed_promises_match_the_policies():
    ops = load_operators(OPERATORS)
    assert ops["connect2ip"].lawful_access.promise_ms == DAY           # "inom högt 24 timmar"
    assert ops["framsteget"].lawful_access.promise_ms == 21 * DAY      # "i tre veckor"
    assert ops["junet"].lawful_access.promise_ms == 181 * DAY          # "6 månader", shortest span
    assert ops["hektor"].lawful_access.legal_minimum_ms == 306 * DAY   # LEK 10 months, longest span
    assert ops["hektor"].identity.radius_attribute == "Calling-Station-Id"
    assert ops["junet"].statistics.consent_required is True            # "samtycke (trafikuppgifter)"
    assert ops["hektor"].statistics.consent_required is True
    assert ops["connect2ip"].statistics.consent_required is False
    assert ops["connect2ip"].statistics.address == AddressScheme("truncate", 24, 48)  # "anonymiseras"
    for op in ops.values():
        assert op.statistics.k == 10 and op.statistics.bucket_ms == 3_600_000


def test_every_profile_cites_its_seed_policy():
    """The facts taken from a seed policy live in the profile itself (its ``seed`` file name and
    the quoted sentence per purpose); the policy texts are not part of the repository."""
    ops = load_operators(OPERATORS)
    seeds = [op.seed for op in ops.values()]
    assert all(re.fullmatch(r"\d{3}_[0-9a-f]{16}\.txt", s) for s in seeds), seeds
    assert len(set(seeds)) == len(seeds)
    for op in ops.values():
        assert op.lawful_access.source.strip() and op.statistics.source.strip(), op.name
    # the quoted sentence states the duration the promise encodes
    for name, words in (("connect2ip", "24 timmar"), ("framsteget", "tre veckor"), ("junet", "6 månader")):
        assert words in ops[name].lawful_access.source, name


def test_defaults():
    op = parse_operator(MINIMAL, file="acme.toml")
    assert op.statistics.k == 10
    assert op.statistics.bucket_ms == 3_600_000
    assert op.statistics.aggregates_promise_ms == DAY
    assert op.key_epoch_ms == DAY                      # min(24h, statistics promise)
    assert op.identity.radius_attribute == "User-Name"
    short = parse_operator(MINIMAL.replace('promise = "24h"\nconsent', 'promise = "60s"\nconsent'), file="acme.toml")
    assert short.key_epoch_ms == 60_000
    short_raw = parse_operator(MINIMAL.replace('"24h"', '"60s"', 1), file="acme.toml")
    assert short_raw.key_epoch_ms == DAY  # the lawful-access promise does not bound statistics keys


@pytest.mark.parametrize("text,ms", [("24h", DAY), ("21d", 21 * DAY), ("90s", 90_000), ("500ms", 500),
                                     ("1h30m", 5_400_000), ("2w", 14 * DAY)])
def test_parse_duration(text, ms):
    assert parse_duration(text) == ms


@pytest.mark.parametrize("bad", ["", "24", "6mo", "1y", "h", "24 h", "-1h", "1.5h", "1h 30m", "1x"])
def test_parse_duration_rejects(bad):
    with pytest.raises(ConfigError, match="field"):
        parse_duration(bad, where="field")


def test_format_duration():
    assert format_duration(82_092_500) == "22h 48m"
    assert format_duration(None) == "∞"
    assert format_duration(8_000) == "8s"
    assert format_duration(181 * DAY) == "181d"


def _bad(replace: str, by: str) -> str:
    assert replace in MINIMAL
    return MINIMAL.replace(replace, by, 1)


@pytest.mark.parametrize("text,field", [
    (MINIMAL + "colour = 1\n", "colour"),
    (_bad("[identity]", "[identity]\nradius = 'User-Name'"), "identity.radius"),
    (_bad('promise = "24h"\n[purposes.statistics]', 'promise = "24h"\nlegal_minimun = "1h"\n[purposes.statistics]'),
     "purposes.lawful_access.legal_minimun"),
    (_bad("consent_required = false", "consent_required = false\nkk = 5"), "purposes.statistics.kk"),
    (MINIMAL + "[purposes.marketing]\npromise = '1d'\n", "purposes.marketing"),
    (_bad('promise = "24h"', 'promise = "6 months"'), "purposes.lawful_access.promise"),
    (_bad('promise = "24h"', 'promise = 24'), "purposes.lawful_access.promise"),
    (_bad('promise = "24h"', 'promise = "0s"'), "purposes.lawful_access.promise"),
    (_bad('promise = "24h"\n[purposes.statistics]', '[purposes.statistics]'), "purposes.lawful_access.promise"),
    (_bad('promise = "24h"\n[purposes.statistics]', 'promise = "24h"\nlegal_minimum = "306d"\n[purposes.statistics]'),
     "purposes.lawful_access.legal_minimum"),
    (_bad("consent_required = false", "consent_required = 'no'"), "purposes.statistics.consent_required"),
    (_bad("consent_required = false\n", ""), "purposes.statistics.consent_required"),
    (_bad("consent_required = false", "consent_required = false\nk = 1"), "purposes.statistics.k"),
    (_bad("consent_required = false", "consent_required = false\nbucket = '7m'"), "purposes.statistics.bucket"),
    (_bad("consent_required = false", "consent_required = false\naddress = 'rot13'"), "purposes.statistics.address"),
    (_bad("consent_required = false", "consent_required = false\naddress = 'truncate:/33,/48'"),
     "purposes.statistics.address"),
    (_bad("consent_required = false", "consent_required = false\nsubscriber = 'md5'"), "purposes.statistics.subscriber"),
    (_bad("[identity]", "[identity]\nradius_attribute = 'Framed-IP-Address'"), "identity.radius_attribute"),
    (_bad("[identity]", "[identity]\ndhcp_identifier_order = ['mac']"), "identity.dhcp_identifier_order"),
    (_bad("[identity]", "[identity]\ndhcp_identifier_order = ['duid', 'duid']"), "identity.dhcp_identifier_order"),
    (_bad('name = "acme"', 'name = "other"'), "name"),
    (_bad('name = "acme"', 'name = "Acme Corp"'), "name"),
    (_bad('name = "acme"', 'name = "acme"\nkey_epoch = "2d"'), "key_epoch"),
    (_bad("[identity]\n", ""), "identity"),
    (MINIMAL + "[[", "not valid TOML"),
])
def test_bad_profiles_name_file_and_field(text, field):
    with pytest.raises(ConfigError) as e:
        parse_operator(text, file="acme.toml")
    msg = str(e.value)
    assert msg.startswith("acme.toml: "), msg
    assert field in msg, msg


def test_load_operator_keeps_path_and_reports_it(tmp_path):
    p = tmp_path / "acme.toml"
    p.write_text(MINIMAL.replace('promise = "24h"', 'promise = "soon"', 1))
    with pytest.raises(ConfigError, match=r"acme\.toml: purposes\.lawful_access\.promise"):
        load_operator(p)
    p.write_text(MINIMAL)
    assert load_operator(p).path == str(p)


def test_load_operators_refuses_empty_or_missing_dir(tmp_path):
    with pytest.raises(ConfigError, match="no operator profiles"):
        load_operators(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_operators(tmp_path / "nope")


def test_statistics_counters_and_erasure_keys():
    """counters = log2 | drop | exact (default log2: exact counters re-identify); erasure only
    with consent."""
    import pytest as _pytest

    from stream.config import parse_operator as _p
    from stream.errors import ConfigError as _E

    base = 'name = "x"\n[identity]\n[purposes.lawful_access]\npromise = "24h"\n[purposes.statistics]\npromise = "24h"\n'
    assert _p(base + "consent_required = false\n", file="x.toml").statistics.counters == "log2"
    assert _p(base + 'consent_required = false\ncounters = "drop"\n', file="x.toml").statistics.counters == "drop"
    with _pytest.raises(_E, match=r"^x\.toml: purposes\.statistics\.counters: unknown scheme 'round'"):
        _p(base + 'consent_required = false\ncounters = "round"\n', file="x.toml")
    with _pytest.raises(_E, match=r"^x\.toml: purposes\.statistics\.erasure: applies only with consent_required"):
        _p(base + 'consent_required = false\nerasure = "1h"\n', file="x.toml")
    assert _p(base + 'consent_required = true\nerasure = "1h"\n', file="x.toml").statistics.erasure_ms == 3_600_000
    assert _p(base + "consent_required = false\n", file="x.toml").statistics.erasure_ms is None
