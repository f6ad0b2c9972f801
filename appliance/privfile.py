"""Private files: safe reads and writes of secrets (ticket caches, env files, state).

One module for every process that handles a secret in a file: the credential bridge (ticket
caches handed over by the hub, submit ccaches, its state file), the Kerberos credmon (``.cred``
/ ``.cc``) and the submit helper (the job's env file, as the user). Standard library only.

* :func:`read_private` opens without following a symlink and checks, on the open file: regular
  file, exactly one link, the expected owner, no group/other permission bits, 1..max_size
  bytes. Every failure is a :class:`FileRefused` with a stable ``code``.
* :func:`atomic_write` replaces a file in a directory: a new file with the wanted mode and owner
  is written and fsynced under a temporary name, then renamed over the old one (readers see the
  old or the new content, never a mix; a symlink at the name is replaced, not followed).
* :func:`create_private` creates a NEW file (``O_CREAT|O_EXCL|O_NOFOLLOW``: an existing file or
  a symlink at the name is an error, never written through); :func:`create_in_dir` does the
  same inside a directory it creates if needed and opens without following links.

Nothing here logs or puts file contents into an exception.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from typing import Optional

__all__ = [
    "MAX_SIZE",
    "Refusal",
    "FileRefused",
    "read_fd",
    "read_private",
    "read_private_file",
    "open_dir",
    "write_all",
    "atomic_write",
    "create_private",
    "create_in_dir",
]

#: Largest private file accepted (a ticket cache is a few KiB).
MAX_SIZE = 1 << 20

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW


class Refusal(Exception):
    """Base of the refusals: ``code`` is a stable machine word, ``message`` is for humans."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:  # pragma: no cover - trivial
        return f"{self.code}: {self.message}"


class FileRefused(Refusal):
    """The file failed a safety check (symlink, hard link, owner, mode, size, type)."""


# ---------------------------------------------------------------------------
# reading


def read_fd(fd: int, max_size: int = MAX_SIZE) -> bytes:
    """Read at most ``max_size`` bytes from an open fd; raise if there is more."""
    chunks = []
    total = 0
    while True:
        chunk = os.read(fd, min(65536, max_size + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if total > max_size:
            raise FileRefused("too_large", f"file is larger than {max_size} bytes")
    return b"".join(chunks)


def read_private(
    path: str,
    *,
    expected_uid: int,
    max_size: int = MAX_SIZE,
    dir_fd: Optional[int] = None,
) -> tuple[bytes, os.stat_result]:
    """Open ``path`` without following a symlink and return its bytes if, on the open file: it
    is a regular file, has exactly one link, is owned by ``expected_uid``, has no group/other
    permission bits, and is 1..max_size bytes.

    Every failure raises :class:`FileRefused` with a stable ``code``: ``not_found``,
    ``symlink``, ``not_regular``, ``hardlink``, ``wrong_owner``, ``bad_mode``, ``too_large``,
    ``empty``, ``unreadable``. Returns the bytes and the ``fstat`` of the open file.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise FileRefused("not_found", "no such file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FileRefused("symlink", "the path is a symbolic link") from None
        raise FileRefused("unreadable", f"cannot open: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused("not_regular", "not a regular file")
        if st.st_nlink != 1:
            raise FileRefused("hardlink", f"file has {st.st_nlink} links (must be 1)")
        if st.st_uid != expected_uid:
            raise FileRefused(
                "wrong_owner", f"file is owned by uid {st.st_uid}, expected {expected_uid}"
            )
        if st.st_mode & 0o077:
            raise FileRefused(
                "bad_mode",
                f"file mode {stat.S_IMODE(st.st_mode):04o} gives access to group/other",
            )
        if st.st_size > max_size:
            raise FileRefused("too_large", f"file is larger than {max_size} bytes")
        if st.st_size == 0:
            raise FileRefused("empty", "file is empty")
        data = read_fd(fd, max_size)
        if not data:
            raise FileRefused("empty", "file is empty")
        return data, st
    finally:
        os.close(fd)


def read_private_file(
    path: str,
    *,
    expected_uid: int,
    max_size: int = MAX_SIZE,
    dir_fd: Optional[int] = None,
) -> bytes:
    """Like :func:`read_private`, returning only the bytes."""
    return read_private(path, expected_uid=expected_uid, max_size=max_size, dir_fd=dir_fd)[0]


# ---------------------------------------------------------------------------
# writing


def open_dir(path: str, *, create_mode: Optional[int] = None,
             follow_symlinks: bool = False) -> int:
    """Open a directory without following a symlink at its last component (unless
    ``follow_symlinks``: a path from the administrator's configuration); return the fd.

    ``create_mode``: create it (and missing parents) with this mode first if it is missing.
    """
    if create_mode is not None:
        os.makedirs(path, mode=create_mode, exist_ok=True)
    return os.open(path, _DIR_FLAGS & ~(os.O_NOFOLLOW if follow_symlinks else 0))


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _set_owner_mode(fd: int, mode: int, uid: int, gid: int) -> None:
    os.fchmod(fd, mode)  # whatever the umask
    if os.geteuid() == 0 and (uid != -1 or gid != -1):
        os.fchown(fd, uid, gid)


def atomic_write(
    dir_fd: int, name: str, data: bytes, *, mode: int = 0o600, uid: int = 0, gid: int = 0
) -> None:
    """Replace ``name`` in the directory ``dir_fd`` with ``data``: a new file with ``mode`` and
    (when running as root) owner ``uid:gid`` is written and fsynced under a temporary name,
    then renamed over ``name``. Readers see the old or the new content, never a mix; a symlink
    at ``name`` is replaced, not followed."""
    tmp = f".{name}.tmp.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
        dir_fd=dir_fd,
    )
    try:
        try:
            _set_owner_mode(fd, mode, uid, gid)
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise
    try:
        os.fsync(dir_fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on dirs
        pass


def create_private(
    dir_fd: int, name: str, data: bytes, *, mode: int = 0o600, uid: int = -1, gid: int = -1
) -> None:
    """Create the NEW file ``name`` in ``dir_fd`` holding ``data``, with ``mode`` and (as root)
    owner ``uid:gid`` (-1: keep). An existing file or symlink at ``name`` raises
    ``FileExistsError`` and is left alone; a half-written file is removed."""
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode, dir_fd=dir_fd)
    try:
        try:
            _set_owner_mode(fd, mode, uid, gid)
            write_all(fd, data)
        finally:
            os.close(fd)
    except BaseException:
        try:
            os.unlink(name, dir_fd=dir_fd)
        except OSError:
            pass
        raise


def create_in_dir(
    directory: str,
    name: str,
    data: bytes,
    *,
    mode: int = 0o600,
    dir_mode: int = 0o700,
    uid: int = -1,
    gid: int = -1,
) -> str:
    """Create the new private file ``directory/name`` (see :func:`create_private`); return its
    path. Made for the submit helper's env file (as the user) and the bridge's submit ccaches.

    ``directory`` (and missing parents) is created with ``dir_mode`` if missing and opened
    without following a symlink; it must be owned by this process's uid (else
    :class:`FileRefused` ``wrong_owner``) and gets ``dir_mode`` (so nobody else can list or
    plant files in it afterwards). ``name`` must be a plain file name.
    """
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise FileRefused("bad_name", "not a plain file name")
    dfd = open_dir(directory, create_mode=dir_mode)
    try:
        st = os.fstat(dfd)
        if st.st_uid != os.geteuid():
            raise FileRefused("wrong_owner",
                              f"directory is owned by uid {st.st_uid}, expected {os.geteuid()}")
        if stat.S_IMODE(st.st_mode) != dir_mode:
            os.fchmod(dfd, dir_mode)
        create_private(dfd, name, data, mode=mode, uid=uid, gid=gid)
    finally:
        os.close(dfd)
    return os.path.join(directory, name)
