"""Where the bridge puts a checked ccache: the ``CredStore`` interface and two stores.

* :class:`HTCondorCredStore` - the HTCondor credd (``Credd.add_user_cred(Kerberos, ...)``),
  via ``htcondor2`` (falls back to the version-1 ``htcondor`` module).
* :class:`MemoryCredStore` - keeps the bytes in a dict; for tests and dry runs.

A store's ``put`` may block (network); the bridge calls it from a worker thread.
It must raise on failure; the message should name the problem, never the data.
"""

from __future__ import annotations

import threading
from typing import Optional, Protocol


class CredStore(Protocol):
    def put(self, user: str, ccache: bytes) -> None:
        """Store (replace) ``user``'s Kerberos credential."""

    def delete(self, user: str) -> None:
        """Remove ``user``'s Kerberos credential (missing is not an error)."""


class MemoryCredStore:
    """A dict-backed store (thread safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.creds: dict[str, bytes] = {}
        self.puts = 0

    def put(self, user: str, ccache: bytes) -> None:
        with self._lock:
            self.creds[user] = bytes(ccache)
            self.puts += 1

    def delete(self, user: str) -> None:
        with self._lock:
            self.creds.pop(user, None)


class HTCondorCredStore:
    """Stores into an HTCondor credd.

    ``credd_name``: the credd's name to locate through the collector
    (``None``: the local/default credd, as ``htcondor2.Credd()`` finds it).
    ``user_template``: how the credd names the user, e.g. ``"{user}"`` or
    ``"{user}@mini.test"``; the credd writes ``<dir>/<name before @>.cred``.

    The identity the bridge authenticates with (e.g. an IDTOKEN) must be allowed
    to store credentials for other users; that is site configuration.
    """

    def __init__(
        self,
        credd_name: Optional[str] = None,
        user_template: str = "{user}",
        module=None,
    ) -> None:
        self.credd_name = credd_name
        self.user_template = user_template
        self._mod = module

    def _htcondor(self):
        if self._mod is None:
            try:
                import htcondor2 as mod  # type: ignore
            except ImportError:  # pragma: no cover - depends on install
                import htcondor as mod  # type: ignore
            self._mod = mod
        return self._mod

    def _credd(self):
        mod = self._htcondor()
        if self.credd_name:
            ad = mod.Collector().locate(mod.DaemonType.Credd, self.credd_name)
            return mod.Credd(ad)
        return mod.Credd()

    def _kerberos(self):
        mod = self._htcondor()
        types = getattr(mod, "CredType", None) or getattr(mod, "CredTypes")
        return types.Kerberos

    def put(self, user: str, ccache: bytes) -> None:
        self._credd().add_user_cred(
            self._kerberos(), bytes(ccache), self.user_template.format(user=user)
        )

    def delete(self, user: str) -> None:
        self._credd().delete_user_cred(self._kerberos(), self.user_template.format(user=user))
