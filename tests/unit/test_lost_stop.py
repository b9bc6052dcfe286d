"""The lost-Stop window: a profile setting, and past it an answer of its own kind.

A session that never sent a Stop is taken as current until ``last event + window``; after that
a lookup must say what is known — the last holder, when it was last seen, end unknown — and
never answer as if the data was gone ("no data", which means not retained) nor name the holder
as confirmed."""

from __future__ import annotations

import ipaddress

import pytest

from stream.config import DEFAULT_LOST_STOP_MS, MISSED_INTERIMS, SessionPolicy, parse_operator
from stream.errors import ConfigError
from stream.intervals import apply, during, last_seen
from stream.model import Binding

NET = ipaddress.ip_network("100.64.12.34/32")
M = 60_000


def rb(action, at, sub="alice", session="nas1/s1", st=None):
    return Binding(kind="radius", action=action, operator="op", ip=NET, subscriber=sub,
                   session=session, nas="nas1", at_ms=at, session_time_s=st)


def table(*bs):
    ivs = ()
    for b in bs:
        ivs, _ = apply(ivs, b)
    return ivs


def test_past_the_window_the_last_holder_is_reported_with_an_unknown_end():
    ivs = table(rb("start", 0), rb("update", 10 * M, st=600))
    w = 30 * M
    # inside the window: a confirmed holder, nothing unknown
    assert [h.holder for h in during(ivs, 39 * M, 39 * M + 1, stale_after_ms=w)] == ["alice"]
    assert last_seen(ivs, 39 * M, 39 * M + 1, stale_after_ms=w) == []
    # past it: no confirmed holder, but the last holder and when it was last seen
    assert during(ivs, 41 * M, 41 * M + 1, stale_after_ms=w) == []
    [ls] = last_seen(ivs, 41 * M, 41 * M + 1, stale_after_ms=w)
    assert (ls.holder, ls.from_ms, ls.last_seen_ms, ls.window_ms) == ("alice", 0, 10 * M, w)
    # a query spanning the lapse gets both: confirmed up to it, unknown after
    assert [(h.from_ms, h.to_ms) for h in during(ivs, 35 * M, 45 * M, stale_after_ms=w)] == [(35 * M, 40 * M)]
    assert [x.holder for x in last_seen(ivs, 35 * M, 45 * M, stale_after_ms=w)] == ["alice"]
    # before the session: nothing at all
    assert last_seen(ivs, -10 * M, -5 * M, stale_after_ms=w) == []


def test_a_known_end_is_never_reported_as_unknown():
    w = 30 * M
    stopped = table(rb("start", 0), rb("stop", 5 * M, st=300))
    assert last_seen(stopped, 100 * M, 101 * M, stale_after_ms=w) == []
    reused = table(rb("start", 0), rb("start", 50 * M, sub="bob", session="nas1/s2"))
    # alice's end is bob's start; bob is past the window himself at 100 min
    assert [x.holder for x in last_seen(reused, 100 * M, 101 * M, stale_after_ms=w)] == ["bob"]
    lease = Binding(kind="dhcp", action="start", operator="op", ip=NET, subscriber="01:aa", session=None,
                    nas=None, at_ms=0, until_ms=10 * M)
    ivs, _ = apply((), lease)
    assert last_seen(ivs, 100 * M, 101 * M, stale_after_ms=w) == []  # the lease ran out: end known


def _profile(sessions: str) -> str:
    return (f'name = "op"\n{sessions}\n[identity]\n[purposes.lawful_access]\npromise = "30d"\n'
            f'[purposes.statistics]\npromise = "1d"\nconsent_required = false\n')


def test_window_is_a_profile_setting_with_a_default_from_the_interim_interval():
    assert parse_operator(_profile(""), file="op.toml").sessions.lost_stop_window_ms == DEFAULT_LOST_STOP_MS
    p = parse_operator(_profile('[sessions]\ninterim_interval = "15m"'), file="op.toml")
    assert p.sessions.lost_stop_window_ms == MISSED_INTERIMS * 15 * M
    p = parse_operator(_profile('[sessions]\ninterim_interval = "15m"\nlost_stop_after = "2h"'), file="op.toml")
    assert p.sessions.lost_stop_window_ms == 120 * M
    assert SessionPolicy(lost_stop_after_ms=5).lost_stop_window_ms == 5


@pytest.mark.parametrize("sessions, field", [
    ('[sessions]\ninterim_interval = "15m"\nlost_stop_after = "10m"', "lost_stop_after"),
    ('[sessions]\nlost_stop_afer = "1h"', "lost_stop_afer"),
    ('[sessions]\ninterim_interval = "soon"', "interim_interval"),
])
def test_bad_sessions_settings_name_the_field(sessions, field):
    with pytest.raises(ConfigError) as e:
        parse_operator(_profile(sessions), file="op.toml")
    assert "op.toml" in str(e.value) and field in str(e.value)


def test_loading_a_profile_file_keeps_its_sessions(tmp_path):
    from stream.config import load_operators

    (tmp_path / "op.toml").write_text(_profile('[sessions]\nlost_stop_after = "2m"'))
    assert load_operators(tmp_path)["op"].sessions.lost_stop_window_ms == 2 * M
