"""The reservation service: a hub-managed JupyterHub service (``/services/reservations/``).

Page ``/``: the staff member's reservations and a form. REST API (JSON)::

    GET    api/reservations          reservations made through this service (all staff)
    POST   api/reservations          create  {name, partition, nodes, users|groups, hours, start?}
    PATCH  api/reservations/<name>   extend  {hours}
    DELETE api/reservations/<name>   delete
    GET    api/policy                what the caller may reserve

Access needs ``access:services!service=reservations`` (to reach it at all) and
``custom:reservations`` (to use it); both come from the ``reservation-staff`` role the hub config
grants to the staff in the policy. Anything else gets 403. The service runs as an unprivileged
account and changes reservations only through ``sudo appliance-reservation-admin`` (which checks
the request again and writes the audit log).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any, Optional

from jinja2 import Environment, FileSystemLoader, select_autoescape
from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import ioloop, web

from .policy import PolicyError, load_policy

SCOPE = "custom:reservations"
CONFIG = os.environ.get("APPLIANCE_RESERVATIONS_CONFIG", "/etc/appliance/reservations_config.py")
ADMIN_COMMAND = ["sudo", "-n", "/opt/jupyterhub/bin/appliance-reservation-admin"]
SCONTROL = "/usr/bin/scontrol"
TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")


def _num(v: Any) -> Optional[float]:
    if isinstance(v, dict):
        if not v.get("set", True) or v.get("infinite"):
            return None
        v = v.get("number")
    return float(v) if isinstance(v, (int, float)) else None


def reservation_rows(data: dict, prefix: str, now: float) -> list[dict]:
    """The service's reservations from ``scontrol show reservation --json`` (pure)."""
    rows = []
    for r in data.get("reservations", []) or []:
        name = str(r.get("name") or "")
        if not name.startswith(prefix):
            continue
        start, end = _num(r.get("start_time")), _num(r.get("end_time"))
        users = [u for u in str(r.get("users") or "").split(",") if u]
        groups = [g for g in str(r.get("groups") or "").split(",") if g]
        rows.append({
            "name": name, "short_name": name[len(prefix):], "partition": r.get("partition") or "",
            "nodes": r.get("node_list") or "", "users": users, "groups": groups,
            "start": int(start) if start else None, "end": int(end) if end else None,
            "remaining_hours": round(max(0.0, (end - now) / 3600), 2) if end else None,
        })
    return sorted(rows, key=lambda r: (r["start"] or 0, r["name"]))


class Base(HubOAuthenticated, web.RequestHandler):
    def initialize(self, app: "ReservationService"):
        self.app = app

    def staff(self) -> str:
        """The caller's name if they hold custom:reservations; 403 otherwise."""
        user = self.current_user
        scopes = set((user or {}).get("scopes", []))
        if not user or SCOPE not in scopes:
            raise web.HTTPError(403, "reservations are for staff (custom:reservations)")
        return user["name"]

    def write_error(self, status_code: int, **kw):
        exc = kw.get("exc_info", (None, None))[1]
        msg = getattr(exc, "log_message", None) or self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code, "message": msg}))

    def body(self) -> dict:
        try:
            data = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "body must be JSON")
        if not isinstance(data, dict):
            raise web.HTTPError(400, "body must be a JSON object")
        return data

    async def act(self, request: dict) -> None:
        answer = await self.app.admin(dict(request, actor=self.staff()))
        if not answer.get("ok"):
            self.set_status(int(answer.get("status") or 500))
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(answer))


class PageHandler(Base):
    @web.authenticated
    async def get(self):
        who = self.staff()
        policy = self.app.policy()
        try:
            rows = await self.app.reservations()
            error = None
        except RuntimeError as e:
            rows, error = [], str(e)
        rights = policy.rights(who)
        html = self.app.jinja.get_template("reservations.html").render(
            user=who, rows=rows, rights=rights, error=error, prefix=policy.name_prefix,
            max_hours=rights.max_hours, xsrf=self.xsrf_token.decode()
            if isinstance(self.xsrf_token, bytes) else self.xsrf_token,
            api=url_path_join(self.app.prefix, "api/reservations"))
        self.finish(html)


class ListHandler(Base):
    @web.authenticated
    async def get(self):
        self.staff()
        try:
            rows = await self.app.reservations()
        except RuntimeError as e:
            raise web.HTTPError(502, str(e))
        self.finish({"reservations": rows})

    @web.authenticated
    async def post(self):
        await self.act(dict(self.body(), action="create"))


class OneHandler(Base):
    @web.authenticated
    async def patch(self, name: str):
        body = self.body()
        await self.act({"action": "extend", "name": name, "hours": body.get("hours")})

    @web.authenticated
    async def delete(self, name: str):
        await self.act({"action": "delete", "name": name})


class PolicyHandler(Base):
    @web.authenticated
    async def get(self):
        who = self.staff()
        try:
            r = self.app.policy().rights(who)
        except PolicyError as e:
            raise web.HTTPError(e.status, str(e))
        self.finish({"user": who, "partitions": r.partitions, "nodes": r.nodes,
                     "max_hours": r.max_hours, "max_nodes": r.max_nodes})


class ReservationService:
    def __init__(self, prefix: str, config: str = CONFIG):
        self.prefix = prefix
        self.config = config
        self.jinja = Environment(loader=FileSystemLoader(TEMPLATES),
                                 autoescape=select_autoescape(["html"]))

    def policy(self):
        return load_policy(self.config)

    async def admin(self, request: dict) -> dict:
        proc = await asyncio.create_subprocess_exec(
            *ADMIN_COMMAND, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(json.dumps(request).encode()), 60)
        try:
            return json.loads(out.decode() or "{}") or {"ok": False, "status": 500,
                                                         "message": err.decode()[-300:]}
        except ValueError:
            return {"ok": False, "status": 500, "message": "wrapper gave no answer: "
                    + err.decode(errors="replace")[-300:]}

    async def reservations(self) -> list[dict]:
        proc = await asyncio.create_subprocess_exec(
            SCONTROL, "show", "reservation", "--json", stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        if proc.returncode != 0:
            raise RuntimeError(f"scontrol: {err.decode(errors='replace').strip()[-300:]}")
        return reservation_rows(json.loads(out or b"{}"), self.policy().name_prefix, time.time())

    def make_app(self) -> web.Application:
        kw = {"app": self}
        p = self.prefix
        return web.Application([
            (p, PageHandler, kw),
            (url_path_join(p, "api/reservations"), ListHandler, kw),
            (url_path_join(p, r"api/reservations/([a-z0-9-]{1,64})"), OneHandler, kw),
            (url_path_join(p, "api/policy"), PolicyHandler, kw),
            (url_path_join(p, "oauth_callback"), HubOAuthCallbackHandler),
        ], cookie_secret=os.urandom(32))


def main() -> None:
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/reservations/")
    url = os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101")
    from urllib.parse import urlparse

    u = urlparse(url)
    app = ReservationService(prefix).make_app()
    app.listen(u.port or 10101, u.hostname or "127.0.0.1")
    ioloop.IOLoop.current().start()


if __name__ == "__main__":  # pragma: no cover
    main()
