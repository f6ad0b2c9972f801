"""Where the bridge puts a checked ccache: the ``CredStore`` interface and two stores.

* :class:`HTCondorCredStore` - the HTCondor credd (``Credd.add_user_cred(Kerberos, ...)``),
  via ``htcondor2`` (falls back to the version-1 ``htcondor`` module).
* :class:`MemoryCredStore` - keeps the bytes in a dict; for tests and dry runs.

A store's ``put`` may block (network); the bridge calls it from a worker thread.
It must raise on failure; the message should name the problem, never the data.
"""

from __future__ import annotations

import threading
import time
from typing import Optional, Protocol

from appliance.names import USER_NAME_RE


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


_GENERIC_ADD = 0  # store_cred modes (HTCondor's store_cred.h), | the credential type
_GENERIC_QUERY = 2


class ConfirmTimeout(RuntimeError):
    """The credd stored the credential, but its credmon did not process it in time."""


class HTCondorCredStore:
    """Stores into an HTCondor credd.

    ``credd_name``: the credd's name to locate through the collector (``None``: the HTCondor
    configuration's ``CREDD_HOST``, else the collector's only credd).
    ``user_template``: how the credd names the user; the credd wants ``user@domain``
    and writes ``<dir>/<user>.cred``.  A template without ``@`` gets ``@$(UID_DOMAIN)``.
    ``confirm_timeout``: see :meth:`put`.

    The identity the bridge authenticates with (an IDTOKEN) must be the credd's only
    ``CRED_SUPER_USERS`` entry; that is site configuration (docs/credentials.md).
    """

    def __init__(
        self,
        credd_name: Optional[str] = None,
        user_template: str = "{user}",
        module=None,
        confirm_timeout: float = 5.0,
        poll: float = 0.05,
        schedd_name: Optional[str] = None,
    ) -> None:
        self.credd_name = credd_name
        self.schedd_name = schedd_name
        self._credd_name: Optional[str] = None  # the located credd's Name
        self.user_template = user_template
        self._mod = module
        self.confirm_timeout = confirm_timeout
        self.poll = poll
        self._credd_obj = None
        self._lock = threading.Lock()  # the bindings are not meant for concurrent use

    def _htcondor(self):
        if self._mod is None:
            try:
                import htcondor2 as mod  # type: ignore
            except ImportError:  # pragma: no cover - depends on install
                import htcondor as mod  # type: ignore
            self._mod = mod
        return self._mod

    def _credd(self, fresh: bool = False):
        if self._credd_obj is None or fresh:
            mod = self._htcondor()
            name = self.credd_name
            if not name:
                try:
                    name = mod.param.get("CREDD_HOST") or None
                except Exception:  # noqa: BLE001
                    name = None
            coll = mod.Collector()
            if name:
                ad = coll.locate(mod.DaemonType.Credd, name)
            else:
                ads = list(coll.locateAll(mod.DaemonType.Credd))
                if len(ads) != 1:
                    raise RuntimeError(
                        f"the collector lists {len(ads)} credds: set CREDD_BRIDGE_CREDD_NAME "
                        "(or CREDD_HOST in the HTCondor client configuration)")
                ad = ads[0]
            self._credd_obj = mod.Credd(ad)
            try:
                self._credd_name = str(ad["Name"])
            except Exception:  # noqa: BLE001
                self._credd_name = name
        return self._credd_obj

    def _kerberos(self):
        mod = self._htcondor()
        types = getattr(mod, "CredType", None) or getattr(mod, "CredTypes")
        return types.Kerberos

    def credd_user(self, user: str) -> str:
        name = self.user_template.format(user=user)
        if "@" not in name:
            domain = None
            try:
                domain = self._htcondor().param.get("UID_DOMAIN")
            except Exception:  # noqa: BLE001 - unconfigured bindings
                domain = None
            if domain:
                name = f"{name}@{domain}"
        return name

    def _call(self, fn):
        """Run ``fn(credd)``; on failure locate the credd again and retry once."""
        try:
            return fn(self._credd())
        except ConfirmTimeout:
            raise
        except Exception:  # noqa: BLE001 - stale address, restarted credd, ...
            return fn(self._credd(fresh=True))

    def put(self, user: str, ccache: bytes) -> None:
        """Store and confirm.

        The credd writes ``<user>.cred`` and answers at once, but with the mtime of the OLD
        ``<user>.cc`` when one exists, before its credmon has looked at the new one.  So after
        the store, query until the ``.cc`` is at least as new as the store (the appliance's
        credmon keeps ``.cc`` no older than ``.cred`` after every pass); raise when that takes
        longer than ``confirm_timeout`` seconds.  (HTCondor reports whole seconds: a ``.cc``
        written earlier within the same second counts as fresh.)
        """
        name = self.credd_user(user)
        with self._lock:
            self._call(lambda c: self._put_confirmed(c, name, ccache))

    def _no_wait_store(self):
        """htcondor2's internal store call, if available (see :meth:`_put_confirmed`)."""
        mod = self._htcondor()
        fn = getattr(mod, "_credd_do_store_cred", None)
        if fn is None and getattr(mod, "__name__", "") == "htcondor2":
            try:
                from htcondor2.htcondor2_impl import _credd_do_store_cred as fn  # type: ignore
            except ImportError:  # pragma: no cover - other bindings
                fn = None
        return fn

    def _put_confirmed(self, credd, name: str, ccache: bytes) -> None:
        kerberos = self._kerberos()
        started = time.time()
        # Credd.add_user_cred asks the credd to wait for the credmon's .cc before answering; for
        # a user without a .cc yet, the credd polls for it only once a second (~1 s per first
        # store, serialised here). Without that flag the credd still signals its credmon and
        # answers at once; the confirmation below does the waiting, every 50 ms.
        fn, addr = self._no_wait_store(), getattr(credd, "_addr", None)
        if fn is not None and addr is not None:
            fn(addr, name, bytes(ccache), _GENERIC_ADD | int(kerberos), None, None, -1)
        else:
            credd.add_user_cred(kerberos, bytes(ccache), name)
        deadline = time.monotonic() + self.confirm_timeout
        while True:
            if fn is not None and addr is not None:
                # a query without the wait flag, too: with it, the credd answers a query for a
                # user whose first .cc is not there yet only after its next 1-s poll
                mtime = fn(addr, name, None, _GENERIC_QUERY | int(kerberos), None, None, -1)
                if not isinstance(mtime, int) or mtime < 1_000_000_000:
                    mtime = None  # SUCCESS_PENDING: .cred stored, no .cc yet
            else:
                mtime = credd.query_user_cred(kerberos, name)
            if isinstance(mtime, int) and mtime >= int(started):
                return
            if time.monotonic() >= deadline:
                raise ConfirmTimeout(
                    f"the credd took the credential but its credmon did not confirm it within "
                    f"{self.confirm_timeout:g} s")
            time.sleep(self.poll)

    def running_hosts(self, user: str) -> list[str]:
        """Execute hosts of ``user``'s running jobs that carry a Kerberos credential, from the
        schedd next to the credd (``schedd_name``, default: the credd's own name)."""
        if not USER_NAME_RE.match(user):
            raise ValueError("bad user name")
        mod = self._htcondor()
        name = self.schedd_name
        if not name:
            self._credd()
            name = self._credd_name
        coll = mod.Collector()
        ad = coll.locate(mod.DaemonType.Schedd, name) if name else coll.locate(
            mod.DaemonType.Schedd)
        jobs = mod.Schedd(ad).query(
            constraint=f'Owner == "{user}" && JobStatus == 2 && SendCredential =?= true',
            projection=["RemoteHost"])
        hosts = set()
        for job in jobs:
            remote = str(job.get("RemoteHost") or "")
            host = remote.split("@")[-1]
            if host:
                hosts.add(host)
        return sorted(hosts)

    def push_running(self, user: str, ccache: bytes) -> tuple[list[str], dict[str, str]]:
        """Store ``ccache`` in the credd of every execute node running one of ``user``'s jobs.

        HTCondor 23.9 gives a running job a newer Kerberos ticket only through the execute
        node's own credential directory (the starter copies ``<user>.cc`` into the job whenever
        it changes); the shadow never sends one again. So the execute nodes run a credd too
        (same directory, the bridge as its only CRED_SUPER_USERS entry), and the bridge stores a
        new login's ticket there; the node's credmon makes the ``.cc``. Nodes without a credd are
        reported and skipped: their jobs keep renewing the old ticket until its renew-till.
        Returns ``(hosts done, {host: error})``.
        """
        name = self.credd_user(user)
        done: list[str] = []
        errors: dict[str, str] = {}
        with self._lock:
            hosts = self.running_hosts(user)
            mod = self._htcondor()
            for host in hosts:
                try:
                    ad = mod.Collector().locate(mod.DaemonType.Credd, host)
                except Exception:  # noqa: BLE001
                    errors[host] = "no credd on this node (its jobs keep the old ticket)"
                    continue
                try:
                    self._put_confirmed(mod.Credd(ad), name, ccache)
                    done.append(host)
                except Exception as exc:  # noqa: BLE001
                    errors[host] = str(exc)
        return done, errors

    def query(self, user: str) -> Optional[int]:
        """The credd's ``.cc`` mtime for ``user`` (None: no credential)."""
        kerberos = self._kerberos()
        with self._lock:
            return self._call(lambda c: c.query_user_cred(kerberos, self.credd_user(user)))

    def delete(self, user: str) -> None:
        kerberos = self._kerberos()
        with self._lock:
            self._call(lambda c: c.delete_user_cred(kerberos, self.credd_user(user)))
