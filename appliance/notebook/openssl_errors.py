"""Dask preload (scheduler, worker, nanny, client): work around stale OpenSSL errors in ``ssl``.

Measured on the mini site's nodes (Debian trixie: CPython 3.13.5, OpenSSL 3.5): with Dask's TLS, a
failed write on one connection (EPIPE: a nanny closes its short registration connection while
the scheduler answers) leaves an entry on the thread's OpenSSL error queue. The next read on
ANOTHER, healthy TLS connection in that thread then fails with ``BrokenPipeError``, and Dask drops
that connection: ``cluster.scale(2); client.wait_for_workers(2)`` failed in 14 of 16 tries with
``CommClosedError ... rpc.identity``, and worker or client connections can die the same way.
OpenSSL requires the queue to be empty before each I/O call (SSL_get_error(3)); this CPython does
not ensure it (the same family as python/cpython#127257). The host's Python 3.11 with OpenSSL 3.0
never showed it. With the queue cleared before every SSL socket call: 0 of 7 (same test).

Importing this module patches :class:`ssl.SSLSocket` once per process, only where OpenSSL is 3.4
or newer; every call then costs one ``ERR_peek_error()``. Listed in the site's Dask configuration
as a preload of every Dask role, which import it before their first connection.
Remove it once the single-user environment's Python clears the queue itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import ssl

PATCHED = False
cleared = 0  # how many stale entries were dropped (for tests and logs)
METHODS = ("recv_into", "recv", "read", "send", "sendall", "write", "do_handshake", "unwrap")


def _libcrypto():
    for name in ("libcrypto.so.3", ctypes.util.find_library("crypto")):
        if name:
            try:
                lib = ctypes.CDLL(name)
                lib.ERR_peek_error.restype = ctypes.c_ulong
                lib.ERR_clear_error.restype = None
                return lib
            except (OSError, AttributeError):
                continue
    return None


def install() -> bool:
    global PATCHED
    if PATCHED:
        return True
    if ssl.OPENSSL_VERSION_INFO < (3, 4):
        return False
    lib = _libcrypto()
    if lib is None:
        return False
    peek, clear = lib.ERR_peek_error, lib.ERR_clear_error

    def wrap(orig):
        @functools.wraps(orig)
        def call(self, *args, **kwargs):
            global cleared
            if peek():
                cleared += 1
                clear()
            return orig(self, *args, **kwargs)
        return call

    for name in METHODS:
        orig = getattr(ssl.SSLSocket, name, None)
        if orig is not None:
            setattr(ssl.SSLSocket, name, wrap(orig))
    PATCHED = True
    return True


install()


def dask_setup(dask_object) -> None:  # the preload hook; the work was done at import
    return None
