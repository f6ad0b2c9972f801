"""The bridge's core: check a handed-over ccache, store it, keep it renewed, track state.

No sockets and no event loop here (see :mod:`.server`); time, the KDC renewal,
the user database and the credd are all injected, so the logic is testable.

Per-user state: :mod:`.records`.
A refusal stores nothing and leaves an existing state untouched.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import secrets
import threading
import time
from typing import Callable, Iterable, Mapping, Optional

from appliance import ccache, privfile, renewal
from appliance.names import USER_NAME_RE
from appliance.privfile import Refusal
from appliance.renewal import RenewalPolicy, iso

from . import DEFAULT_CCACHE_DIR, protocol
from .credstore import CredStore
from .records import ACTIVE, EXPIRED, FINAL, RETRYING, UserRecord

log = logging.getLogger("appliance.credd_bridge")

_CCTYPE_RE = re.compile(r"^[A-Za-z0-9]+:")


def _check_user(user) -> None:
    if not isinstance(user, str) or not USER_NAME_RE.match(user):
        raise BridgeRefused(protocol.BAD_REQUEST, "invalid user name")


class BridgeRefused(Refusal):
    """A request the bridge refuses before or instead of reading a file."""


class CreddStoreFailed(Exception):
    """The credential was valid and is kept, but the credd did not take it (retried)."""

    def __init__(self, message: str, state: dict):
        super().__init__(message)
        self.message = message
        self.state = state


def _pwd_uid(user: str) -> int:
    return pwd.getpwnam(user).pw_uid


class Bridge:
    """Checks, stores and renews users' Kerberos credentials.

    ``store``: a :class:`~.credstore.CredStore` (the credd).
    ``realm``: expected principal is ``user@realm`` unless ``principal_map`` names one.
    ``uid_for``: user name -> uid (default: the passwd database); KeyError = unknown.
    ``ccache_dir``: if set, a handed-over path must be a file directly in this directory.
    ``clock``: returns seconds since the epoch.  ``renewer``: bytes -> renewed bytes.
    ``policy``: when to renew and how to back off (:class:`appliance.renewal.RenewalPolicy`).
    ``submit_dir``: where :meth:`refresh` writes a user's current ticket for a submission
    (a root-owned 0711 directory; ``None`` disables that).
    ``push_running``: after storing a NEW login's ticket, also hand it to the execute nodes
    where the user's jobs run (if the store can: ``store.push_running(user, data)``), in the
    background; HTCondor 23.9 has no other way to get a newer ticket into running jobs.
    """

    def __init__(
        self,
        store: CredStore,
        *,
        realm: Optional[str] = None,
        principal_map: Optional[Mapping[str, str]] = None,
        uid_for: Callable[[str], int] = _pwd_uid,
        ccache_dir: Optional[str] = DEFAULT_CCACHE_DIR,
        clock: Callable[[], float] = time.time,
        renewer: Callable[[bytes], bytes] = ccache.renew,
        policy: RenewalPolicy = RenewalPolicy(),
        max_size: int = ccache.MAX_CCACHE_SIZE,
        submit_dir: Optional[str] = None,
        submit_max_age: float = 600.0,
        push_running: bool = True,
    ) -> None:
        self.store_backend = store
        self.realm = realm
        self.principal_map = dict(principal_map or {})
        self.uid_for = uid_for
        self.ccache_dir = os.path.normpath(ccache_dir) if ccache_dir else None
        self.clock = clock
        self.renewer = renewer
        self.policy = policy
        self.max_size = max_size
        self.submit_dir = os.path.normpath(submit_dir) if submit_dir else None
        self.submit_max_age = submit_max_age
        self.push_running = push_running and hasattr(store, "push_running")
        self._lock = threading.Lock()
        self._user_locks: dict[str, threading.Lock] = {}
        self._users: dict[str, UserRecord] = {}
        #: called (from any thread) whenever a schedule changed; the loop sets it.
        self.on_change: Optional[Callable[[], None]] = None

    # -- helpers -------------------------------------------------------------

    def expected_principal(self, user: str) -> str:
        if user in self.principal_map:
            return self.principal_map[user]
        if not self.realm:
            raise BridgeRefused(protocol.UNKNOWN_USER, f"no principal configured for {user}")
        return f"{user}@{self.realm}"

    def _user_lock(self, user: str) -> threading.Lock:
        with self._lock:
            lock = self._user_locks.get(user)
            if lock is None:
                lock = self._user_locks[user] = threading.Lock()
            return lock

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _read(self, ccache_path: str, uid: int) -> ccache.CCache:
        path = ccache_path
        if path.startswith("FILE:"):
            path = path[len("FILE:") :]
        elif _CCTYPE_RE.match(path):
            raise BridgeRefused(protocol.BAD_PATH, "only FILE: ticket caches are accepted")
        if "\0" in path or not os.path.isabs(path) or os.path.normpath(path) != path:
            raise BridgeRefused(protocol.BAD_PATH, "path must be absolute and normalised")
        directory, name = os.path.split(path)
        if not name:
            raise BridgeRefused(protocol.BAD_PATH, "path names a directory")
        if self.ccache_dir is not None and directory != self.ccache_dir:
            raise BridgeRefused(protocol.BAD_PATH, f"ticket caches must be in {self.ccache_dir}")
        try:
            dfd = privfile.open_dir(directory)
        except OSError as exc:
            raise BridgeRefused(protocol.BAD_PATH, f"cannot open directory: {exc.strerror}") from None
        try:
            return ccache.read_ccache(name, expected_uid=uid, max_size=self.max_size, dir_fd=dfd)[1]
        finally:
            os.close(dfd)

    def _schedule(self, rec: UserRecord, tgt: ccache.Credential, now: float) -> None:
        rec.valid_until = tgt.endtime
        rec.renew_until = tgt.renew_till if tgt.renewable else None
        rec.error = None
        rec.failures = 0
        at = self.policy.renew_at(tgt)
        if at is None:
            rec.state = FINAL
            rec.next_action = tgt.endtime
        else:
            rec.state = ACTIVE
            rec.next_action = max(at, now)

    def _fail(self, rec: UserRecord, now: float, message: str) -> None:
        rec.failures, rec.next_action = self.policy.after_failure(rec.failures, now,
                                                                  not_after=rec.valid_until)
        rec.state = RETRYING
        rec.error = message
        log.warning(
            "user %s: %s; retry %d at %s (ticket valid until %s)",
            rec.user, message, rec.failures, iso(rec.next_action), iso(rec.valid_until),
        )

    def _put(self, rec: UserRecord, data: bytes, now: float) -> bool:
        """Store ``data`` in the credd for ``rec``'s user. On failure the record is marked
        pending and a retry planned (False). Call without holding ``self._lock``."""
        try:
            self.store_backend.put(rec.user, data)
        except Exception as exc:  # noqa: BLE001 - any store failure is retried
            with self._lock:
                rec.pending_store = True
                self._fail(rec, now, f"credd store failed: {exc}")
            return False
        return True

    # -- operations ------------------------------------------------------------

    def store(self, user: str, ccache_path: str) -> dict:
        """Check the ccache at ``ccache_path`` as ``user``'s and store it.

        Returns the user's public state.  Raises a :class:`~appliance.ccache.Refusal`
        (nothing stored) or :class:`CreddStoreFailed` (kept and retried).
        """
        _check_user(user)
        if not isinstance(ccache_path, str):
            raise BridgeRefused(protocol.BAD_REQUEST, "invalid ccache_path")
        try:
            uid = self.uid_for(user)
        except KeyError:
            raise BridgeRefused(protocol.UNKNOWN_USER, f"no such user: {user}") from None
        expected = self.expected_principal(user)
        try:
            cc = self._read(ccache_path, uid)
            now = self.clock()
            tgt = ccache.check_tgt(cc, expected, now)
            payload = cc.minimal()
        except Refusal as exc:
            log.warning("user %s: refused ticket cache (%s: %s)", user, exc.code, exc.message)
            raise

        with self._user_lock(user):
            with self._lock:
                old = self._users.get(user)
                generation = old.generation + 1 if old else 1
            rec = UserRecord(user=user, principal=expected, ccache=payload, generation=generation)
            rec.valid_until = tgt.endtime
            rec.renew_until = tgt.renew_till if tgt.renewable else None
            if not self._put(rec, payload, now):
                with self._lock:
                    self._users[user] = rec
                self._changed()
                raise CreddStoreFailed(rec.error or "credd store failed", rec.public())
            rec.last_forwarded = now
            self._schedule(rec, tgt, now)
            with self._lock:
                self._users[user] = rec
        log.info(
            "user %s: stored ticket of %s valid until %s, renewable until %s; %s, next at %s",
            user, expected, iso(rec.valid_until), iso(rec.renew_until), rec.state,
            iso(rec.next_action),
        )
        self._changed()
        if self.push_running:
            threading.Thread(target=self.push, args=(user, payload, generation),
                             name=f"push-{user}", daemon=True).start()
        return rec.public()

    def push(self, user: str, data: bytes, generation: int) -> None:
        """Hand ``data`` (a new login's ticket) to the execute nodes running ``user``'s jobs.
        Never raises; the result goes to the user's state (``pushed_to``, ``push_error``)."""
        t0 = time.monotonic()
        try:
            done, errors = self.store_backend.push_running(user, data)
        except Exception as exc:  # noqa: BLE001
            done, errors = [], {"*": str(exc)}
        with self._lock:
            rec = self._users.get(user)
            if rec is None or rec.generation != generation:
                return
            rec.pushed_to = sorted(done)
            rec.last_pushed = self.clock()
            rec.push_error = "; ".join(f"{h}: {m}" for h, m in sorted(errors.items())) or None
        if done or errors:
            log.info("user %s: new ticket sent to running jobs on %s in %.3f s%s", user,
                     ", ".join(sorted(done)) or "no node", time.monotonic() - t0,
                     f"; failed: {rec.push_error}" if errors else "")

    def refresh(self, user: str, *, min_valid: float = 60.0,
                write_ccache: bool = False) -> tuple[dict, Optional[str]]:
        """Store the bridge's current (renewed) copy of ``user``'s ticket in the credd again.

        Called before every spawn: the credd sweeps credentials of users without jobs, and the
        copy there may be older than the bridge's.  Raises :class:`BridgeRefused`
        (``no_credential``, ``expired``: the user must log in again) or
        :class:`CreddStoreFailed`.  With ``write_ccache``, also writes the ticket to a new file
        owned by the user, mode 0600, in ``submit_dir`` and returns its path (the hub submits
        with it and deletes it), so a spawn through the REST API long after the login still
        submits with a valid ticket.  Returns ``(state, path or None)``.
        """
        _check_user(user)
        with self._user_lock(user):
            with self._lock:
                rec = self._users.get(user)
            if rec is None or not rec.ccache:
                raise BridgeRefused(protocol.NO_CREDENTIAL,
                                    f"no Kerberos credential stored for {user}")
            now = self.clock()
            if rec.state == EXPIRED or rec.valid_until <= now + min_valid:
                raise BridgeRefused(
                    "expired", f"the ticket of {rec.principal} expires at {iso(rec.valid_until)}")
            data = rec.ccache
            t0 = time.monotonic()
            if not self._put(rec, data, now):
                self._changed()
                raise CreddStoreFailed(rec.error or "credd store failed", rec.public())
            with self._lock:
                rec.last_forwarded = now
                if rec.pending_store:
                    rec.pending_store = False
                    tgt = ccache.parse(data).tgt
                    assert tgt is not None
                    self._schedule(rec, tgt, now)
                public = rec.public()
            log.info("user %s: re-stored ticket of %s (valid until %s) in %.3f s", user,
                     rec.principal, iso(rec.valid_until), time.monotonic() - t0)
            path = self._write_submit_ccache(user, data) if write_ccache else None
        self._changed()
        return public, path

    def _write_submit_ccache(self, user: str, data: bytes) -> str:
        if self.submit_dir is None:
            raise BridgeRefused(protocol.BAD_REQUEST, "this bridge writes no submit ccaches")
        uid = self.uid_for(user)
        try:
            gid = pwd.getpwuid(uid).pw_gid
        except KeyError:
            gid = -1
        self._sweep_submit_dir()
        name = f"krb5cc_{uid}_submit_{secrets.token_hex(8)}"
        try:
            return privfile.create_in_dir(self.submit_dir, name, data, dir_mode=0o711,
                                          uid=uid, gid=gid)
        except privfile.FileRefused as exc:
            raise BridgeRefused(protocol.BAD_PATH, f"{self.submit_dir}: {exc.message}") from None

    def _sweep_submit_dir(self) -> None:
        """Submit ccaches are for one submission; remove any left behind (hub crashed)."""
        limit = time.time() - self.submit_max_age
        try:
            dfd = privfile.open_dir(self.submit_dir, create_mode=0o711)
        except OSError:
            return  # create_in_dir reports it
        try:
            self._sweep(dfd, limit)
        finally:
            os.close(dfd)

    @staticmethod
    def _sweep(dfd: int, limit: float) -> None:
        for name in os.listdir(dfd):
            if not name.startswith("krb5cc_"):
                continue
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                if st.st_mtime < limit:
                    os.unlink(name, dir_fd=dfd)
            except OSError:
                pass

    def state(self, user: str) -> Optional[dict]:
        with self._lock:
            rec = self._users.get(user)
            return rec.public() if rec else None

    def states(self) -> dict:
        with self._lock:
            return {u: r.public() for u, r in sorted(self._users.items())}

    def forget(self, user: str) -> bool:
        """Stop tracking ``user`` (the credd's copy is left alone)."""
        with self._user_lock(user):
            with self._lock:
                return self._users.pop(user, None) is not None

    def next_wakeup(self) -> Optional[float]:
        with self._lock:
            times = [r.next_action for r in self._users.values() if r.next_action is not None]
        return min(times) if times else None

    def due(self, now: Optional[float] = None) -> list[str]:
        now = self.clock() if now is None else now
        with self._lock:
            return sorted(
                u for u, r in self._users.items()
                if r.next_action is not None and r.next_action <= now
            )

    def run_due(self) -> list[str]:
        """Do every due action (renew, re-store, expire).  Never raises."""
        acted = self.due()
        for user in acted:
            try:
                self._tick(user)
            except Exception:  # noqa: BLE001 - one user's bug must not stop the others
                log.exception("user %s: unexpected error during renewal", user)
                with self._lock:
                    rec = self._users.get(user)
                    if rec is not None:
                        self._fail(rec, self.clock(), "internal error during renewal")
        return acted

    def _tick(self, user: str) -> None:
        with self._lock:
            rec = self._users.get(user)
            if rec is None or rec.next_action is None:
                return
            generation, data, pending = rec.generation, rec.ccache, rec.pending_store
        now = self.clock()
        if now >= rec.valid_until:
            with self._lock:
                if rec.generation == generation and rec.state != EXPIRED:
                    rec.state = EXPIRED
                    rec.ccache = b""
                    rec.next_action = None
                    rec.pending_store = False
                    log.info("user %s: ticket expired at %s", user, iso(rec.valid_until))
            return

        tgt = ccache.parse(data).tgt
        assert tgt is not None  # stored caches always hold a TGT
        at = self.policy.renew_at(tgt)
        renewed = False
        if at is not None and now >= at:
            try:
                new, new_cc = renewal.renew_checked(self.renewer, data, rec.principal)
                new_tgt = new_cc.tgt
            except Exception as exc:  # noqa: BLE001 - KDC down, refused, ...
                with self._lock:
                    if rec.generation == generation:
                        self._fail(rec, now, f"renewal failed: {exc}")
                return
            data, tgt, pending, renewed = new, new_tgt, True, True

        with self._user_lock(user):
            with self._lock:
                if rec.generation != generation or self._users.get(user) is not rec:
                    return  # a newer login was stored (or the user forgotten) meanwhile
                rec.ccache = data
                rec.valid_until = tgt.endtime
                rec.renew_until = tgt.renew_till if tgt.renewable else None
                if renewed:
                    rec.last_renewed = now
                    log.info("user %s: renewed, valid until %s", user, iso(tgt.endtime))
            if pending:
                if not self._put(rec, data, now):
                    return
                with self._lock:
                    rec.pending_store = False
                    rec.last_forwarded = now
            with self._lock:
                self._schedule(rec, tgt, now)


def parse_principal_map(items: Iterable[str]) -> dict[str, str]:
    """``["alice=alice@REALM", "bob=robert@OTHER"]`` (or comma-separated) -> dict."""
    out: dict[str, str] = {}
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            user, sep, principal = part.partition("=")
            if not sep or not user.strip() or not principal.strip():
                raise ValueError(f"bad principal mapping {part!r} (want user=principal)")
            out[user.strip()] = principal.strip()
    return out
