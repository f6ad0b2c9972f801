"""Operations config: services, roles and scopes appear only with their files; loading twice adds
nothing twice."""

from traitlets.config import Config

from appliance.hub import opsconfig


def test_nothing_without_files(tmp_path):
    s, r, sc = opsconfig.services_and_roles(str(tmp_path / "no"), str(tmp_path / "no.py"))
    assert (s, r, sc) == ([], [], {})


def test_metrics_reader_may_read_metrics_only(tmp_path):
    tok = tmp_path / "prometheus.token"
    tok.write_text("abc123\n")
    s, r, _ = opsconfig.services_and_roles(str(tok), str(tmp_path / "no.py"))
    assert s == [{"name": "prometheus", "api_token": "abc123"}]
    assert r[0]["scopes"] == ["read:metrics"] and r[0]["services"] == ["prometheus"]


def test_reservation_service_and_staff_role(tmp_path):
    cfg = tmp_path / "reservations_config.py"
    cfg.write_text("c.ReservationPolicy.staff = {'alice': {'partitions': ['jhub']}, 'dora': {}}\n")
    s, r, sc = opsconfig.services_and_roles(str(tmp_path / "no"), str(cfg), python="/py")
    svc = s[0]
    assert svc["name"] == "reservations" and svc["user"] == "resvsvc"
    assert svc["command"] == ["/py", "-m", "appliance.reservations.service"]
    assert svc["oauth_client_allowed_scopes"] == ["custom:reservations"]
    assert r[0]["users"] == ["alice", "dora"]
    assert set(r[0]["scopes"]) == {"custom:reservations", "access:services!service=reservations"}
    assert "custom:reservations" in sc


def test_extend_is_idempotent():
    c = Config()
    opsconfig._extend(c, "JupyterHub", "services", [{"name": "a"}])
    opsconfig._extend(c, "JupyterHub", "services", [{"name": "a"}, {"name": "b"}])
    assert [x["name"] for x in c.JupyterHub.services] == ["a", "b"]
