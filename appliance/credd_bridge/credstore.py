"""Where the bridge puts a checked ccache: the ``CredStore`` interface and two stores.

* :class:`HTCondorCredStore` - the HTCondor credd (``Credd.add_user_cred(Kerberos, ...)``),
  via ``htcondor2`` (falls back to the version-1 ``htcondor`` module).
* :class:`MemoryCredStore` - keeps the bytes in a dict; for tests and dry runs.

A store's ``put`` may block (network); the bridge calls it from a worker thread.
It must raise on failure; the message should name the problem, never the data.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Optional, Protocol

from appliance.hub.scheduler.routehost import HostRefused, slot_host
from appliance.names import USER_NAME_RE

log = logging.getLogger(__name__)


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


class CreddNotFound(RuntimeError):
    """The collector does not list the credd we must talk to (down, or not advertised yet)."""


class HTCondorCredStore:
    """Stores into an HTCondor credd.

    ``credd_name``: the credd's name to locate through the collector (``None``: the HTCondor
    configuration's ``CREDD_HOST``, else the collector's only credd).
    ``user_template``: how the credd names the user; the credd wants ``user@domain``
    and writes ``<dir>/<user>.cred``.  A template without ``@`` gets ``@$(UID_DOMAIN)``.
    ``confirm_timeout``: see :meth:`put`. ``clock``: the wall clock (seconds since the epoch).

    The identity the bridge authenticates with (an IDTOKEN) must be the credd's only
    ``CRED_SUPER_USERS`` entry; that is site configuration (docs/credentials.md).
    """

    def __init__(
        self,
        credd_name: Optional[str] = None,
        user_template: str = "{user}",
        module=None,
        confirm_timeout: float = 12.0,
        poll: float = 0.05,
        restore_after: float = 3.0,
        schedd_name: Optional[str] = None,
        clock=time.time,
    ) -> None:
        self.credd_name = credd_name
        self.clock = clock  # wall clock, compared with the credd's file times
        self.schedd_name = schedd_name
        self._credd_name: Optional[str] = None  # the located credd's Name
        self.user_template = user_template
        self._mod = module
        self.confirm_timeout = confirm_timeout
        self.poll = poll
        self.restore_after = restore_after  # store again when not confirmed after this long
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
            if name:
                ad = self._locate_credd(name)
            else:
                ads = list(mod.Collector().locateAll(mod.DaemonType.Credd))
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

    def _locate_credd(self, name: str):
        """The collector's ad of the credd called ``name``, or ``CreddNotFound``.

        Never ``None``: htcondor2's ``Collector.locate`` returns ``None`` for a name the
        collector does not list, and ``Credd(None)`` is the DEFAULT credd (``CREDD_HOST``, the
        lane). A push to a node whose credd was not advertised (yet) once went to the lane that
        way, and the lane's fresh ``.cc`` confirmed it (issue 15)."""
        mod = self._htcondor()
        try:
            ad = mod.Collector().locate(mod.DaemonType.Credd, name)
        except Exception as exc:  # noqa: BLE001 - v1 bindings raise for unknown names
            raise CreddNotFound(f"cannot locate the credd named {name}: {exc}") from None
        if ad is None:
            raise CreddNotFound(f"the collector lists no credd named {name}")
        found = str(ad.get("Name", "")) if hasattr(ad, "get") else ""
        if found != name:
            raise CreddNotFound(f"the collector answered with credd {found!r} for {name}")
        return ad

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
        ``<user>.cc`` when one exists, before its credmon has looked at the new one.  So the
        ``.cc`` mtime is read before the store, and after it the credd is queried until the
        ``.cc`` is newer than that (the appliance's credmon gives every new or touched ``.cc`` a
        later whole second than the one before, and keeps ``.cc`` no older than ``.cred``);
        raise when that takes longer than ``confirm_timeout`` seconds.

        The credd does NOT write a store while the ``.cc`` mtime is in the future (23.9
        ``store_cred``: "already exist ... and interval is 0", when ``now - mtime <
        SEC_CREDENTIAL_REFRESH_INTERVAL``), and the credmon dates ``.cc`` up to one second
        ahead. A store in that second was silently dropped: a re-login in the same second as
        a renewal left the older ticket in the credd (seen in ``make test``). So the store
        waits until the clock has passed that mtime, and is repeated when the credd answers
        that it skipped.

        A store that stays unconfirmed for ``restore_after`` seconds is made again (logged):
        once, under ``make bench``'s load, the credd wrote a store and its ``.cc`` then did not
        move for the whole 12 s, which failed that user's spawn.
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
        # Credd.add_user_cred asks the credd to wait for the credmon's .cc before answering; for
        # a user without a .cc yet, the credd polls for it only once a second (~1 s per first
        # store, serialised here). Without that flag the credd still signals its credmon and
        # answers at once; the confirmation below does the waiting, every 50 ms.
        fn, addr = self._no_wait_store(), getattr(credd, "_addr", None)
        direct = fn is not None and addr is not None

        def cc_mtime() -> Optional[int]:
            if direct:
                # a query without the wait flag, too: with it, the credd answers a query for a
                # user whose first .cc is not there yet only after its next 1-s poll
                m = fn(addr, name, None, _GENERIC_QUERY | int(kerberos), None, None, -1)
            else:
                m = credd.query_user_cred(kerberos, name)
            return m if isinstance(m, int) and m >= 1_000_000_000 else None  # else: no .cc yet

        deadline = time.monotonic() + self.confirm_timeout

        def timed_out(what: str) -> ConfirmTimeout:
            return ConfirmTimeout(f"{what} within {self.confirm_timeout:g} s")

        started = int(self.clock())
        before = cc_mtime()

        def store(before: Optional[int]) -> Optional[int]:
            while True:
                ahead = before - self.clock() if before is not None else -1.0
                if ahead >= 0:  # the credd would skip the store until its clock passes that mtime
                    if time.monotonic() + ahead > deadline:
                        raise timed_out("the credd's ticket cache stayed dated ahead of the clock")
                    time.sleep(ahead + self.poll)
                if direct:
                    rv = fn(addr, name, bytes(ccache), _GENERIC_ADD | int(kerberos), None, None, -1)
                    if isinstance(rv, int) and rv >= 1_000_000_000:
                        before = rv  # skipped: it answered the .cc mtime instead of storing
                        continue
                else:
                    credd.add_user_cred(kerberos, bytes(ccache), name)
                return before

        before = store(before)
        stores, restore_at = 1, time.monotonic() + self.restore_after
        mtime = None
        while True:
            mtime = cc_mtime()
            if mtime is not None and mtime >= started and (before is None or mtime > before):
                if stores > 1:
                    log.warning("%s: the credmon confirmed store %d (the .cc moved from %s to %s)",
                                name, stores, before, mtime)
                return
            if time.monotonic() >= deadline:
                raise timed_out("the credd took the credential but its credmon did not confirm it")
            if time.monotonic() >= restore_at:
                # Seen once under load (make bench): a store the credd wrote, then 12 s of
                # queries with the .cc unmoved. Storing again wakes the credmon again; a
                # credential stored twice is the same credential.
                log.warning("%s: no confirmation %.1f s after the store (.cc mtime %s, before "
                            "%s): storing again", name, self.restore_after * stores, mtime, before)
                store(None)
                stores, restore_at = stores + 1, time.monotonic() + self.restore_after
            time.sleep(self.poll)

    def running_hosts(self, user: str) -> list[str]:
        """Execute hosts of ``user``'s running jobs that carry a Kerberos credential, from the
        schedd next to the credd (``schedd_name``, default: the credd's own name).

        The host comes from the collector's slot ad that runs the job for ``user`` (published by
        the startd), never from the job ad's ``RemoteHost``, which the job's owner can edit
        (``condor_qedit``): the same record and checks as the hub's route host
        (:func:`appliance.hub.scheduler.routehost.slot_host`). A job whose slot is not listed yet
        or whose record is inconsistent is left out (the bridge retries missed hosts)."""
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
            projection=["ClusterId", "ProcId"])
        if not jobs:
            return []
        slots = coll.query(mod.AdTypes.Startd, constraint="JobId =!= undefined",
                           projection=["Name", "Machine", "JobId", "GlobalJobId", "RemoteUser"])
        hosts = set()
        for job in jobs:
            job_id = f"{job.get('ClusterId')}.{job.get('ProcId')}"
            try:
                host = slot_host(slots, job_id, user, str(ad.get("Name") or name or ""))
            except HostRefused as e:
                log.warning("not pushing to the node of job %s of %s: %s", job_id, user, e)
                continue
            if host:
                hosts.add(host)
        return sorted(hosts)

    def push_running(self, user: str, ccache: bytes,
                     hosts: Optional[list[str]] = None) -> tuple[list[str], dict[str, str]]:
        """Store ``ccache`` in the credd of every execute node running one of ``user``'s jobs
        (only those of ``hosts`` when given, e.g. the ones a first attempt missed).

        HTCondor 23.9 gives a running job a newer Kerberos ticket only through the execute
        node's own credential directory (the starter copies ``<user>.cc`` into the job whenever
        its mtime changes); the shadow never sends one again. So the execute nodes run a credd
        too (same directory, the bridge as its only CRED_SUPER_USERS entry), and the bridge stores
        a new login's ticket there; the node's credmon makes the ``.cc``. The node's credd is
        located by the node's name in the collector and nowhere else (:meth:`_locate_credd`); a
        node whose credd is not listed is reported (the bridge retries). Returns
        ``(hosts done, {host: error})``.
        """
        name = self.credd_user(user)
        done: list[str] = []
        errors: dict[str, str] = {}
        with self._lock:
            running = self.running_hosts(user)
            if hosts is not None:
                running = [h for h in running if h in hosts]
            mod = self._htcondor()
            for host in running:
                try:
                    self._put_confirmed(mod.Credd(self._locate_credd(host)), name, ccache)
                    done.append(host)
                except CreddNotFound as exc:
                    errors[host] = f"{exc} (its jobs keep the previous ticket until it is found)"
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
