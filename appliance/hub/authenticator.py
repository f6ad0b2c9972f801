"""Login with the site password through PAM (pam_krb5), keeping the Kerberos ticket cache.

Why not JupyterHub's PAMAuthenticator: it uses ``pamela`` and calls setcred in a way that does not
hand back the ticket cache pam_krb5 creates. We use python-pam with ``call_end=False`` and then
``pam_setcred(PAM_ESTABLISH_CRED)`` ourselves: with ``ccache=FILE:<dir>/krb5cc_%u_XXXXXX
retain_after_close`` on the pam_krb5 line this gives a unique file per login, owned by the user,
mode 0600, whose name PAM puts in ``KRB5CCNAME``. (``resetcreds=True`` would write to
``/tmp/krb5cc_0``, a path every login shares.) The path goes to the encrypted auth_state and to the
credential bridge, right after the login (``hand_over``): the login succeeds even when the bridge
refuses the cache or is down; the home page then shows the problem and a spawn fails with "log in
again".

When PAM cannot check the password at all (pam_krb5 answers ``PAM_AUTHINFO_UNAVAIL``: the KDC
does not answer), the login page says so (``login_unavailable_message``, HTTP 503) instead of
"Invalid username or password", which would send users to reset a password that is fine.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import time
from typing import Optional

from jupyterhub.auth import Authenticator
from jupyterhub.handlers.login import LogoutHandler
from tornado.web import HTTPError
from traitlets import Float, Integer, Unicode, default

from .bridge import CredentialBridge, no_ccache_result
from .login_backoff import LoginBackoff
from .login_start import LoginStartHandler

PAM_ESTABLISH_CRED = 2
PAM_AUTHINFO_UNAVAIL = 9  # "authentication service cannot retrieve authentication info"


def pam_login(service: str, username: str,
              password: str) -> tuple[bool, str | None, str, int | None]:
    """Authenticate, account-check and establish credentials.
    Returns (ok, ccache_path, reason, PAM return code of the failure or None)."""
    import pam  # python-pam

    p = pam.pam()
    ccache = None
    try:
        ok = p.authenticate(username, password, service=service, call_end=False, resetcreds=False)
        reason = p.reason or ""
        code = getattr(p, "code", None)
        if ok:
            rc = p.pam_setcred(p.handle, PAM_ESTABLISH_CRED)
            if rc != 0:
                return False, None, f"pam_setcred failed ({rc})", rc
            value = p.getenv("KRB5CCNAME")
            if isinstance(value, str) and value:
                ccache = value
        return bool(ok), ccache, reason, None if ok else code
    finally:
        try:
            p.end()
        except Exception:
            pass


def ccache_file(ccache: str | None) -> str | None:
    """The file path of a FILE: ccache name (None for other types)."""
    if not ccache:
        return None
    if ccache.startswith("FILE:"):
        return ccache[5:]
    if ":" in ccache.split("/")[0]:
        return None  # KEYRING:, KCM:, MEMORY: cannot be handed over
    return ccache


def too_many_failures(wait: int) -> HTTPError:
    """The answer to a login attempt while its account waits: 429 + Retry-After (JupyterHub's
    error page sets an HTTPError's ``headers``)."""
    err = HTTPError(429, log_message=f"Too many failed logins for this account. Wait {wait} "
                    "seconds, then try again.")
    err.headers = {"Retry-After": str(wait)}
    return err


class CredentialLogoutHandler(LogoutHandler):
    """JupyterHub's logout, then the end of the login's credential
    (:meth:`KerberosPAMAuthenticator.end_login`)."""

    async def handle_logout(self):
        user = self.current_user
        if user is not None and hasattr(self.authenticator, "end_login"):
            await self.authenticator.end_login(user)


class KerberosPAMAuthenticator(Authenticator):
    """PAM login that keeps the user's Kerberos ticket cache (see module doc).

    Credentials end with the login: logging out with no server running ends the user's
    credential at once (:meth:`end_login`: the bridge forgets it, the credd's copy and the login
    caches are deleted); with a server running it is kept for that server (sessions survive
    logout) and ends when the user's last server stops (:meth:`post_spawn_stop`), unless the
    user logged in again meanwhile. The credd holds one ticket per user, so a logout ends the
    credential for every browser session of that user.
    """

    def get_handlers(self, app):
        # registered before JupyterHub's own handlers, so this /logout is the one that answers;
        # /login is JupyterHub's LoginHandler plus the optional start on login
        # (BatchSpawner.start_on_login, appliance.hub.login_start)
        return [("/login", LoginStartHandler), ("/logout", CredentialLogoutHandler)]

    service = Unicode("jupyterhub", help="PAM service name (/etc/pam.d/<service>).").tag(config=True)
    credential_warn_seconds = Float(
        86400.0, min=0,
        help="The home page warns when the ticket's renewable lifetime ends within this many "
        "seconds (the user must log in again before then to keep notebooks supplied).",
    ).tag(config=True)
    failure_floor_seconds = Float(
        1.0, min=0, max=30,
        help="Every failed login takes at least this long, so unknown users and wrong passwords "
        "are indistinguishable by timing.",
    ).tag(config=True)
    login_unavailable_message = Unicode(
        "The Kerberos login service (KDC) does not answer, so your password cannot be checked "
        "right now. Notebooks that are already running are not affected. Please try again in a "
        "few minutes.",
        help="What the login page says (HTTP 503) when PAM cannot check any password "
        "(PAM_AUTHINFO_UNAVAIL: pam_krb5 reached no KDC), instead of 'Invalid username or "
        "password'.",
    ).tag(config=True)

    login_backoff_after = Integer(
        5, min=1,
        help="Failed logins of one account before further attempts for it must wait (answered "
        "429 with Retry-After, without checking the password). Counted per account name, known "
        "or not; the nginx throttle per client address is separate (docs/security.md).",
    ).tag(config=True)
    login_backoff_seconds = Float(
        10.0, min=1,
        help="The first wait after login_backoff_after failures; it doubles with each further "
        "failure, up to login_backoff_max_seconds.",
    ).tag(config=True)
    login_backoff_max_seconds = Float(
        600.0, min=1, help="The longest wait an account's failed logins can cause."
    ).tag(config=True)
    login_backoff_forget_seconds = Float(
        3600.0, min=1,
        help="An account's failures are forgotten after this long without one (a successful "
        "login forgets them at once).",
    ).tag(config=True)
    login_backoff_max_accounts = Integer(
        100000, min=100,
        help="Most accounts whose failures are remembered at once (memory bound; the oldest "
        "unlocked ones are dropped first).",
    ).tag(config=True)

    # What the login logic runs on; tests replace them on an instance (not settings).
    pam_login = staticmethod(pam_login)
    monotonic = staticmethod(time.monotonic)
    sleep = staticmethod(asyncio.sleep)

    @default("enable_auth_state")
    def _default_enable_auth_state(self):
        return True

    @property
    def backoff(self) -> LoginBackoff:
        if getattr(self, "_backoff", None) is None:
            self._backoff = LoginBackoff(
                after=self.login_backoff_after, base=self.login_backoff_seconds,
                maximum=self.login_backoff_max_seconds, forget=self.login_backoff_forget_seconds,
                max_accounts=self.login_backoff_max_accounts, clock=lambda: self.monotonic())
        return self._backoff

    async def authenticate(self, handler, data):
        username = (data or {}).get("username", "")
        password = (data or {}).get("password", "")
        start = self.monotonic()
        ok, ccache, reason, code = False, None, "invalid input", None
        if (
            isinstance(username, str)
            and isinstance(password, str)
            and username
            and password
            and self.validate_username(username)
            and len(username) <= 64
            and len(password) <= 1024
        ):
            username = self.normalize_username(username)
            wait = self.backoff.begin(username)
            if wait:
                self.log.warning("Login for %r refused: too many failed logins, %d s left",
                                 username, wait)
                raise too_many_failures(wait)
            try:
                result = await asyncio.to_thread(
                    self.pam_login, self.service, username, password)
                ok, ccache, reason = result[:3]
                code = result[3] if len(result) > 3 else None
            finally:
                # a KDC that does not answer checked no password: not a failure of the account
                self.backoff.end(username, ok, started=start,
                                 checked=code != PAM_AUTHINFO_UNAVAIL)
        if not ok:
            self.log.warning("Login failed for %r: %s", username[:64] if isinstance(username, str) else "?", reason)
            left = self.failure_floor_seconds - (self.monotonic() - start)
            if left > 0:
                await self.sleep(left)
            if code == PAM_AUTHINFO_UNAVAIL:
                raise HTTPError(503, self.login_unavailable_message)
            return None
        path = ccache_file(ccache)
        if path is None:
            self.log.warning("Login of %s produced no FILE ticket cache (KRB5CCNAME=%r)", username, ccache)
        credential = await self.hand_over(username, path) if path else no_ccache_result()
        principal = credential.get("principal")
        return {
            "name": username,
            "auth_state": {"ccache": path, "principal": principal, "login_time": time.time(),
                           "credential": credential},
        }

    async def hand_over(self, username: str, path: str | None) -> dict:
        """Give the login's ticket cache to the credential bridge; never fails the login.
        Returns auth_state["credential"] (see appliance.hub.bridge.CredentialBridge.hand_over)."""
        return await CredentialBridge(parent=self).hand_over(username, path)

    async def end_credential(self, username: str) -> Optional[dict]:
        """Have the bridge end ``username``'s credential (never raises; see CredentialBridge.end)."""
        return await CredentialBridge(parent=self).end(username)

    async def end_login(self, user) -> str:
        """At logout: "ended" (no server: the credential ends now) or "kept" (a server runs or
        starts: it keeps the credential until the user's last server stops)."""
        state = await user.get_auth_state() or {}
        state["logged_out"] = True
        if any(sp.active for sp in user.spawners.values()):
            await user.save_auth_state(state)
            self.log.info("%s logged out; the Kerberos credential is kept for the running "
                          "server(s)", user.name)
            return "kept"
        await self.end_credential(user.name)
        state["ccache"] = None
        await user.save_auth_state(state)
        return "ended"

    async def post_spawn_stop(self, user, spawner):
        """A server stopped: a logged-out user with no other server left loses the credential."""
        state = await user.get_auth_state() or {}
        if not state.get("logged_out"):
            return
        if any(sp.active for sp in user.spawners.values() if sp is not spawner):
            return
        self.log.info("%s is logged out and has no server left: ending the credential", user.name)
        await self.end_credential(user.name)
        state["ccache"] = None
        await user.save_auth_state(state)

    async def pre_spawn_start(self, user, spawner):
        """Give the spawner the login's ticket cache."""
        auth_state = await user.get_auth_state()
        spawner.ccache = (auth_state or {}).get("ccache")

    def check_user_exists(self, username: str) -> bool:
        try:
            pwd.getpwnam(username)
            return True
        except KeyError:
            return False
