"""The bridge's state on disk: every user's record (ticket included), encrypted, so a restart of
the bridge or of the whole appliance does not stop renewals and pushes for anyone.

* Encryption: ``cryptography``'s Fernet (AES-128-CBC + HMAC-SHA256, authenticated: a changed,
  truncated or foreign file does not decrypt). The key is a file in the state volume,
  ``/srv/appliance/secrets/credd_bridge_state_key`` (root, 0600), created at the first start
  (never in the image, a log or the database); the state file itself is
  ``/srv/appliance/credd-bridge/state`` (root, 0600, directory 0700), replaced atomically
  (temp file + fsync + rename) after every change.
* A state file that is not readable with this key (corrupted, or written by another appliance),
  or that is not a state file of this format, is refused with one clear log line, moved aside
  (``state.refused-<time>``, for the admin) and the bridge starts with no users: they must log in
  again; their running jobs keep their (node-renewed) tickets. The bridge never crashes on it.
* The plain text is JSON: ``{"format": FORMAT, "version": 1, "saved_at": t, "users": [...]}``
  (:meth:`UserRecord.saved`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Callable, Iterable, Optional

from appliance import ccache, privfile

from .records import UserRecord

log = logging.getLogger("appliance.credd_bridge")

FORMAT = "appliance.credd_bridge.state"
VERSION = 1
DEFAULT_STATE_FILE = "/srv/appliance/credd-bridge/state"
DEFAULT_KEY_FILE = "/srv/appliance/secrets/credd_bridge_state_key"
#: Largest state file read back (a user record is ~1 KiB).
MAX_STATE_SIZE = 64 << 20


class StateRefused(Exception):
    """The state file (or its key) cannot be used; ``str(e)`` says why, for the log."""


class StateFile:
    """Load and save the bridge's user records, encrypted (see module doc)."""

    def __init__(self, path: str = DEFAULT_STATE_FILE, key_path: str = DEFAULT_KEY_FILE, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = os.path.abspath(path)
        self.key_path = os.path.abspath(key_path)
        self.clock = clock
        self._fernet = None

    # -- key -----------------------------------------------------------------------------

    def _key(self):
        if self._fernet is not None:
            return self._fernet
        from cryptography.fernet import Fernet

        directory, name = os.path.split(self.key_path)
        try:
            raw = privfile.read_private_file(self.key_path, expected_uid=os.geteuid(),
                                             max_size=4096)
        except privfile.FileRefused as exc:
            if exc.code != "not_found":
                raise StateRefused(f"key file {self.key_path}: {exc.message}") from None
            raw = Fernet.generate_key()
            try:
                privfile.create_in_dir(directory, name, raw, dir_mode=0o700)
                log.info("created the state key %s (0600)", self.key_path)
            except FileExistsError:  # another process was faster: use its key
                raw = privfile.read_private_file(self.key_path, expected_uid=os.geteuid())
        try:
            self._fernet = Fernet(raw.strip())
        except (ValueError, TypeError):
            raise StateRefused(f"key file {self.key_path} does not hold a Fernet key") from None
        return self._fernet

    # -- save / load ---------------------------------------------------------------------------

    def save(self, records: Iterable[UserRecord]) -> None:
        """Encrypt and atomically replace the state file (root 0600, directory 0700)."""
        plain = json.dumps({"format": FORMAT, "version": VERSION, "saved_at": self.clock(),
                            "users": [r.saved() for r in records]},
                           separators=(",", ":")).encode()
        token = self._key().encrypt(plain)
        dfd = privfile.open_dir(os.path.dirname(self.path), create_mode=0o700)
        try:
            privfile.atomic_write(dfd, os.path.basename(self.path), token, mode=0o600,
                                  uid=os.geteuid(), gid=os.getegid())
        finally:
            os.close(dfd)

    def load(self) -> tuple[list[UserRecord], Optional[float]]:
        """``(records, saved_at)``; ``([], None)`` when there is no state file yet.

        Raises :class:`StateRefused` (after moving the file aside) when it cannot be used.
        Records that decrypt but do not hold a usable ticket are skipped with a warning.
        """
        try:
            token = privfile.read_private_file(self.path, expected_uid=os.geteuid(),
                                               max_size=MAX_STATE_SIZE)
        except privfile.FileRefused as exc:
            if exc.code == "not_found":
                return [], None
            self._refuse(f"{exc.message} ({exc.code})")
        from cryptography.fernet import InvalidToken

        try:
            plain = self._key().decrypt(token)
        except InvalidToken:
            self._refuse("not readable with this appliance's key (corrupted, or written by "
                         "another appliance)")
        try:
            doc = json.loads(plain)
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError("not a credential bridge state")
            if doc.get("version") != VERSION:
                raise ValueError(f"unknown state version {doc.get('version')!r}")
            users = doc.get("users")
            if not isinstance(users, list):
                raise ValueError("no user list")
        except ValueError as exc:
            self._refuse(f"decrypted, but {exc}")
        out, seen = [], set()
        for item in users:
            try:
                rec = UserRecord.from_saved(item)
                if rec.user in seen:
                    raise ValueError(f"user {rec.user} twice")
                if rec.ccache:
                    cc = ccache.parse(rec.ccache)
                    if cc.tgt is None or str(cc.principal) != rec.principal:
                        raise ValueError("its ticket does not belong to its principal")
            except (ValueError, ccache.CCacheError) as exc:
                name = item.get("user") if isinstance(item, dict) else None
                log.warning("state %s: record of %r skipped: %s", self.path, name, exc)
                continue
            seen.add(rec.user)
            out.append(rec)
        saved_at = doc.get("saved_at")
        return out, saved_at if isinstance(saved_at, (int, float)) else None

    def _refuse(self, why: str) -> None:
        aside = f"{self.path}.refused-{int(self.clock())}"
        try:
            os.rename(self.path, aside)
            where = f"moved to {aside}"
        except OSError as exc:
            where = f"could not be moved aside ({exc.strerror})"
        raise StateRefused(f"state file {self.path} refused: {why}; {where}")


class StateWriter:
    """Saves ``snapshot()`` to a :class:`StateFile` in a background thread, off the request path
    (a login must not wait for an fsync on a busy disk): :meth:`request` after every change
    (changes made while a save runs are coalesced into the next one), :meth:`flush` waits for
    the requests so far, :meth:`close` flushes and stops. A failed save is logged and retried
    with the next change; nothing here raises to the caller."""

    def __init__(self, state_file: StateFile, snapshot: Callable[[], list[UserRecord]]):
        self.state_file = state_file
        self.snapshot = snapshot
        self._cond = threading.Condition()
        self._wanted = self._done = 0
        self._closed = False
        self._thread: Optional[threading.Thread] = None

    def request(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._wanted += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="state-writer",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything requested so far is saved (or failed); False on timeout."""
        with self._cond:
            target = self._wanted
            return self._cond.wait_for(lambda: self._done >= target, timeout)

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._wanted > self._done)
                if self._wanted <= self._done:
                    return  # closed, nothing pending
                seq = self._wanted
            try:
                self.state_file.save(self.snapshot())
            except Exception as exc:  # noqa: BLE001 - disk full, key unusable, ...
                log.error("could not save the credential state to %s: %s (renewals go on; "
                          "a restart now would lose them)", self.state_file.path, exc)
            with self._cond:
                self._done = seq
                self._cond.notify_all()
