"""Names under ``.localhost`` resolve to loopback (RFC 6761, 6.3), as browsers and curl do.

glibc answers ``localhost`` from /etc/hosts but not ``hub.localhost`` or ``alice.hub.localhost``,
where the demo's hub and its users' servers live (one origin each: appliance/publicorigin.py).
``install()`` wraps ``socket.getaddrinfo`` in this process, so Python clients (the tests, the
benchmark, ``appliance-probe``) reach them without an /etc/hosts entry per user; every other
name resolves as before. Stdlib only.
"""

from __future__ import annotations

import socket

_system_getaddrinfo = socket.getaddrinfo


def is_loopback_name(host) -> bool:
    return isinstance(host, str) and host.lower().rstrip(".").endswith(".localhost")


def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
    if is_loopback_name(host):
        host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    return _system_getaddrinfo(host, port, family, type, proto, flags)


def install() -> None:
    """Idempotent."""
    socket.getaddrinfo = getaddrinfo
