"""What the home page says about a user's Kerberos credential (appliance.hub.handlers)."""

from appliance.hub.handlers import credential_view

NOW = 1_800_000_000
DAY = 86400


def state(**kw):
    s = {"user": "alice", "principal": "alice@MINI.TEST", "state": "active",
         "valid_until": NOW + 3600, "renew_until": NOW + 7 * DAY, "last_forwarded": NOW - 10,
         "last_renewed": None, "next_action": NOW + 1800, "error": None}
    s.update(kw)
    return s


def test_healthy_ticket_no_warning():
    v = credential_view(state(), {"ok": True}, NOW, DAY)
    assert v["usable"] and v["warning"] is None
    assert v["principal"] == "alice@MINI.TEST" and v["valid_until"] == NOW + 3600
    assert v["renew_until"] == NOW + 7 * DAY and v["last_forwarded"] == NOW - 10
    assert v["log_in_again_before"] == NOW + 7 * DAY


def test_nothing_stored_says_log_in_again_with_login_error():
    v = credential_view(None, {"ok": False, "error": "not_renewable",
                               "message": "ticket is not renewable"}, NOW, DAY)
    assert not v["usable"] and v["state"] == "none"
    assert "log in again" in v["warning"] and "not renewable" in v["warning"]


def test_expired():
    v = credential_view(state(state="expired", valid_until=NOW - 1), None, NOW, DAY)
    assert not v["usable"] and "log in again" in v["warning"]


def test_near_renewable_end_warns():
    v = credential_view(state(renew_until=NOW + 3 * 3600), None, NOW, DAY)
    assert v["usable"] and "log in again" in v["warning"]
    assert "renewed only until 2027-01-15 11:00 UTC" in v["warning"]
    assert v["log_in_again_before"] == NOW + 3 * 3600


def test_final_warns():
    v = credential_view(state(state="final", renew_until=NOW + 3600), None, NOW, DAY)
    assert v["usable"] and "cannot be renewed" in v["warning"]


def test_retrying_shows_the_problem():
    v = credential_view(state(state="retrying", error="renewal failed: Cannot contact any KDC"),
                        None, NOW, DAY)
    assert v["usable"] and "Cannot contact any KDC" in v["warning"]


def test_no_ticket_bytes_or_paths():
    v = credential_view(state(), {"ok": True, "ccache": "/run/appliance/ccache/x"}, NOW, DAY)
    assert "ccache" not in repr(v)
