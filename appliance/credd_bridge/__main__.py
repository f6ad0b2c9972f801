"""``python -m appliance.credd_bridge``: the credential bridge daemon (runs as root).

Every option has an environment variable (shown in ``--help``); the command line wins.
Logs go to stderr (supervisor collects them).
"""

from __future__ import annotations

import argparse
import asyncio
import grp
import logging
import os
import signal
import sys
from typing import Iterable, Optional

from appliance import renewal

from . import DEFAULT_CCACHE_DIR, DEFAULT_SOCKET, DEFAULT_SUBMIT_DIR
from .bridge import Bridge
from .credstore import HTCondorCredStore, MemoryCredStore
from .server import BridgeServer
from .statefile import DEFAULT_KEY_FILE, DEFAULT_STATE_FILE, StateFile


def _env(name: str, default: Optional[str] = None) -> Optional[str]:
    return os.environ.get("CREDD_BRIDGE_" + name, default)


def _uid_list(text: str) -> list[int]:
    out = []
    for part in text.replace(",", " ").split():
        if part.isdigit():
            out.append(int(part))
        else:
            import pwd

            out.append(pwd.getpwnam(part).pw_uid)
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m appliance.credd_bridge",
        description="Take login ticket caches from the hub, check them, store them in the "
        "HTCondor credd and keep them renewed.",
    )
    ap.add_argument("--socket", default=_env("SOCKET", DEFAULT_SOCKET),
                    help="Unix socket path [CREDD_BRIDGE_SOCKET] (default %(default)s)")
    ap.add_argument("--socket-mode", default=_env("SOCKET_MODE", "0660"),
                    help="socket file mode, octal [CREDD_BRIDGE_SOCKET_MODE] (default %(default)s)")
    ap.add_argument("--socket-group", default=_env("SOCKET_GROUP"),
                    help="group owning the socket [CREDD_BRIDGE_SOCKET_GROUP]")
    ap.add_argument("--allow-uid", action="append", default=[],
                    help="uid or user name that may hand over caches besides root; repeatable "
                    "[CREDD_BRIDGE_ALLOWED_UIDS, comma separated]")
    ap.add_argument("--realm", default=_env("REALM"),
                    help="expected principal is USER@REALM [CREDD_BRIDGE_REALM]")
    ap.add_argument("--principal-map", action="append", default=[],
                    help="USER=PRINCIPAL exceptions; repeatable "
                    "[CREDD_BRIDGE_PRINCIPAL_MAP, comma separated]")
    ap.add_argument("--ccache-dir", default=_env("CCACHE_DIR", DEFAULT_CCACHE_DIR),
                    help="handed-over caches must be directly in this directory; empty: "
                    "anywhere [CREDD_BRIDGE_CCACHE_DIR] (default %(default)s)")
    ap.add_argument("--store", choices=("htcondor", "memory"), default=_env("STORE", "htcondor"),
                    help="where checked caches go [CREDD_BRIDGE_STORE] (default %(default)s)")
    ap.add_argument("--credd-name", default=_env("CREDD_NAME"),
                    help="credd to locate via the collector; default: the local/default credd "
                    "[CREDD_BRIDGE_CREDD_NAME]")
    ap.add_argument("--credd-user-template", default=_env("CREDD_USER_TEMPLATE", "{user}"),
                    help="user name given to the credd [CREDD_BRIDGE_CREDD_USER_TEMPLATE] "
                    "(default %(default)s)")
    ap.add_argument("--confirm-timeout", type=float,
                    default=float(_env("CONFIRM_TIMEOUT", "12")),
                    help="seconds to wait for the credd's credmon to confirm a store "
                    "[CREDD_BRIDGE_CONFIRM_TIMEOUT] (default %(default)s)")
    ap.add_argument("--push-running", default=_env("PUSH_RUNNING", "yes"),
                    choices=("yes", "no", "1", "0", "true", "false"),
                    help="send a new login's ticket to the credds of the execute nodes running "
                    "the user's jobs [CREDD_BRIDGE_PUSH_RUNNING] (default %(default)s)")
    ap.add_argument("--schedd-name", default=_env("SCHEDD_NAME"),
                    help="schedd whose running jobs get a new login's ticket; default: the "
                    "credd's host [CREDD_BRIDGE_SCHEDD_NAME]")
    ap.add_argument("--submit-dir", default=_env("SUBMIT_DIR", DEFAULT_SUBMIT_DIR),
                    help="where 'refresh' writes a user's current ticket for one submission; "
                    "empty: never [CREDD_BRIDGE_SUBMIT_DIR] (default %(default)s)")
    ap.add_argument("--state-file", default=_env("STATE_FILE", DEFAULT_STATE_FILE),
                    help="the users' records (tickets included), encrypted, kept across restarts; "
                    "empty: memory only [CREDD_BRIDGE_STATE_FILE] (default %(default)s)")
    ap.add_argument("--state-key", default=_env("STATE_KEY", DEFAULT_KEY_FILE),
                    help="the state file's Fernet key, root 0600, created when missing "
                    "[CREDD_BRIDGE_STATE_KEY] (default %(default)s)")
    ap.add_argument("--login-cache-grace", type=float,
                    default=float(_env("LOGIN_CACHE_GRACE", "300")),
                    help="login ticket caches that no login needs (of users not tracked, or an "
                    "older one of a user) are removed once this many seconds old "
                    "[CREDD_BRIDGE_LOGIN_CACHE_GRACE] (default %(default)s)")
    ap.add_argument("--login-cache-sweep", type=float,
                    default=float(_env("LOGIN_CACHE_SWEEP", "600")),
                    help="seconds between those sweeps (the first at start-up) "
                    "[CREDD_BRIDGE_LOGIN_CACHE_SWEEP] (default %(default)s)")
    renewal.add_arguments(ap, "CREDD_BRIDGE_")
    ap.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"),
                    help="[CREDD_BRIDGE_LOG_LEVEL] (default %(default)s)")
    return ap


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


def default_realm() -> Optional[str]:
    """krb5.conf's ``default_realm`` (through libkrb5, so KRB5_CONFIG is honoured)."""
    try:
        import krb5  # pykrb5

        realm = krb5.get_default_realm(krb5.init_context())
        return realm.decode() if isinstance(realm, bytes) else str(realm)
    except Exception:  # noqa: BLE001 - no krb5.conf, no default_realm, no pykrb5
        return None


def make_server(args: argparse.Namespace) -> BridgeServer:
    allowed = _uid_list(",".join(args.allow_uid) or (_env("ALLOWED_UIDS") or ""))
    pmap_items = args.principal_map or ([_env("PRINCIPAL_MAP")] if _env("PRINCIPAL_MAP") else [])
    principal_map = parse_principal_map(pmap_items)
    if not args.realm and not principal_map:
        args.realm = default_realm()
        if not args.realm:
            raise SystemExit("credd-bridge: set --realm (or CREDD_BRIDGE_REALM); "
                             "krb5.conf names no default_realm")
        logging.getLogger("appliance.credd_bridge").info(
            "realm %s (krb5.conf default_realm; set CREDD_BRIDGE_REALM to override)", args.realm)
    if args.store == "memory":
        store = MemoryCredStore()
    else:
        store = HTCondorCredStore(args.credd_name, args.credd_user_template,
                                  confirm_timeout=args.confirm_timeout,
                                  schedd_name=args.schedd_name)
    bridge = Bridge(
        store,
        realm=args.realm,
        principal_map=principal_map,
        ccache_dir=args.ccache_dir or None,
        policy=renewal.from_args(args),
        submit_dir=args.submit_dir or None,
        push_running=str(args.push_running).lower() in ("yes", "1", "true"),
        state_file=StateFile(args.state_file, args.state_key) if args.state_file else None,
        login_cache_grace=args.login_cache_grace,
        sweep_every=args.login_cache_sweep,
    )
    bridge.restore()
    gid = None
    if args.socket_group:
        gid = int(args.socket_group) if args.socket_group.isdigit() else grp.getgrnam(
            args.socket_group).gr_gid
    return BridgeServer(
        bridge, args.socket, allowed_uids=allowed, socket_mode=int(args.socket_mode, 8),
        socket_gid=gid,
    )


async def _run(server: BridgeServer) -> None:
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logging.getLogger("appliance.credd_bridge").info("stopping")
    await server.close()


def main(argv: Optional[list[str]] = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s credd-bridge %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        server = make_server(args)
    except ValueError as exc:  # inconsistent renewal policy, bad principal map
        ap.error(str(exc))
    asyncio.run(_run(server))
    return 0


if __name__ == "__main__":
    sys.exit(main())
