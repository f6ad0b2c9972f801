"""The hub database: where its URL comes from, and the schema upgrade before the hub starts.

``db_url`` is read from a secret file (it holds the password): the first that exists of
``/etc/appliance/secrets/db/db_url`` (a mounted secret) and ``<state>/secrets/db_url``; without
one the hub uses sqlite in the state volume (or, for older sites, ``APPLIANCE_DB_URL``).

``python -m appliance.hub.database prepare`` (run by ``appliance-run hub`` before JupyterHub):
waits (bounded) until the database accepts connections, then runs JupyterHub's own
``upgrade_if_needed`` (what ``jupyterhub upgrade-db`` does), which backs up a sqlite file first
(``jupyterhub.sqlite.<timestamp>``) and does nothing when the schema is current; last it prints
on stdout how many running servers are plain HTTP (started by an earlier release;
``appliance-run hub`` keeps the cluster side's plain port for them). One Python start for both:
under load each start of this interpreter costs the hub's restart seconds.

``engine_kwargs(url)`` (JupyterHub's ``db_kwargs``): JupyterHub's database calls are synchronous,
so while PostgreSQL is unreachable every call blocks the whole hub for as long as libpq waits.
Without limits that is the kernel's TCP timeout (a stopped database host answers nothing: minutes,
and the fault suite saw a 60 s API request time out). With them a call fails within seconds
(an HTTP 500 that says the database is unavailable), the hub keeps serving what needs no database,
and ``pool_pre_ping`` replaces the dead pooled connections once the database is back.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Callable, Optional
from urllib.parse import urlparse

STATE = os.environ.get("APPLIANCE_STATE_DIR", "/srv/appliance")
URL_FILES = ("/etc/appliance/secrets/db/db_url", f"{STATE}/secrets/db_url")
log = logging.getLogger("appliance.database")


def default_url(state: str = STATE) -> str:
    return f"sqlite:///{state}/jupyterhub.sqlite"


def db_url(files=URL_FILES, state: str = STATE) -> str:
    for path in files:
        try:
            with open(path) as f:
                url = f.read().strip()
        except FileNotFoundError:
            continue
        if url:
            return url
    # Older sites: an environment variable (jupyterhub_config.py's APPLIANCE_DB_URL).
    return os.environ.get("APPLIANCE_DB_URL") or default_url(state)


#: libpq limits (seconds, tcp_user_timeout in ms): connect, and notice a dead peer mid-query
PG_CONNECT_ARGS = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 10,
                   "keepalives_interval": 5, "keepalives_count": 3, "tcp_user_timeout": 10000}


def engine_kwargs(url: str) -> dict:
    """SQLAlchemy engine arguments for ``url`` (JupyterHub's ``db_kwargs``); see module doc."""
    if urlparse(url).scheme.split("+")[0] in ("postgresql", "postgres"):
        return {"pool_pre_ping": True, "connect_args": dict(PG_CONNECT_ARGS)}
    return {}


#: what a page or API answer says (HTTP 500) when a database call fails for lack of a database
UNAVAILABLE = ("The hub's database is not reachable right now, so the hub cannot answer this "
               "request. Running notebooks keep running. Please try again in a minute.")


def explain_unavailable_database(message: str = UNAVAILABLE) -> None:
    """Make JupyterHub say ``message`` when its database is unavailable, instead of a bare
    "Internal Server Error" or - worse - treating every user as logged out.

    * SQLAlchemy's ``OperationalError`` (connection refused or lost, timeouts, sqlite "database
      is locked") gets a ``jupyterhub_message``, which JupyterHub's ``write_error`` shows.
    * JupyterHub's ``BaseHandler.prepare`` swallows any error of its user lookup and goes on
      anonymously: with PostgreSQL stopped the API answered 403 "Missing or invalid credentials"
      and pages the login form (the fault suite). After that lookup failed on the database,
      the request now ends with HTTP 503 and ``message``.
    Idempotent (the hub's config may be loaded more than once in a process).
    """
    from jupyterhub.handlers.base import BaseHandler
    from sqlalchemy.exc import OperationalError
    from tornado import web

    OperationalError.jupyterhub_message = message
    if getattr(BaseHandler, "_appliance_db_outage", False):
        return
    lookup, prepare = BaseHandler.get_current_user, BaseHandler.prepare

    async def get_current_user(self):
        try:
            return await lookup(self)
        except OperationalError:
            self._appliance_db_down = True
            raise

    async def prepare_or_503(self):
        self._appliance_db_down = False
        await prepare(self)
        if self._appliance_db_down:
            raise web.HTTPError(503, message)

    BaseHandler.get_current_user = get_current_user
    BaseHandler.prepare = prepare_or_503
    BaseHandler._appliance_db_outage = True


def redact(url: str) -> str:
    u = urlparse(url)
    if u.password:
        u = u._replace(netloc=f"{u.username}:***@{u.hostname}" + (f":{u.port}" if u.port else ""))
    return u.geturl()


def wait_reachable(url: str, timeout: float = 120.0, interval: float = 1.0,
                   clock: Callable[[], float] = time.monotonic) -> None:
    """Readiness check: connect until it works (a fresh database container needs a few s)."""
    if url.startswith("sqlite"):
        return
    from sqlalchemy import create_engine, text

    engine = create_engine(url, pool_pre_ping=True)
    deadline = clock() + timeout
    while True:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return
        except Exception as e:  # OperationalError while the server starts
            if clock() > deadline:
                raise RuntimeError(f"database {redact(url)} not reachable after {timeout:g}s: "
                                   f"{type(e).__name__}") from None
            time.sleep(interval)
        finally:
            engine.dispose()


def prepare(url: Optional[str] = None, timeout: float = 120.0) -> str:
    """Wait for the database, upgrade its schema if needed (sqlite backed up first)."""
    from jupyterhub import dbutil

    url = url or db_url()
    wait_reachable(url, timeout=timeout)
    if url.startswith("sqlite:///") and not os.path.exists(url.split(":///", 1)[1]):
        return url  # a new hub: JupyterHub creates the schema itself
    # JupyterHub runs the `alembic` command of its own environment.
    bindir = os.path.dirname(sys.executable)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    dbutil.upgrade_if_needed(url, log=log)
    return url


def plain_servers(url: str) -> int:
    """Servers the database lists on plain HTTP at a non-loopback host: started by a release
    before internal TLS, they reach the hub's API only on the cluster side's plain port (the
    hub's start keeps that port open while there are any: appliance-run hub)."""
    if url.startswith("sqlite:///") and not os.path.exists(url.split(":///", 1)[1]):
        return 0
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT s.proto, s.ip FROM servers s JOIN spawners p "
                                     "ON p.server_id = s.id")).all()
    finally:
        engine.dispose()
    return sum(1 for proto, ip in rows
               if proto == "http" and ip and ip not in ("127.0.0.1", "localhost", "::1"))


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m appliance.hub.database")
    ap.add_argument("command", choices=["prepare", "url"])
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="database: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if args.command == "url":
        print(redact(db_url()))
        return 0
    try:
        url = prepare(timeout=args.timeout)
    except Exception as e:
        log.error("%s", e)
        return 1
    log.info("ready: %s", redact(url))
    try:
        print(plain_servers(url))
    except Exception as e:  # the schema is ready; the count only decides a legacy listener
        log.error("could not count plain-HTTP servers: %s", e)
        print(0)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
