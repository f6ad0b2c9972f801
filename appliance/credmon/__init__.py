"""A Kerberos credmon for HTCondor credd hosts and execute nodes.

HTCondor's side of the contract (``SEC_CREDENTIAL_DIRECTORY_KRB``, here ``<dir>``):

* the credd (or, on an execute node, the starter) writes ``<dir>/<user>.cred``,
  root-owned 0600, holding what was stored with ``add_user_cred(Kerberos, ...)``:
  for this appliance a FILE ccache (the bridge stores one);
* it then sends SIGHUP to the pid in ``<dir>/pid`` and waits for
  ``<dir>/<user>.cc``; at start-up it waits for ``<dir>/CREDMON_COMPLETE``;
* HTCondor never contacts the KDC: keeping tickets alive is the credmon's job.

What this credmon does on every pass (at start, on SIGHUP, and whenever a ticket
is due for renewal, at the latest every ``max_sleep`` seconds):

* for each ``<user>.cred``: read it safely (no symlink, one link, owner root,
  no group/other bits, <= 1 MiB), parse it, optionally check the principal is
  ``user@REALM``; pick the newer of ``.cred`` and an existing ``.cc`` (later
  authtime, then later endtime);
* renew the TGT at the KDC when due (half its lifetime, at the latest 5 minutes
  before expiry, never past renew-till); on failure log and retry with backoff;
* write ``<user>.cc`` (FILE ccache, owner root, mode 0600, temp file + rename)
  when its content changed, and write the renewed ticket back to ``<user>.cred``
  too (only if ``.cred`` did not change since it was read); ``.cc`` is written
  last, and touched when ``.cred`` is newer but holds nothing newer, so after every
  pass ``.cc`` is at least as new as ``.cred`` (the credential bridge relies on this);
* a ``.cc`` with new content always gets a later whole-second mtime than the one it replaces
  (up to a second ahead of the clock): starters compare whole seconds;
* touch ``<dir>/CREDMON_COMPLETE``.

``<dir>/pid`` is written world-readable (0644), as HTCondor reads it.
Debian's ``condor_credmon_krb`` is not used: it renews only tickets older than an
hour, on a 5-minute timer.  The ccache logic, the safe file access and the renewal policy are
shared with the bridge (:mod:`appliance.ccache`, :mod:`appliance.privfile`,
:mod:`appliance.renewal`).  Ticket contents are never logged.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import time
from typing import Callable, Optional

from appliance import ccache, privfile, renewal
from appliance.names import USER_NAME_RE
from appliance.privfile import Refusal, atomic_write
from appliance.renewal import RenewalPolicy, iso

log = logging.getLogger("appliance.credmon")

COMPLETE = "CREDMON_COMPLETE"
PID_FILE = "pid"


def _next_second_mtime(dfd: int, name: str) -> Optional[int]:
    """The mtime for a NEW content of ``name``: now, but at least in the whole second after the
    old file's mtime.

    Every starter copies ``<user>.cc`` into its job when the file's mtime, in WHOLE SECONDS,
    differs from the one it copied last (23.9 ``refreshSandboxCredentialsKRB``). Two writes (or
    a touch and a write) within one second, with a starter's check in between, left that job
    with the older ticket for good: seen when a re-login's push reached a node in the same second
    a new job of the user started there (issue 15). So a changed .cc always gets a later second,
    up to one second ahead of the clock."""
    try:
        old = os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mtime_ns
    except FileNotFoundError:
        return None
    now = time.time_ns()
    floor_next = (old // 1_000_000_000 + 1) * 1_000_000_000
    return floor_next if now < floor_next else None  # None: now is later already


@dataclasses.dataclass
class UserStatus:
    user: str
    principal: Optional[str] = None
    valid_until: Optional[int] = None
    renew_until: Optional[int] = None
    wrote_cc: bool = False
    wrote_cred: bool = False
    renewed: bool = False
    error: Optional[str] = None
    next_action: Optional[float] = None


class KerberosCredmon:
    """One credential directory.  ``scan()`` is one pass; ``run_forever()`` the daemon."""

    def __init__(
        self,
        cred_dir: str,
        *,
        realm: Optional[str] = None,
        clock: Callable[[], float] = time.time,
        renewer: Callable[[bytes], bytes] = ccache.renew,
        policy: RenewalPolicy = RenewalPolicy(),
        cred_uid: int = 0,
        cc_uid: int = 0,
        cc_gid: int = 0,
    ) -> None:
        self.cred_dir = cred_dir
        self.realm = realm
        self.clock = clock
        self.renewer = renewer
        self.policy = policy
        self.cred_uid = cred_uid
        self.cc_uid = cc_uid
        self.cc_gid = cc_gid
        #: user -> (failures, earliest next attempt)
        self._retry: dict[str, tuple[int, float]] = {}
        self.status: dict[str, UserStatus] = {}

    # -- directory housekeeping -------------------------------------------------

    def _open_dir(self) -> int:
        return privfile.open_dir(self.cred_dir, follow_symlinks=True)  # configured path

    def write_pid(self, pid: Optional[int] = None) -> None:
        dfd = self._open_dir()
        try:
            atomic_write(dfd, PID_FILE, f"{pid or os.getpid()}\n".encode(), mode=0o644)
        finally:
            os.close(dfd)

    def clear_complete(self) -> None:
        try:
            os.unlink(os.path.join(self.cred_dir, COMPLETE))
        except FileNotFoundError:
            pass

    def touch_complete(self) -> None:
        dfd = self._open_dir()
        try:
            fd = os.open(COMPLETE, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=dfd)
            try:
                os.utime(fd)
            finally:
                os.close(fd)
        finally:
            os.close(dfd)

    def users(self) -> list[str]:
        out = []
        for name in os.listdir(self.cred_dir):
            if name.endswith(".cred"):
                user = name[: -len(".cred")]
                if USER_NAME_RE.match(user):
                    out.append(user)
        return sorted(out)

    # -- one pass ------------------------------------------------------------------

    def scan(self) -> dict[str, UserStatus]:
        """Process every ``<user>.cred`` once, then touch CREDMON_COMPLETE."""
        users = self.users()
        result: dict[str, UserStatus] = {}
        for user in users:
            try:
                result[user] = self.process_user(user)
            except Exception:  # noqa: BLE001 - one user's problem must not stop the pass
                log.exception("%s: unexpected error", user)
                result[user] = UserStatus(user=user, error="internal error",
                                          next_action=self.clock() + self.policy.retry_min)
        for gone in set(self._retry) - set(users):
            del self._retry[gone]
        self.status = result
        self.touch_complete()
        return result

    def next_wakeup(self) -> Optional[float]:
        times = [s.next_action for s in self.status.values() if s.next_action is not None]
        return min(times) if times else None

    def _read_cc(self, dfd: int, name: str) -> tuple[Optional[bytes], Optional[ccache.CCache]]:
        try:
            data, cc, _ = ccache.read_ccache(name, expected_uid=self.cc_uid, dir_fd=dfd)
            return data, cc
        except Refusal as exc:
            if exc.code != "not_found":
                log.warning("%s: existing %s not usable (%s); rewriting", name, name, exc.code)
            return None, None

    def _touch_if_older(self, dfd: int, cc_name: str, cred_name: str) -> None:
        """The credd re-stored an identical (or older) ticket: .cc stays as it is, but its mtime
        moves past the new .cred's (and into a later whole second than before), so "the
        credmon has seen the latest store" stays visible."""
        try:
            cc_st = os.stat(cc_name, dir_fd=dfd, follow_symlinks=False)
            cred_st = os.stat(cred_name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if not stat.S_ISREG(cc_st.st_mode) or cc_st.st_mtime_ns >= cred_st.st_mtime_ns:
            return
        ahead = _next_second_mtime(dfd, cc_name)  # a later whole second, as for a new .cc:
        fd = os.open(cc_name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        try:  # the bridge confirms a store by the .cc mtime moving past the one before it
            os.utime(fd, ns=(ahead, ahead)) if ahead else os.utime(fd)
        finally:
            os.close(fd)
        log.info("%s: touched (the same ticket stored again)%s", cc_name,
                 "; mtime set to the next second" if ahead else "")

    def process_user(self, user: str) -> UserStatus:
        status = UserStatus(user=user)
        now = self.clock()
        dfd = self._open_dir()
        try:
            cred_name, cc_name = f"{user}.cred", f"{user}.cc"
            try:
                cred_data, cred, cred_st = ccache.read_ccache(
                    cred_name, expected_uid=self.cred_uid, dir_fd=dfd)
            except Refusal as exc:
                status.error = f"{cred_name}: {exc.code}: {exc.message}"
                log.warning("%s", status.error)
                return status
            if self.realm and str(cred.principal) != f"{user}@{self.realm}":
                # Someone else's ticket under this user's name: no .cc, and the .cred goes too,
                # since the shadow sends .cred (not .cc) to the execute node with the job.
                status.error = f"{cred_name}: principal {cred.principal} is not {user}@{self.realm}"
                try:
                    os.unlink(cred_name, dir_fd=dfd)
                    status.error += "; removed"
                except OSError as exc:
                    status.error += f"; could not remove it: {exc.strerror}"
                log.warning("%s", status.error)
                return status
            if cred.tgt is None:
                status.error = f"{cred_name}: no TGT"
                log.warning("%s", status.error)
                return status

            # The newer of .cred and .cc (same principal) is the one to keep.
            best_data, best = cred_data, cred
            cc_data, cc = self._read_cc(dfd, cc_name)
            if cc is not None:
                if cc.principal == cred.principal and cc.tgt is not None:
                    key = lambda c: (c.tgt.authtime, c.tgt.endtime)  # noqa: E731
                    if key(cc) > key(cred):
                        best_data, best = cc_data, cc
            tgt = best.tgt
            assert tgt is not None
            status.principal = str(best.principal)

            if tgt.endtime <= now:
                status.error = "ticket expired"
                status.valid_until = tgt.endtime
                log.warning("%s: ticket of %s expired; waiting for a new one", user, best.principal)
                return status

            at = self.policy.renew_at(tgt)
            failures, not_before = self._retry.get(user, (0, 0.0))
            if at is not None and now >= at and now >= not_before:
                try:
                    new_data, new = renewal.renew_checked(self.renewer, best_data,
                                                          str(best.principal))
                except Exception as exc:  # noqa: BLE001 - KDC down etc.: retry later
                    failures, retry_at = self.policy.after_failure(failures, now)
                    self._retry[user] = (failures, retry_at)
                    status.error = f"renewal failed: {exc}"
                    log.warning("%s: %s (retry %d in %ds)", user, status.error, failures,
                                retry_at - now)
                else:
                    self._retry.pop(user, None)
                    best_data, best, tgt = new_data, new, new.tgt
                    status.renewed = True
                    log.info("%s: renewed, valid until %s", user, iso(tgt.endtime))

            # .cred first, then .cc: after a pass .cc is never older than .cred, which is how the
            # credential bridge sees (through the credd's query, the .cc mtime) that the credmon
            # has processed the credential it stored.
            if best_data != cred_data:
                # Only if the credd did not replace .cred while we worked.
                try:
                    now_st = os.stat(cred_name, dir_fd=dfd, follow_symlinks=False)
                except FileNotFoundError:
                    now_st = None
                if now_st is not None and (now_st.st_ino, now_st.st_mtime_ns, now_st.st_size) == (
                    cred_st.st_ino, cred_st.st_mtime_ns, cred_st.st_size
                ):
                    atomic_write(dfd, cred_name, best_data, uid=cred_st.st_uid,
                                 gid=cred_st.st_gid, mode=stat.S_IMODE(cred_st.st_mode))
                    status.wrote_cred = True
            if best_data != cc_data:
                ahead = _next_second_mtime(dfd, cc_name)
                atomic_write(dfd, cc_name, best_data, uid=self.cc_uid, gid=self.cc_gid,
                             mtime_ns=ahead)
                status.wrote_cc = True
                log.info("%s: wrote %s (%s, valid until %s)%s", user, cc_name, best.principal,
                         iso(tgt.endtime), "; mtime set to the next second" if ahead else "")
            else:
                self._touch_if_older(dfd, cc_name, cred_name)

            status.valid_until = tgt.endtime
            status.renew_until = tgt.renew_till if tgt.renewable else None
            nxt = self.policy.renew_at(tgt)
            if user in self._retry:
                nxt = self._retry[user][1]
            status.next_action = min(x for x in (nxt, tgt.endtime) if x is not None)
            return status
        finally:
            os.close(dfd)

    # -- daemon ----------------------------------------------------------------------

    def run_forever(self, *, max_sleep: float = 60.0, on_first_pass=None) -> None:
        """Scan on start, on SIGHUP and when something is due; exit on SIGTERM/SIGINT."""
        import signal

        sigs = {signal.SIGHUP, signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
        self.clear_complete()
        self.write_pid()
        first = True
        while True:
            self.scan()
            if first and on_first_pass is not None:
                on_first_pass()
            first = False
            nxt = self.next_wakeup()
            delay = max_sleep if nxt is None else min(max(nxt - self.clock(), 0.5), max_sleep)
            info = signal.sigtimedwait(sigs, delay)
            if info is None or info.si_signo == signal.SIGHUP:
                continue
            log.info("signal %d: exiting", info.si_signo)
            return


__all__ = ["KerberosCredmon", "UserStatus", "COMPLETE", "PID_FILE"]
