"""Hub API of the user's session: what happened last, how long the server has left, extend it;
and the idle culler's question to the hub.

``GET  /hub/api/batch/session``         the CURRENT user's last outcome (stored in the hub's
                                        database) and running server (job, host, end of its
                                        wall-clock limit, remaining seconds, extension limits)
``POST /hub/api/batch/session/extend``  ``{"hours": h}``: move the running job's limit (when the
                                        admin enabled it), up to the lane's/partition's maximum
``POST /hub/api/batch/cull``            the idle culler (scope ``custom:batch:cull`` only):
                                        ``{"server": "alice/", "inactive_seconds": n}`` ->
                                        ``{"cull": bool, "why": ...}`` (appliance.hub.culling)

No parameter names a user for the first two: nobody can read or extend another user's session.
"""

from __future__ import annotations

import json
import time
from typing import Any, Optional

from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from ..options import OptionsError, validate_options
from .culling import SCOPE, IdleCulling, decide
from .handlers import _APIHandler
from .session import plan_extension, session_view


def _spawner(user) -> Any:
    if user is None or not hasattr(user, "spawners"):
        raise web.HTTPError(403, "only users have a session")
    return user.spawners[""]


def _options(spawner):
    if spawner.options is not None:
        return spawner.options
    try:  # after a hub restart: the stored user_options, validated again
        return validate_options(spawner.user_options or {}, spawner.bounds())
    except OptionsError:
        return None


def running_view(spawner, now: float) -> Optional[dict]:
    """The server part of GET /session (None when no job is known)."""
    if not spawner.job_id or not spawner.backend:
        return None
    watcher = spawner.registry.watcher(spawner.backend)
    st = watcher.jobs.get(spawner.job_id)  # the shared cache: no query of our own
    opts = _options(spawner)
    max_s = None
    if opts is not None:
        max_s = spawner.registry.scheduler(spawner.backend).max_runtime_seconds(
            spawner.user.name, opts, spawner.max_runtime_hours)
    view = session_view(backend=spawner.backend, job_id=spawner.job_id, host=spawner.job_host,
                        st=st, max_seconds=max_s, extend_enabled=bool(spawner.allow_extension),
                        now=now)
    view.update(ready=bool(spawner.ready), pending=spawner.pending,
                started_on_login=bool(getattr(spawner, "started_on_login", False)))
    return view


class SessionHandler(_APIHandler):
    @web.authenticated
    async def get(self):
        spawner = _spawner(self.current_user)
        now = time.time()
        outcome = spawner.last_outcome
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps({
            "user": spawner.user.name, "now": now,
            "server": running_view(spawner, now) if spawner.active else None,
            "last_outcome": outcome.view() if outcome else None,
        }))


class ExtendHandler(_APIHandler):
    @web.authenticated
    async def post(self):
        spawner = _spawner(self.current_user)
        if not spawner.allow_extension:
            raise web.HTTPError(403, "extending a session is not enabled on this hub")
        if not spawner.ready or not spawner.job_id:
            raise web.HTTPError(409, "no running server to extend")
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "body must be JSON") from None
        hours = body.get("hours") if isinstance(body, dict) else None
        watcher = spawner.registry.watcher(spawner.backend)
        sched = spawner.registry.scheduler(spawner.backend)
        opts = _options(spawner)
        if opts is None:
            raise web.HTTPError(409, "the server's options are unknown; cannot extend it")
        max_s = sched.max_runtime_seconds(spawner.user.name, opts, spawner.max_runtime_hours)
        try:
            limit, new_end = plan_extension(watcher.jobs.get(spawner.job_id), hours, max_s,
                                            time.time())
            await sched.extend(spawner.job_id, limit)
        except OptionsError as e:
            raise web.HTTPError(400, str(e)) from None
        except Exception as e:
            self.log.warning("extension of %s failed: %s", spawner.job_id, e)
            raise web.HTTPError(502, f"the scheduler refused the extension: {e}") from None
        self.log.info("%s: session extended to %d s (ends %s)", spawner._log_name, limit,
                      time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(new_end)))
        await watcher.status(spawner.job_id, newer_than=time.monotonic())
        await spawner.rewrite_end_file(new_end)
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps({"ends_at": new_end, "limit_seconds": limit,
                               "server": running_view(spawner, time.time())}))


class CullHandler(_APIHandler):
    @web.authenticated
    async def post(self):
        # custom scopes exist only once the hub loaded its config, so no @needs_scope here
        if SCOPE not in (self.expanded_scopes or set()):
            raise web.HTTPError(403, f"{SCOPE} is required")
        try:
            body = json.loads(self.request.body or b"{}")
            name, _, server = str(body["server"]).partition("/")
            inactive = float(body["inactive_seconds"])
        except (ValueError, KeyError, TypeError):
            raise web.HTTPError(400, "body: {\"server\": \"user/\", \"inactive_seconds\": n}")
        user = self.find_user(name)
        if user is None or server not in user.spawners:
            raise web.HTTPError(404, f"no server {body['server']!r}")
        spawner = user.spawners[server]
        if not spawner.ready:
            return self._answer(False, "the server is not running")
        cfg = IdleCulling(config=self.settings["config"])
        limit = cfg.limit_for(spawner.user_options, spawner.default_backend)
        kernels = None
        if limit > 0 and inactive >= limit:
            kernels = await self._kernels(user, spawner, cfg.kernel_check_timeout)
        cull, why = decide(limit, inactive, kernels)
        if cull:
            spawner.cull_notice = (time.time(), why)
        self.log.info("idle check of %s: %s (%s)", spawner._log_name,
                      "cull" if cull else "keep", why)
        self._answer(cull, why)

    def _answer(self, cull: bool, why: str) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps({"cull": cull, "why": why}))

    async def _kernels(self, user, spawner, timeout: float) -> Optional[list]:
        """The server's kernel list (execution_state), with a token for that one server only,
        valid a minute and deleted right after; None if the server does not answer."""
        token = user.new_api_token(note="idle check (busy kernels)", expires_in=60,
                                   scopes=[f"access:servers!server={user.name}/{spawner.name}"])
        try:
            url = spawner.server.url.rstrip("/") + "/api/kernels"
            resp = await AsyncHTTPClient().fetch(HTTPRequest(
                url, headers={"Authorization": f"token {token}"}, request_timeout=timeout,
                ssl_options=spawner.server_ssl_context()))
            return json.loads(resp.body or b"[]")
        except Exception as e:
            self.log.warning("idle check of %s: no kernel list (%s)", spawner._log_name, e)
            return None
        finally:
            from jupyterhub import orm

            orm_token = orm.APIToken.find(self.db, token)
            if orm_token is not None:
                self.db.delete(orm_token)
                self.db.commit()


session_handlers = [
    (r"/api/batch/session", SessionHandler),
    (r"/api/batch/session/extend", ExtendHandler),
    (r"/api/batch/cull", CullHandler),
]
