"""Dask scheduler preload: the dashboard answers only the scheduler's own user on this node.

Dask's dashboard (Bokeh + tornado, in the scheduler, i.e. in the notebook's kernel) has no
authentication: whoever reaches its port sees task names, worker logs, call stacks and profiles.
The site configuration binds it to 127.0.0.1 (no other node reaches it) and the user opens it
through the hub at ``/user/<name>/proxy/<port>/status`` (jupyter-server-proxy, in the same
notebook job, owner-only). Loopback is still shared by every user with a job on the node; this
preload closes that gap: for every connection it looks up the peer socket in ``/proc/net/tcp``
(and ``tcp6``) and serves it only if that socket belongs to the scheduler's own uid (the
notebook server's proxy is). Anything else, including root, a remote peer and a peer that cannot
be found, is refused.

Enabled with ``distributed.scheduler.preload: [appliance_notebook.dashboard_guard]`` (the site's
Dask configuration). Every check fails closed: if the guard cannot be installed, the dashboard's
HTTP server is stopped.

The guard works at two levels. Tornado accepts connections only while the event loop runs; the
scheduler starts its HTTP server in ``__init__`` and runs preloads a few milliseconds later, so a
connection could be accepted just before the guard exists. Hence: (1) new connections are checked
at accept time; (2) every request is checked again (a keep-alive connection from before the guard
gets 403); (3) Bokeh sessions opened before the guard are closed.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import struct
from typing import Iterable, Optional

logger = logging.getLogger("appliance_notebook.dashboard_guard")

TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
_MARK = "_appliance_peer_uid_ok"


def _addr(field: str) -> tuple[str, int]:
    """``0100007F:1F90`` -> ("127.0.0.1", 8080); IPv4-mapped IPv6 becomes the IPv4 address."""
    hexaddr, hexport = field.split(":")
    words = [int(hexaddr[i:i + 8], 16) for i in range(0, len(hexaddr), 8)]
    # The kernel prints each 32-bit word of the address in host byte order.
    raw = b"".join(struct.pack("=I", w) for w in words)
    ip = ipaddress.ip_address(raw)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), int(hexport, 16)


def _norm(addr: tuple) -> tuple[str, int]:
    ip = ipaddress.ip_address(addr[0].split("%")[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), int(addr[1])


def peer_uid(peer: tuple, local: tuple, tables: Iterable[str] = TABLES) -> Optional[int]:
    """The uid owning the socket at ``peer`` that is connected to ``local`` (this server's end).

    That socket's table entry has local address ``peer`` and remote address ``local``. None when
    no such entry exists (a peer on another host, or one that is gone).
    """
    want_local, want_remote = _norm(peer), _norm(local)
    for table in tables:
        try:
            with open(table) as f:
                next(f, None)  # header
                for line in f:
                    fields = line.split()
                    if len(fields) < 8:
                        continue
                    try:
                        if _addr(fields[1]) == want_local and _addr(fields[2]) == want_remote:
                            return int(fields[7])
                    except ValueError:
                        continue
        except OSError:
            continue
    return None


def stream_allowed(stream, uid: int, tables: Iterable[str] = TABLES) -> bool:
    """Is the peer of this tornado IOStream a process of ``uid`` on this host? (cached per stream)"""
    cached = getattr(stream, _MARK, None)
    if cached is not None:
        return cached
    try:
        sock = stream.socket
        ok = peer_uid(sock.getpeername(), sock.getsockname(), tables) == uid
    except Exception:
        ok = False
    try:
        setattr(stream, _MARK, ok)
    except Exception:
        pass
    return ok


def install(server, application, uid: Optional[int] = None) -> None:
    """Guard a tornado HTTPServer and the application it serves (see module doc)."""
    from tornado import web

    uid = os.getuid() if uid is None else uid
    orig_handle_stream = server.handle_stream

    def handle_stream(stream, address):
        if not stream_allowed(stream, uid):
            logger.warning("dashboard: refused a connection from %s (not uid %d on this host)",
                           address, uid)
            stream.close()
            return None
        return orig_handle_stream(stream, address)

    orig_find_handler = application.find_handler

    def find_handler(request, **kwargs):
        stream = getattr(request.connection, "stream", None)
        if stream is None or not stream_allowed(stream, uid):
            return application.get_handler_delegate(request, web.ErrorHandler, {"status_code": 403})
        return orig_find_handler(request, **kwargs)

    server.handle_stream = handle_stream
    application.find_handler = find_handler
    # Bokeh sessions opened before the guard existed (their websockets bypass find_handler now).
    for app in list(getattr(application, "applications", ())):
        for conn in list(getattr(app, "_clients", ())):
            sock = getattr(conn, "_socket", None)
            if sock is None:
                continue
            stream = getattr(getattr(sock, "request", None), "connection", None)
            stream = getattr(stream, "stream", None)
            if stream is None or not stream_allowed(stream, uid):
                sock.close()


def dask_setup(scheduler) -> None:
    server = getattr(scheduler, "http_server", None)
    if server is None:
        return
    try:
        install(server, scheduler.http_application)
        logger.info("dashboard on port %s: only uid %d on this host", server.port, os.getuid())
    except Exception:
        logger.exception("dashboard guard could not be installed: dashboard stopped")
        server.stop()
        raise
