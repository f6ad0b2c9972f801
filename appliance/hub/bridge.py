"""The hub's ONE connection to the credential bridge (``appliance.credd_bridge``).

Everything the hub process asks the bridge goes through :class:`CredentialBridge`: the socket
path and the timeouts are its settings (``c.CredentialBridge.socket``, ``.timeout``,
``.state_timeout``), and the messages a user sees about their Kerberos ticket are written here.

* the authenticator, right after a login: :meth:`CredentialBridge.hand_over` (never fails the
  login; the outcome goes to the auth state);
* the spawner, before every submission that needs a ticket:
  :meth:`CredentialBridge.forward_credential` -> the path of a one-time ticket cache, or
  :class:`CredentialUnavailable` with the text to show ("... log out and log in again");
* the credential API handler (home page): :meth:`CredentialBridge.state`;
* the authenticator, when a login ends (logout with no server left, or the last server of a
  logged-out user stopped): :meth:`CredentialBridge.end`.

Make one with ``CredentialBridge(parent=self)`` from the authenticator or spawner (the hub's
configuration reaches it through the parent) or ``CredentialBridge(config=...)``.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Optional

from traitlets import Float, Unicode
from traitlets.config import LoggingConfigurable

from ..credd_bridge import DEFAULT_SOCKET
from ..credd_bridge.client import REFUSAL_CODES, BridgeClient, BridgeError, BridgeRefused
from . import metrics

LOGIN_AGAIN = "Please log out and log in again to get a new Kerberos ticket."

#: What a refusal code means for the user (the bridge's own message follows in brackets).
REFUSAL_TEXT = {
    "no_credential": "No Kerberos ticket is stored for you",
    "expired": "Your Kerberos ticket has expired or is about to",
    "not_renewable": "Your Kerberos ticket is not renewable",
    "wrong_principal": "Your ticket cache holds another principal",
}


class CredentialUnavailable(Exception):
    """No usable ticket for this spawn or view; ``str(e)`` is the text for the user, ``code``
    the bridge's error code, ``detail`` the bridge's own words."""

    def __init__(self, message: str, code: str = "", detail: str = ""):
        super().__init__(message)
        self.message = message
        self.code = code
        self.detail = detail


def _fmt_time(ts) -> str:
    if not ts:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


class _TimedClient(BridgeClient):
    """The bridge client, each request timed for the hub's metrics (op, seconds, result)."""

    async def request(self, op: str, **fields):
        t0, result = time.monotonic(), "error"
        try:
            response = await super().request(op, **fields)
            if response.get("ok") is True:
                result = "ok"
            elif response.get("error") in REFUSAL_CODES:
                result = "refused"
            return response
        finally:
            metrics.observe_bridge_request(op, time.monotonic() - t0, result)


def no_ccache_result() -> dict:
    """auth_state["credential"] of a login that produced no FILE ticket cache."""
    return {"ok": False, "error": "no_ccache",
            "message": "the login produced no FILE ticket cache (check pam_krb5's ccache= option)"}


class CredentialBridge(LoggingConfigurable):
    """Client of the credential bridge for the hub (see module doc)."""

    socket = Unicode(
        DEFAULT_SOCKET,
        help="Unix socket of the credential bridge (appliance.credd_bridge), which checks a "
        "login's ticket cache, stores it in the HTCondor credd and keeps it renewed. Empty: the "
        "hub hands no ticket caches over (logins work, spawns that need a ticket fail).",
    ).tag(config=True)
    timeout = Float(
        15.0,
        help="Seconds a login or a spawn waits for the bridge to store the ticket (a login "
        "succeeds either way; the home page then shows the problem).",
    ).tag(config=True)
    state_timeout = Float(
        5.0, help="Seconds the home page's credential view waits for the bridge's answer."
    ).tag(config=True)

    def _client(self, timeout: Optional[float] = None) -> BridgeClient:
        return _TimedClient(self.socket, timeout=self.timeout if timeout is None else timeout)

    # -- login -----------------------------------------------------------------------------

    async def hand_over(self, user: str, path: Optional[str]) -> dict:
        """Give the login's ticket cache at ``path`` to the bridge; never raises.

        Returns what goes into ``auth_state["credential"]``: ``{"ok", "error", "message",
        "seconds"}`` (+ ``state``, ``principal`` when stored).
        """
        if not path:
            return no_ccache_result()
        if not self.socket:
            return {"ok": False, "error": "disabled", "message": "no credential bridge configured"}
        t0 = time.monotonic()
        out: dict = {"ok": False, "error": None, "message": None}
        try:
            state = await self._client().store(user, path)
            out.update(ok=True, state=state.get("state"), principal=state.get("principal"))
        except BridgeError as e:  # BridgeRefused included
            out.update(error=e.code, message=e.message)
        out["seconds"] = round(time.monotonic() - t0, 3)
        if out["ok"]:
            self.log.info("Kerberos ticket of %s stored in the credd in %.3f s", user,
                          out["seconds"])
        else:
            self.log.warning("Kerberos ticket of %s not stored (%s: %s) after %.3f s", user,
                             out["error"], out["message"], out["seconds"])
        return out

    # -- spawn -------------------------------------------------------------------------------

    async def forward_credential(
        self,
        user: str,
        login_ccache: Optional[str],
        *,
        min_valid: float,
        emit: Callable[[str, Optional[int]], None],
    ) -> str:
        """Have the bridge store its current (renewed) copy of ``user``'s ticket in the credd
        again (the credd drops credentials of users without jobs) and write a copy for this
        one submission; return that file's path (the caller deletes it after submitting).

        No usable ticket (none stored, expired, valid for less than ``min_valid`` s): raise
        :class:`CredentialUnavailable` at once, before anything is submitted. If the bridge
        knows nothing of the user (it was restarted without its state, or forgot the user),
        the login's own cache ``login_ccache`` is handed over first when it still exists.
        ``emit(message, progress)`` reports progress to the spawn page.
        """
        client = self._client()
        for attempt in (0, 1):
            try:
                answer = await client.refresh(user, write_ccache=True, min_valid=min_valid)
            except BridgeRefused as e:
                if (e.code == "no_credential" and attempt == 0 and login_ccache
                        and os.path.exists(login_ccache)):
                    try:
                        await client.store(user, login_ccache)
                        continue
                    except BridgeRefused as e2:
                        e = e2
                    except BridgeError as e2:
                        raise CredentialUnavailable(
                            f"Your Kerberos ticket could not be stored ({e2.message}). "
                            "Try again in a minute.", e2.code, e2.message) from None
                what = REFUSAL_TEXT.get(e.code, "Your Kerberos ticket cannot be used")
                self.log.warning("no usable credential for %s: %s (%s)", user, e.code, e.message)
                raise CredentialUnavailable(f"{what} ({e.message}). {LOGIN_AGAIN}", e.code,
                                            e.message) from None
            except BridgeError as e:
                self.log.warning("credential bridge failed for %s: %s", user, e)
                raise CredentialUnavailable(
                    f"Your Kerberos ticket could not be forwarded to the batch system "
                    f"({e.message}). Try again in a minute.", e.code, e.message) from None
            path = answer.get("ccache_path")
            if not path:
                raise CredentialUnavailable(
                    "The credential bridge returned no ticket for the submission.")
            state = answer.get("state") or {}
            emit(f"Kerberos ticket of {state.get('principal')} forwarded "
                 f"(valid until {_fmt_time(state.get('valid_until'))})", 8)
            return path
        raise CredentialUnavailable(  # pragma: no cover - the loop returns or raises
            f"No Kerberos ticket is stored for you. {LOGIN_AGAIN}", "no_credential")

    # -- home page ---------------------------------------------------------------------------

    async def state(self, user: str) -> Optional[dict]:
        """The bridge's public state of ``user``'s ticket (no ticket data), ``None`` if it
        holds none. Raises :class:`CredentialUnavailable` when the bridge cannot be asked."""
        try:
            return await self._client(self.state_timeout).state(user)
        except BridgeError as e:
            raise CredentialUnavailable(
                f"The credential service is not reachable ({e.message}).", e.code,
                e.message) from None

    # -- logout ------------------------------------------------------------------------------

    async def end(self, user: str) -> Optional[dict]:
        """End ``user``'s credential: the bridge forgets it, deletes the credd's copy and
        removes the user's login ticket caches. Never raises: the bridge's answer, or ``None``
        (no bridge configured, or it failed; logged)."""
        if not self.socket:
            return None
        try:
            out = await self._client().end(user)
        except BridgeError as e:
            self.log.warning("Kerberos credential of %s not ended (%s: %s)", user, e.code,
                             e.message)
            return None
        self.log.info("Kerberos credential of %s ended (%s)", user, out)
        return out
