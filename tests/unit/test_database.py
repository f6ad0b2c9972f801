"""Hub database: URL from the secret file, schema upgrade with a sqlite backup (real JupyterHub
schema and alembic migrations on a real sqlite file)."""

import glob
import os

import pytest

from appliance.hub import database


def test_url_from_secret_file_first(tmp_path, monkeypatch):
    monkeypatch.delenv("APPLIANCE_DB_URL", raising=False)
    a, b = tmp_path / "mounted", tmp_path / "state"
    assert database.db_url([str(a), str(b)], state="/srv/x") == "sqlite:////srv/x/jupyterhub.sqlite"
    b.write_text("postgresql+psycopg2://hub:pw@db/hub\n")
    assert database.db_url([str(a), str(b)]) == "postgresql+psycopg2://hub:pw@db/hub"
    a.write_text("postgresql+psycopg2://hub:other@db2/hub")
    assert database.db_url([str(a), str(b)]).endswith("@db2/hub")
    assert database.redact("postgresql+psycopg2://hub:secret@db:5432/hub") == \
        "postgresql+psycopg2://hub:***@db:5432/hub"


def test_unreachable_database_fails_with_redacted_message():
    class Clock:
        t = 0.0

        def __call__(self):
            self.t += 1.0
            return self.t

    with pytest.raises(RuntimeError) as e:
        database.wait_reachable("postgresql+psycopg2://hub:secret@127.0.0.1:1/hub", timeout=2,
                                interval=0, clock=Clock())
    assert "secret" not in str(e.value) and "not reachable" in str(e.value)


def test_upgrade_backs_up_sqlite_first(tmp_path):
    from alembic import command
    from alembic.config import Config
    from jupyterhub import dbutil, orm
    from sqlalchemy import create_engine, text

    path = tmp_path / "jupyterhub.sqlite"
    url = f"sqlite:///{path}"
    orm.new_session_factory(url)  # a current hub database
    database.prepare(url)  # current: nothing to do, no backup
    assert glob.glob(f"{path}.*") == []
    with dbutil._temp_alembic_ini(url) as ini:  # what an older image left behind
        command.downgrade(Config(ini), "-1")
    old = create_engine(url).connect().execute(text("select version_num from alembic_version")).scalar()
    database.prepare(url)
    backups = glob.glob(f"{path}.*")
    assert len(backups) == 1 and os.path.getsize(backups[0]) > 0
    new = create_engine(url).connect().execute(text("select version_num from alembic_version")).scalar()
    assert new != old
    orm.check_db_revision(create_engine(url))  # the hub would start on it


def test_new_sqlite_is_left_to_jupyterhub(tmp_path):
    url = f"sqlite:///{tmp_path}/jupyterhub.sqlite"
    assert database.prepare(url) == url
    assert not os.path.exists(tmp_path / "jupyterhub.sqlite")


def test_engine_kwargs_bound_postgresql_waits_only():
    kw = database.engine_kwargs("postgresql+psycopg2://hub:pw@db/hub")
    assert kw["pool_pre_ping"] is True
    assert kw["connect_args"]["connect_timeout"] == 5 and kw["connect_args"]["tcp_user_timeout"]
    assert database.engine_kwargs("sqlite:////srv/appliance/jupyterhub.sqlite") == {}


def test_an_unreachable_postgresql_fails_within_seconds_not_minutes():
    """A database host that answers nothing (a stopped container, a blackholed address): the
    connect gives up after connect_timeout instead of the kernel's TCP timeout."""
    import time

    from sqlalchemy import create_engine
    from sqlalchemy.exc import OperationalError

    url = "postgresql+psycopg2://hub:pw@10.255.255.1:5432/hub"  # routable nowhere: no answer
    engine = create_engine(url, **database.engine_kwargs(url))
    t0 = time.monotonic()
    with pytest.raises(OperationalError):
        with engine.connect():
            pass
    assert time.monotonic() - t0 < 9
    engine.dispose()


def test_operational_errors_carry_the_outage_message():
    from sqlalchemy.exc import IntegrityError, OperationalError

    database.explain_unavailable_database()
    e = OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))
    # JupyterHub's write_error shows an exception's jupyterhub_message
    assert e.jupyterhub_message == database.UNAVAILABLE
    assert "database is not reachable" in e.jupyterhub_message
    assert not hasattr(IntegrityError("x", {}, ValueError()), "jupyterhub_message")


def test_prepare_prints_the_plain_http_server_count(tmp_path, monkeypatch, capsys):
    """`prepare` (one Python start before the hub) ends by printing how many running servers are
    plain HTTP at a non-loopback host (earlier release): appliance-run reads it from stdout."""
    from jupyterhub import orm

    path = tmp_path / "jupyterhub.sqlite"
    url = f"sqlite:///{path}"
    monkeypatch.setattr(database, "db_url", lambda: url)
    db = orm.new_session_factory(url)()
    for i, (proto, ip) in enumerate([("http", "10.0.0.5"), ("https", "10.0.0.6"),
                                     ("http", "127.0.0.1"), ("http", "10.0.0.7")]):
        user = orm.User(name=f"u{i}")
        db.add(user)
        db.commit()
        server = orm.Server(proto=proto, ip=ip, port=40000 + i)
        db.add(server)
        db.commit()
        db.add(orm.Spawner(user_id=user.id, server_id=server.id, name=""))
        db.commit()
    db.close()
    assert database.main(["prepare"]) == 0
    assert capsys.readouterr().out.strip() == "2"
