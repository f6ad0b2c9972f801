"""Start on login (``BatchSpawner.start_on_login``, off by default).

With it on, a successful login of a user who has no server but has last options that are still
valid submits a spawn with those options, in the background: the login's redirect (to the home
page) does not wait for it, so the server is starting while the page renders. The home page says
so and offers "Choose other options" (``POST /hub/batch/other-options``), which stops that server
and opens the spawn form.

Hooks, not a login of our own: :class:`LoginStartHandler` is JupyterHub's ``LoginHandler`` with
``login_user`` extended. JupyterHub's ``login_user`` has checked the password, saved the auth
state (the login's ticket cache, which ``pre_spawn_start`` hands to the spawn) and set the cookie
when it returns; only then is the spawn started, through the hub's own ``spawn_single_user``
exactly as its spawn page does it (the same option validation, limits and bookkeeping).

:func:`decide` is the whole policy, pure: no JupyterHub, no clock.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from jupyterhub.handlers.base import BaseHandler
from jupyterhub.handlers.login import LoginHandler
from jupyterhub.utils import url_path_join
from tornado import web

#: last outcomes after which a login starts nothing: the last start did not work, and the same
#: options would most likely fail again (one batch job per login); the home page says why.
START_FAILED = frozenset({"refused", "failed", "held", "timed_out"})

#: the background spawns logins started, referenced until they end (asyncio itself keeps only
#: weak references to tasks); tests wait for them here
in_flight: set = set()


@dataclass(frozen=True)
class Decision:
    start: bool
    reason: str  # why not (for the log); "" when it starts


def decide(*, enabled: bool, has_options: bool, server_active: bool,
           last_start_failed: bool, needs_credential: bool, credential_ok: bool,
           spawns_pending: int, spawn_limit: int, servers_active: int,
           server_limit: int) -> Decision:
    """Whether a login starts the user's default server with the last options.

    ``has_options``: the user's last accepted options validate against the current bounds
    (``BatchSpawner.last_choice()``); ``needs_credential``: their backend needs the Kerberos
    ticket (``require_credential``) and ``credential_ok`` says whether this login handed it to
    the bridge; the limits are the hub's ``concurrent_spawn_limit`` / ``active_server_limit``
    (0 = none), which a login never exceeds: it skips, where a spawn request would get a 429.
    """
    if not enabled:
        return Decision(False, "start_on_login is off")
    if not has_options:
        return Decision(False, "no valid last options")
    if server_active:
        return Decision(False, "a server is already active or pending")
    if last_start_failed:
        return Decision(False, "the last start did not work")
    if needs_credential and not credential_ok:
        return Decision(False, "this login's Kerberos ticket was not stored")
    if spawn_limit and spawns_pending >= spawn_limit:
        return Decision(False, f"concurrent_spawn_limit reached ({spawns_pending} pending)")
    if server_limit and servers_active >= server_limit:
        return Decision(False, f"active_server_limit reached ({servers_active} active)")
    return Decision(True, "")


async def start_after_login(handler: BaseHandler, user) -> bool:
    """After a successful login: start the user's default server with the last options if
    :func:`decide` says so; True when a spawn was started (not awaited)."""
    spawner = user.spawner
    if not getattr(spawner, "start_on_login", False):
        return False  # the setting is off (or not a BatchSpawner): nothing else is looked at
    choice = spawner.last_choice()
    backend = (spawner.last_options or {}).get("backend") or spawner.default_backend
    outcome = spawner.last_outcome
    counts = handler.users.count_active_users()
    auth_state = await user.get_auth_state() or {}
    decision = decide(
        enabled=True,
        has_options=choice is not None,
        server_active=spawner.active,
        # _failed: the last spawn of this hub process raised (JupyterHub keeps its exception)
        last_start_failed=bool(spawner._failed)
        or (outcome is not None and outcome.kind in START_FAILED),
        needs_credential=backend in spawner.require_credential,
        credential_ok=bool((auth_state.get("credential") or {}).get("ok")),
        spawns_pending=counts["spawn_pending"] + counts["proxy_pending"],
        spawn_limit=handler.concurrent_spawn_limit,
        servers_active=counts["active"],
        server_limit=handler.active_server_limit,
    )
    if not decision.start:
        handler.log.info("Login of %s starts no server: %s", user.name, decision.reason)
        return False
    handler.log.info("Login of %s: starting the server with the last options (%s)", user.name,
                     choice["summary"])
    # Set before the spawn runs: the spawner keeps it through the start (clear_state) and drops it
    # when that server stops; the home page reads it.
    spawner.started_on_login = True
    task = asyncio.ensure_future(_spawn(handler, user, spawner, dict(spawner.last_options)))
    in_flight.add(task)
    task.add_done_callback(in_flight.discard)
    return True


async def _spawn(handler: BaseHandler, user, spawner, options: dict) -> None:
    """JupyterHub's own spawn, as its spawn page runs it; failures are logged (the spawn's own
    failures also end up in the spawner's last outcome, which the home page shows)."""
    try:
        await handler.spawn_single_user(user, "", options=options)
    except Exception as e:  # noqa: BLE001 - a background task: nobody else would see it
        if not spawner.active:  # refused before it began (e.g. a limit reached meanwhile)
            spawner.started_on_login = False
        handler.log.warning("Start on login of %s failed: %s", user.name, e)


class LoginStartHandler(LoginHandler):
    """JupyterHub's login form; after a successful login :func:`start_after_login`."""

    _login_started = False

    async def login_user(self, data=None):
        user = await super().login_user(data)
        if user is not None:
            try:
                self._login_started = await start_after_login(self, user)
            except Exception:  # never fails a login: the user can still start from the form
                self.log.exception("Start on login of %s could not be started", user.name)
        return user

    def get_next_url(self, user=None, default=None):
        # A login that started a server goes to the home page (it says so and offers other
        # options) instead of JupyterHub's default, the spawn page; an explicit ?next= or the
        # admin's default_url still win.
        if self._login_started and default is None and not self.default_url:
            default = url_path_join(self.hub.base_url, "home")
        return super().get_next_url(user, default)


async def stop_for_other_options(handler: BaseHandler, user, spawner,
                                 timeout: float = 10.0) -> None:
    """Stop the user's default server, also while it is still starting: JupyterHub's own steps
    (its REST API's DELETE does the same), waiting for the cancelled start instead of a sleep.
    Returns once stopped, or after ``timeout`` (then the stop goes on; the spawn page waits for
    it)."""
    if spawner.pending == "spawn":
        future = spawner._spawn_future
        if future is not None and not future.done():
            future.cancel()
            await asyncio.wait([future], timeout=timeout)
    if spawner.pending == "stop" and spawner._stop_future is not None:
        await asyncio.wait([spawner._stop_future], timeout=timeout)
    elif spawner.active and not spawner.pending:
        await handler.stop_single_user(user, "")


class OtherOptionsHandler(BaseHandler):
    """``POST /hub/batch/other-options`` (the home page's "Choose other options"; XSRF-checked
    like every form POST of the hub): the current user's default server, if a login started it,
    is stopped; then the spawn form. A server the user started herself is never stopped here
    (a stale page cannot end it): she just lands on the spawn page, which leads to it."""

    @web.authenticated
    async def post(self):
        user = self.current_user
        if not hasattr(user, "spawners"):
            raise web.HTTPError(403, "only users have servers")
        spawner = user.spawner
        if getattr(spawner, "started_on_login", False) and spawner.active:
            self.log.info("%s chose other options: stopping the server the login started",
                          user.name)
            await stop_for_other_options(self, user, spawner, timeout=self.slow_stop_timeout)
        self.redirect(url_path_join(self.hub.base_url, "spawn"))


login_start_handlers = [(r"/batch/other-options", OtherOptionsHandler)]

