"""``appliance-init``: first-start setup of the state volume, run before supervisord.

Creates what is missing (never overwrites a secret): ``secrets/cookie_secret``,
``secrets/proxy_token``, ``secrets/crypt_key`` (all root 0600, directory 0700) and, unless the
admin mounts ``/etc/appliance/tls/tls.crt`` and ``tls.key`` (then used as they are, never
touched), the demo certificate: a leaf signed by a local CA (``appliance.tlsdemo``; an earlier
image's self-signed certificate is upgraded), and the internal CAs and certificates of routes and
of the cluster side (``appliance.internaltls``, ``internal-tls/``). Then runs the admin's hooks
``/etc/appliance/init.d/*.sh`` in name order, and finally refuses to start (exit 2) if any secret
file or directory is looser than documented (``appliance.statecheck``), naming each.
Secrets are generated here, at first start, so none is ever in the image.
"""

from __future__ import annotations

import datetime
import os
import secrets
import socket
import subprocess
import sys

from appliance import internaltls, publicorigin, statecheck, tlsdemo

STATE = os.environ.get("APPLIANCE_STATE_DIR", "/srv/appliance")
HOOKS = os.environ.get("APPLIANCE_INIT_DIR", "/etc/appliance/init.d")
MOUNTED_TLS = os.environ.get("APPLIANCE_MOUNTED_TLS_DIR", "/etc/appliance/tls")
RUN = os.environ.get("APPLIANCE_RUN_DIR", "/run/appliance")


def log(msg: str, err: bool = False) -> None:
    print(f"appliance-init: {msg}", file=sys.stderr if err else sys.stdout, flush=True)


def _write_secret(path: str, data: bytes) -> bool:
    """Create a secret once (0600, never through a symlink). An existing one is kept as it is:
    its mode is checked at the end, not silently changed."""
    if os.path.lexists(path):
        return False
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return True


def _private_dir(path: str) -> None:
    """A 0700 directory; an existing one keeps its mode (checked at the end)."""
    if not os.path.lexists(path):
        os.mkdir(path, 0o700)


def demo_tls(now: datetime.datetime) -> list[str]:
    tdir = os.path.join(STATE, "tls")
    # the hub's name and its users' <user>.<name> (an origin per user, appliance/publicorigin.py)
    hub = publicorigin.from_env(os.environ).host
    names = tlsdemo.names_for(socket.getfqdn(), socket.gethostname(),
                              os.environ.get("APPLIANCE_PUBLIC_HOST", ""), hub_host=hub)
    done = tlsdemo.ensure(tdir, os.path.join(STATE, "public"), names, now,
                          label=socket.getfqdn() or "the appliance")
    ca = tlsdemo.load_cert(os.path.join(tdir, "ca.crt"))
    if ca is not None:
        log(f"demo certificate for {', '.join(names.dns + tuple(map(str, names.ips)))}, signed by "
            f"the local CA {os.path.join(STATE, 'public', tlsdemo.CA_PUBLIC_NAME)} (SHA-256 "
            f"{tlsdemo.fingerprint(ca)}; served at http://<host>:8080/{tlsdemo.CA_PUBLIC_NAME}). "
            f"Trust that file to verify the demo, or mount a site certificate in {MOUNTED_TLS}.")
    return done


def internal_tls(now: datetime.datetime) -> list[str]:
    """The CAs and certificates of routes and of the cluster side (appliance.internaltls)."""
    hub = publicorigin.from_env(os.environ).host
    side = internaltls.cluster_side(os.environ, socket.getfqdn(), hub)
    return internaltls.ensure(os.path.join(STATE, internaltls.DIR_NAME), hub, (side.host,),
                              side.ips, side.nodes, now)


def main(now: datetime.datetime | None = None) -> int:
    now = now or datetime.datetime.now(datetime.timezone.utc)
    os.umask(0o077)
    os.makedirs(STATE, exist_ok=True)
    os.chmod(STATE, 0o711)  # the volume's mount point: only traversal for others (nginx, CHP)
    sdir = os.path.join(STATE, "secrets")
    _private_dir(sdir)
    made = [name for name in ("cookie_secret", "proxy_token", "crypt_key")
            if _write_secret(os.path.join(sdir, name), secrets.token_hex(32).encode())]
    tdir = os.path.join(STATE, "tls")
    _private_dir(tdir)
    active = os.path.join(tdir, "active")
    mounted = all(os.path.exists(os.path.join(MOUNTED_TLS, f)) for f in ("tls.crt", "tls.key"))
    if mounted:
        src = MOUNTED_TLS
        tlsdemo.withdraw_public(os.path.join(STATE, "public"))
    else:
        src = tdir
        try:
            made += demo_tls(now)
        except ValueError as e:
            log(str(e), err=True)
            return 2
    try:
        made += internal_tls(now)
    except ValueError as e:
        log(str(e), err=True)
        return 2
    # nginx reads the pair from one fixed place: a symlink to whichever source is in use.
    tmp = active + ".new"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(src, tmp)
    os.replace(tmp, active)
    for d, mode in ((RUN, 0o755), (os.path.join(RUN, "ccache"), 0o711)):
        os.makedirs(d, exist_ok=True)
        os.chmod(d, mode)
    log(f"state in {STATE}; created: {', '.join(made) or 'nothing (all present)'}; "
        f"TLS from {'mounted ' + MOUNTED_TLS if mounted else 'state volume'}")
    if os.path.isdir(HOOKS):
        for name in sorted(os.listdir(HOOKS)):
            if name.endswith(".sh"):
                path = os.path.join(HOOKS, name)
                log(f"running hook {name}")
                rc = subprocess.call(["/bin/bash", path])
                if rc != 0:
                    log(f"hook {name} failed with {rc}", err=True)
                    return rc
    bad = statecheck.problems(statecheck.rules(STATE, MOUNTED_TLS), owner_uid=os.geteuid())
    if bad:
        log("refusing to start: secrets are not protected as documented (docs/security.md):",
            err=True)
        for line in bad:
            log(f"  {line}", err=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
