"""The bridge's core: check a handed-over ccache, store it, keep it renewed, track state.

No sockets and no event loop here (see :mod:`.server`); time, the KDC renewal,
the user database and the credd are all injected, so the logic is testable.

Per-user state: :mod:`.records`.
A refusal stores nothing and leaves an existing state untouched.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pwd
import re
import secrets
import threading
import time
from typing import Callable, Mapping, Optional

from appliance import ccache, privfile, renewal
from appliance.names import USER_NAME_RE
from appliance.privfile import Refusal
from appliance.renewal import RenewalPolicy, iso

from . import DEFAULT_CCACHE_DIR, protocol
from .credstore import CredStore
from .records import ACTIVE, EXPIRED, FINAL, RETRYING, UserRecord
from .statefile import StateFile, StateRefused, StateWriter

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
    ``push_retry_*``: nodes the push missed are tried again (see :meth:`push`).
    ``state_file``: where the records are kept, encrypted, across restarts (:meth:`restore`
    reads them back; ``None``: memory only).
    ``login_cache_grace`` / ``sweep_every``: login ticket caches in ``ccache_dir`` that are no
    longer needed (:meth:`sweep_login_caches`) are removed once older than the grace, at
    start-up (the first :meth:`run_due`) and then every ``sweep_every`` seconds (``None``: never;
    the daemon's default is 600).
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
        push_retry_min: float = 5.0,
        push_retry_max: float = 60.0,
        push_retry_for: float = 900.0,
        state_file: Optional[StateFile] = None,
        login_cache_grace: float = 300.0,
        sweep_every: Optional[float] = None,
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
        self.push_retry_min = push_retry_min
        self.push_retry_max = push_retry_max
        self.push_retry_for = push_retry_for
        self._stopping = threading.Event()
        self.state_file = state_file
        self._writer = StateWriter(state_file, self._snapshot) if state_file else None
        self._lock = threading.Lock()
        self._user_locks: dict[str, threading.Lock] = {}
        self._users: dict[str, UserRecord] = {}
        self.login_cache_grace = login_cache_grace
        self.sweep_every = sweep_every
        self._last_sweep: Optional[float] = None
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
        self._persist()
        if self.on_change is not None:
            self.on_change()

    def _persist(self) -> None:
        """Have the records saved to the state file (in the background, :class:`StateWriter`).
        Call without holding ``self._lock``."""
        if self._writer is not None:
            self._writer.request()

    def _snapshot(self) -> list[UserRecord]:
        with self._lock:
            return [dataclasses.replace(r, pushed_to=list(r.pushed_to))
                    for r in self._users.values()]

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every change so far is in the state file (True: saved or nothing to save)."""
        return self._writer.flush(timeout) if self._writer is not None else True

    def restore(self) -> int:
        """Read the records saved by an earlier run back (before serving); returns how many.

        A refused state file is logged and moved aside (:mod:`.statefile`); the bridge then
        starts without users. Never raises."""
        if self.state_file is None:
            return 0
        try:
            records, saved_at = self.state_file.load()
        except StateRefused as exc:
            log.error("%s; starting with no stored tickets: users must log in again (running "
                      "jobs keep their tickets)", exc)
            return 0
        except Exception as exc:  # noqa: BLE001 - never crash on our own state
            log.error("could not read the credential state %s (%s); starting with no stored "
                      "tickets", self.state_file.path, exc)
            return 0
        if saved_at is None and not records:
            log.info("no saved credential state in %s yet", self.state_file.path)
            return 0
        now = self.clock()
        with self._lock:
            for rec in records:
                if rec.state != EXPIRED and rec.next_action is None:
                    rec.next_action = now
                self._users[rec.user] = rec
        log.info("restored the tickets of %d user(s) from %s (saved %s)%s", len(records),
                 self.state_file.path, iso(saved_at),
                 f": {', '.join(sorted(r.user for r in records))}" if records else "")
        return len(records)

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

        Nodes that failed (their credd not in the collector yet, no confirmation) are tried
        again after ``push_retry_min`` s, doubling up to ``push_retry_max``, for at most
        ``push_retry_for`` s, while this login is still the user's newest and the node still
        runs one of the user's jobs. Never raises; the result goes to the user's state
        (``pushed_to``, ``push_error``)."""
        t0 = time.monotonic()
        delay, hosts, reached = self.push_retry_min, None, set()
        while True:
            try:
                if hosts is None:
                    done, errors = self.store_backend.push_running(user, data)
                else:
                    done, errors = self.store_backend.push_running(user, data, hosts=hosts)
            except Exception as exc:  # noqa: BLE001
                done, errors = [], {"*": str(exc)}
            with self._lock:
                rec = self._users.get(user)
                if rec is None or rec.generation != generation:
                    return
                reached.update(done)
                rec.pushed_to = sorted(reached)
                rec.last_pushed = self.clock()
                rec.push_error = "; ".join(f"{h}: {m}" for h, m in sorted(errors.items())) or None
            self._persist()
            if done or errors:
                log.info("user %s: new ticket sent to running jobs on %s in %.3f s%s", user,
                         ", ".join(sorted(done)) or "no node", time.monotonic() - t0,
                         f"; failed: {rec.push_error}" if errors else "")
            if not errors or time.monotonic() - t0 + delay > self.push_retry_for:
                return
            if self._stopping.wait(delay):
                return
            hosts = None if "*" in errors else sorted(errors)
            delay = min(delay * 2, self.push_retry_max)

    def close(self) -> None:
        """Stop background work (push retries) and save the state a last time."""
        self._stopping.set()
        if self._writer is not None:
            self._writer.close()

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
        privfile.remove_older(self.submit_dir, "krb5cc_", time.time() - self.submit_max_age)

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
                forgotten = self._users.pop(user, None) is not None
        self._persist()
        return forgotten

    def end(self, user: str) -> dict:
        """The user's credential ends (logout with no server left): stop tracking it, delete
        the credd's copy and remove every login ticket cache of the user in ``ccache_dir``.
        Returns ``{"forgotten": bool, "credd_deleted": bool, "caches_removed": n}``; a credd
        that cannot be reached is reported (``credd_deleted`` false, logged), not raised."""
        _check_user(user)
        with self._user_lock(user):
            with self._lock:
                forgotten = self._users.pop(user, None) is not None
            self._persist()
            try:
                self.store_backend.delete(user)
                deleted = True
            except Exception as exc:  # noqa: BLE001 - the rest of the cleanup still happens
                log.warning("user %s: the credd's copy could not be deleted: %s", user, exc)
                deleted = False
            try:
                uid = self.uid_for(user)
            except KeyError:
                uid = None
            removed = self._remove_login_caches(lambda u, name, st: u == uid) if uid is not None \
                else 0
        log.info("user %s: credential ended (tracked: %s, credd copy deleted: %s, login caches "
                 "removed: %d)", user, forgotten, deleted, removed)
        return {"forgotten": forgotten, "credd_deleted": deleted, "caches_removed": removed}

    _LOGIN_CACHE_RE = re.compile(r"^krb5cc_(\d+)_")

    def _login_caches(self) -> list[tuple[int, str, os.stat_result]]:
        """``(uid, name, lstat)`` of each ``krb5cc_<uid>_*`` entry of ``ccache_dir``."""
        if self.ccache_dir is None:
            return []
        try:
            dfd = privfile.open_dir(self.ccache_dir)
        except OSError:
            return []
        out = []
        try:
            for name in os.listdir(dfd):
                m = self._LOGIN_CACHE_RE.match(name)
                if m:
                    try:
                        out.append((int(m.group(1)), name,
                                    os.stat(name, dir_fd=dfd, follow_symlinks=False)))
                    except OSError:
                        pass
        finally:
            os.close(dfd)
        return out

    def _unlink_login_caches(self, names: list[str]) -> int:
        """Remove these entries of ``ccache_dir`` (links are removed, never followed)."""
        if not names or self.ccache_dir is None:
            return 0
        removed = 0
        try:
            dfd = privfile.open_dir(self.ccache_dir)
        except OSError:
            return 0
        try:
            for name in names:
                try:
                    os.unlink(name, dir_fd=dfd)
                    removed += 1
                except OSError:
                    pass
        finally:
            os.close(dfd)
        return removed

    def _remove_login_caches(self, doomed: Callable[[int, str, os.stat_result], bool]) -> int:
        return self._unlink_login_caches([n for u, n, st in self._login_caches() if doomed(u, n, st)])

    def sweep_login_caches(self, now: Optional[float] = None) -> int:
        """Remove login caches older than ``login_cache_grace`` that no login needs any more:
        those of users the bridge does not track (ended, refused, or left by an earlier run),
        and all but the newest of a tracked user's (earlier sessions). Returns how many."""
        now = self.clock() if now is None else now
        self._last_sweep = now
        limit = now - self.login_cache_grace
        with self._lock:
            users = list(self._users)
        tracked: set[int] = set()
        for user in users:
            try:
                tracked.add(self.uid_for(user))
            except KeyError:
                pass
        caches = self._login_caches()
        newest: dict[int, tuple[float, str]] = {}
        for uid, name, st in caches:
            newest[uid] = max(newest.get(uid, (0.0, "")), (st.st_mtime, name))
        removed = self._unlink_login_caches([
            name for uid, name, st in caches
            if st.st_mtime < limit and (uid not in tracked or newest[uid][1] != name)])
        if removed:
            log.info("removed %d login ticket cache(s) no login needs", removed)
        return removed

    def maybe_sweep(self) -> None:
        if self.sweep_every is None:
            return
        now = self.clock()
        if self._last_sweep is None or now - self._last_sweep >= self.sweep_every:
            try:
                self.sweep_login_caches(now)
            except Exception:  # noqa: BLE001
                log.exception("sweeping the login ticket caches failed")

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
        """Do every due action (renew, re-store, expire; now and then the login cache sweep).
        Never raises."""
        self.maybe_sweep()
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
        if acted:
            self._persist()
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
