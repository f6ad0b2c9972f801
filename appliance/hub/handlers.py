"""Hub API handlers added by the appliance.

``POST /hub/api/batch/port`` — the node launcher reports the port its server will listen on.
Accepted only with the token of a server that is currently starting (compared in constant time with
that spawner's own API token) and only for an integer inside the spawner's configured port range;
a body with anything besides ``port`` is refused. The host is never taken from here: it comes from
the scheduler's own record (``appliance.hub.scheduler.routehost``).

``GET /hub/api/batch/credential`` — the current user's own Kerberos credential state (home page).
"""

from __future__ import annotations

import hmac
import json
import time

from jupyterhub.apihandlers.base import APIHandler
from tornado import web

from ..options import json_schema
from .spawner import BatchSpawner


class _APIHandler(APIHandler):
    def get_login_url(self):
        # tornado's @web.authenticated would redirect a GET to the login page: an API says 403.
        raise web.HTTPError(403, "a token or login is required")


class PortReportHandler(_APIHandler):
    @web.authenticated
    async def post(self):
        token = self.get_auth_token()
        user = self.current_user
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "body must be JSON")
        port = body.get("port") if isinstance(body, dict) else None
        extra = sorted(set(body) - {"port"}) if isinstance(body, dict) else []
        if extra:  # e.g. a "host": the route's host is the scheduler's record, never the node's word
            raise web.HTTPError(400, f"only 'port' may be reported, not {', '.join(extra)}")
        if not isinstance(port, int) or isinstance(port, bool):
            raise web.HTTPError(400, "port must be an integer")
        if token is None or user is None or not hasattr(user, "spawners"):
            self.log.warning("Port report refused: not a user's token (%r)", user)
            raise web.HTTPError(403, "not a server token")
        for spawner in list(user.spawners.values()):
            own = getattr(spawner, "api_token", None)
            if not own or not hasattr(spawner, "port_reported"):
                continue
            if not hmac.compare_digest(own.encode(), token.encode()):
                continue
            if not spawner._spawn_pending:
                raise web.HTTPError(409, "this server is not starting")
            lo, hi = spawner.port_range
            if not lo <= port <= hi:
                raise web.HTTPError(400, f"port must be in {lo}-{hi}")
            spawner.port_reported(port)
            self.set_status(204)
            return
        self.log.warning(
            "Port report refused for %s: token matches none of %s",
            user.name, [(name, bool(getattr(sp, "api_token", None))) for name, sp in user.spawners.items()],
        )
        raise web.HTTPError(403, "token does not belong to a starting server")


class OptionsSchemaHandler(_APIHandler):
    """``GET /hub/api/batch/options-schema``: the JSON schema of user_options (for API docs)."""

    @web.authenticated
    async def get(self):
        spawner = BatchSpawner(config=self.settings["config"], user=None)
        self.write(json.dumps(json_schema(spawner.bounds())))


def credential_view(state: dict | None, login: dict | None, now: float,
                    warn_seconds: float) -> dict:
    """What the home page shows: the bridge's state plus whether a spawn can use it and what the
    user should do. No ticket data, only names and times."""
    out: dict = {"state": "none", "principal": None, "valid_until": None, "renew_until": None,
                 "last_forwarded": None, "last_renewed": None, "error": None, "usable": False,
                 "warning": None, "now": int(now)}
    if state:
        for k in ("state", "principal", "valid_until", "renew_until", "last_forwarded",
                  "last_renewed", "error"):
            out[k] = state.get(k)
    if login and not login.get("ok"):
        out["login_error"] = login.get("message") or login.get("error")
    st = out["state"]
    valid = out["valid_until"] or 0
    renew = out["renew_until"]
    end = max(valid, renew or 0)
    if st == "none" or st == "expired" or valid <= now:
        out["warning"] = ("No valid Kerberos ticket is stored for you"
                          + (f" ({out['login_error']})" if out.get("login_error") else "")
                          + ": log out and log in again before starting a server.")
        return out
    out["usable"] = True
    if st == "retrying":
        out["warning"] = (f"Renewing or forwarding your ticket failed ({out['error']}); "
                          f"retrying. It stays valid until {_utc(valid)}.")
    elif st == "final" or renew is None:
        out["warning"] = (f"Your ticket cannot be renewed any more and expires at {_utc(valid)}: "
                          "log in again before then.")
    elif end - now < warn_seconds:
        out["warning"] = (f"Your ticket can be renewed only until {_utc(end)}: log in again "
                          "before then, or your notebooks lose it at that time.")
    out["log_in_again_before"] = int(end)
    return out


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


class CredentialHandler(_APIHandler):
    """``GET /hub/api/batch/credential``: the CURRENT user's Kerberos credential state (principal,
    valid until, renewable until, last forwarded, warnings), from the credential bridge. There is
    no parameter: nobody can ask for another user's state, and no ticket data is ever returned."""

    @web.authenticated
    async def get(self):
        from .bridge import CredentialBridge, CredentialUnavailable

        user = self.current_user
        if user is None or not hasattr(user, "spawners"):
            raise web.HTTPError(403, "only users have a credential")
        auth = self.authenticator
        state, bridge_error = None, None
        try:
            state = await CredentialBridge(parent=auth).state(user.name)
        except CredentialUnavailable as e:
            bridge_error = e
        try:
            auth_state = await user.get_auth_state() or {}
        except Exception:  # pragma: no cover - no crypt key: no auth state
            auth_state = {}
        view = credential_view(state, auth_state.get("credential"), time.time(),
                               auth.credential_warn_seconds)
        view["user"] = user.name
        if bridge_error:
            view["bridge_error"] = bridge_error.detail
            view["warning"] = bridge_error.message
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(view))


default_handlers = [
    (r"/api/batch/port", PortReportHandler),
    (r"/api/batch/options-schema", OptionsSchemaHandler),
    (r"/api/batch/credential", CredentialHandler),
]
