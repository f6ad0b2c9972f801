"""Hub API handlers added by the appliance.

``POST /hub/api/batch/port`` — the node launcher reports the port its server will listen on.
Accepted only with the token of a server that is currently starting (compared in constant time with
that spawner's own API token) and only for an integer inside the spawner's configured port range.
The host is never taken from here: it comes from the scheduler.
"""

from __future__ import annotations

import hmac
import json

from jupyterhub.apihandlers.base import APIHandler
from tornado import web


class PortReportHandler(APIHandler):
    @web.authenticated
    async def post(self):
        token = self.get_auth_token()
        user = self.current_user
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "body must be JSON")
        port = body.get("port") if isinstance(body, dict) else None
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


class OptionsSchemaHandler(APIHandler):
    """``GET /hub/api/batch/options-schema``: the JSON schema of user_options (for API docs)."""

    @web.authenticated
    async def get(self):
        from ..options import json_schema
        from .spawner import BatchSpawner

        spawner = BatchSpawner(config=self.settings["config"], user=None)
        self.write(json.dumps(json_schema(spawner.bounds())))


default_handlers = [
    (r"/api/batch/port", PortReportHandler),
    (r"/api/batch/options-schema", OptionsSchemaHandler),
]
