"""appliance.renewal: the one renewal policy of the bridge and the credmon, its flags."""

from __future__ import annotations

import argparse

import pytest

from appliance import ccache, renewal
from appliance.renewal import RenewalPolicy

from .test_ccache import synth


def test_renew_at_policy():
    now = 1_800_000_000
    # 10 min ticket: half-life (300 s) is earlier than end-300 (300 s): both 300
    assert renewal.renew_at(ccache.parse(synth(now=now, life=600)).tgt) == now + 300
    # 10 h ticket: renew at half-life
    assert renewal.renew_at(ccache.parse(synth(now=now, life=36000, renew=7 * 86400)).tgt) == now + 18000
    # fraction 0.995 of 10 h is 2.5 min before the end, but the margin says 5 min at the latest
    tgt = ccache.parse(synth(now=now, life=36000, renew=7 * 86400)).tgt
    assert renewal.renew_at(tgt, fraction=0.995) == now + 36000 - 300
    # 2 min ticket: the margin would be before the start; renew at a quarter of its life (not at
    # once: a renewed 2-minute ticket would be due again at once, a renewal loop)
    assert renewal.renew_at(ccache.parse(synth(now=now, life=120)).tgt) == now + 30
    # ... and the renewed ticket (new start) is not due before its own quarter either
    assert renewal.renew_at(ccache.parse(synth(now=now + 30, life=120)).tgt) == now + 60
    # fraction 0: due at once (tests force a renewal this way)
    assert renewal.renew_at(ccache.parse(synth(now=now, life=600)).tgt, fraction=0.0) == now
    # cannot extend: not renewable, or renew-till already reached
    assert renewal.renew_at(ccache.parse(synth(now=now, renew=None)).tgt) is None
    assert renewal.renew_at(ccache.parse(synth(now=now, life=600, renew=600)).tgt) is None



def test_policy_object_matches_the_function_and_its_defaults():
    tgt = ccache.parse(synth(now=1_800_000_000, life=36000, renew=7 * 86400)).tgt
    assert RenewalPolicy().renew_at(tgt) == renewal.renew_at(tgt) == 1_800_000_000 + 18000
    assert RenewalPolicy(fraction=0.995).renew_at(tgt) == 1_800_000_000 + 36000 - 300
    p = RenewalPolicy()
    assert (p.fraction, p.margin, p.retry_min, p.retry_max) == (0.5, 300, 30.0, 600.0)


def test_backoff_doubles_up_to_the_cap_and_never_past_the_ticket():
    p = RenewalPolicy(retry_min=30, retry_max=600)
    assert [p.retry_delay(n) for n in range(1, 8)] == [30, 60, 120, 240, 480, 600, 600]
    assert p.after_failure(0, 1000.0) == (1, 1030.0)
    assert p.after_failure(2, 1000.0) == (3, 1120.0)
    # the ticket ends in 50 s: the retry is at its end, not after
    assert p.after_failure(3, 1000.0, not_after=1050.0) == (4, 1050.0)


@pytest.mark.parametrize("kw", [dict(fraction=1.5), dict(fraction=-0.1), dict(margin=-1),
                                dict(retry_min=0), dict(retry_min=700, retry_max=600)])
def test_inconsistent_policy_is_refused(kw):
    with pytest.raises(ValueError):
        RenewalPolicy(**kw)


def test_flags_take_env_defaults_and_the_command_line_wins():
    env = {"X_RENEW_FRACTION": "0.25", "X_RETRY_MAX": "90"}
    ap = argparse.ArgumentParser()
    renewal.add_arguments(ap, "X_", environ=env)
    p = renewal.from_args(ap.parse_args([]))
    assert p == RenewalPolicy(fraction=0.25, retry_max=90.0)
    p = renewal.from_args(ap.parse_args(["--renew-fraction", "0.75", "--renew-margin", "60",
                                         "--retry-min", "5"]))
    assert p == RenewalPolicy(fraction=0.75, margin=60, retry_min=5.0, retry_max=90.0)
    assert "X_RENEW_MARGIN" in ap.format_help()


def test_bad_flag_value_names_the_flag(capsys):
    ap = argparse.ArgumentParser()
    renewal.add_arguments(ap, "X_", environ={"X_RETRY_MIN": "soon"})
    with pytest.raises(SystemExit):
        ap.parse_args([])
    assert "--retry-min" in capsys.readouterr().err


def test_both_daemons_declare_the_same_flags():
    from appliance.credd_bridge.__main__ import build_parser

    flags = {a.dest: a.default for a in build_parser()._actions}
    for name in ("renew_fraction", "renew_margin", "retry_min", "retry_max"):
        assert name in flags


def test_renew_checked_refuses_another_principal():
    data = synth(now=1_800_000_000)
    bob = synth("bob@BRIDGE.TEST", now=1_800_000_000)
    new, cc = renewal.renew_checked(lambda d: d, data, "alice@BRIDGE.TEST")
    assert new == data and str(cc.principal) == "alice@BRIDGE.TEST"
    with pytest.raises(ccache.RenewError):
        renewal.renew_checked(lambda d: bob, data, "alice@BRIDGE.TEST")
    with pytest.raises(ccache.RenewError):
        renewal.renew_checked(lambda d: synth(now=1_800_000_000, with_tgt=False), data,
                              "alice@BRIDGE.TEST")


def test_iso():
    assert renewal.iso(None) == "-"
    assert renewal.iso(1_800_000_000) == "2027-01-15T08:00:00Z"
