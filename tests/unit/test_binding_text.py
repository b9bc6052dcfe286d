"""Text fields of a Binding must be valid Unicode (no lone surrogates) and text, whoever builds
the binding: the constructor, the parsers' factories, the bindings topic's JSON, every JSON
input format.  Reference: a value is acceptable iff ``value.encode("utf-8")`` succeeds."""

from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream import model
from stream.errors import Rejected
from stream.model import TEXT_FIELDS, Binding
from stream.parse import get_format

NET = ipaddress.ip_network("100.64.1.2/32")
SURROGATE = "\udca0"


def _radius(**kw) -> dict:
    return {**dict(kind="radius", action="start", operator="op", ip=NET, subscriber="kund-1@isp", session="n/s",
                   nas="192.0.2.10", at_ms=1_718_000_000_000), **kw}


def _encodes(v: str) -> bool:
    try:
        v.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


@pytest.mark.parametrize("field", [f for f in TEXT_FIELDS if f not in ("kind", "action")])
def test_a_lone_surrogate_in_any_text_field_is_rejected(field):
    with pytest.raises(Rejected) as e:
        Binding(**{**_radius(), field: f"x{SURROGATE}y"})
    assert e.value.reason == "bad-encoding" and field in e.value.detail


@pytest.mark.parametrize("field", ["subscriber", "session", "nas", "hwaddr"])
def test_text_fields_must_be_text(field):
    with pytest.raises(Rejected) as e:
        Binding(**{**_radius(), field: 12345})
    assert e.value.reason == "bad-binding"


@given(st.text(min_size=1, max_size=12))
def test_any_text_is_accepted_iff_it_encodes(text):
    try:
        b = Binding(**_radius(subscriber=text))
        ok = True
    except Rejected as e:
        assert e.reason == "bad-encoding"
        ok = False
    assert ok == _encodes(text)
    if ok:
        assert Binding.from_json(b.to_json()) == b


def test_the_parsers_factories_check_text_too():
    with pytest.raises(Rejected):
        model.radius_binding("start", "op", NET, "a" + SURROGATE, "s", "n", 1, None, None, None)
    with pytest.raises(Rejected):
        model.dhcp_binding("start", "op", NET, "b" + SURROGATE, 1, None, None, None, None, None, None)
    with pytest.raises(Rejected):
        model.nat_binding("start", "op", NET, "n" + SURROGATE, 1, ipaddress.ip_address("10.0.0.1"), 1, 2)
    with pytest.raises(Rejected):
        model.radius_binding("start", "op", NET, 42, "s", "n", 1, None, None, None)
    assert model.radius_binding("start", "op", NET, "kund-ö", "s", "n", 1, None, None, None).subscriber == "kund-ö"


def test_bindings_topic_json_with_a_surrogate_is_rejected():
    good = Binding(**_radius()).to_json()
    escaped = good.replace(b'"kund-1@isp"', b'"kund-\\udca0"')
    raw = good.replace(b'"kund-1@isp"', b'"kund-\xed\xa0\x80"')
    for v in (escaped, raw):
        with pytest.raises(Rejected) as e:
            Binding.from_json(v)
        assert e.value.reason == "bad-encoding"


RADIUS = {"Acct-Status-Type": "Start", "Acct-Session-Id": "S1", "NAS-IP-Address": "192.0.2.1",
          "Framed-IP-Address": "100.64.0.1", "Event-Timestamp": 1_700_000_000, "User-Name": "aXb"}


@pytest.mark.parametrize("attr", ["User-Name", "Acct-Session-Id", "NAS-Identifier"])
@pytest.mark.parametrize("form", ["escaped", "utf8-bytes"])
def test_radius_json_surrogates_in_any_attribute_are_rejected_at_parse(attr, form):
    rec = {**RADIUS, attr: "aXb"}
    raw = json.dumps(rec).encode()
    raw = raw.replace(b'"aXb"', b'"a\\udca0b"' if form == "escaped" else b'"a\xed\xa0\x80b"')
    with pytest.raises(Rejected) as e:
        get_format("radius-json").parse(raw, operator="op")
    assert e.value.reason == "bad-encoding"
