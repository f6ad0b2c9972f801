"""``appliance-init``: first-start setup of the state volume, run before supervisord.

Creates what is missing (never overwrites): ``secrets/cookie_secret``, ``secrets/proxy_token``,
``secrets/crypt_key`` (all root 0600, directory 0700) and a self-signed TLS pair in ``tls/``
(unless the admin mounts ``/etc/appliance/tls/tls.crt`` and ``tls.key``, which are then used).
Then runs the admin's hooks ``/etc/appliance/init.d/*.sh`` in name order.
Secrets are generated here, at first start, so none is ever in the image.
"""

from __future__ import annotations

import datetime
import os
import secrets
import socket
import subprocess
import sys

STATE = os.environ.get("APPLIANCE_STATE_DIR", "/srv/appliance")
HOOKS = os.environ.get("APPLIANCE_INIT_DIR", "/etc/appliance/init.d")
MOUNTED_TLS = "/etc/appliance/tls"


def _write_secret(path: str, data: bytes) -> bool:
    if os.path.exists(path):
        os.chmod(path, 0o600)
        return False
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return True


def make_self_signed(cert_path: str, key_path: str, hostnames: list[str]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    sans = [x509.DNSName(h) for h in hostnames]
    import ipaddress

    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write_secret(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    with open(cert_path + ".tmp", "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(cert_path + ".tmp", 0o644)
    os.replace(cert_path + ".tmp", cert_path)


def main() -> int:
    os.umask(0o077)
    os.makedirs(STATE, exist_ok=True)
    os.chmod(STATE, 0o711)
    sdir = os.path.join(STATE, "secrets")
    os.makedirs(sdir, mode=0o700, exist_ok=True)
    os.chmod(sdir, 0o700)
    made = []
    if _write_secret(os.path.join(sdir, "cookie_secret"), secrets.token_hex(32).encode()):
        made.append("cookie_secret")
    if _write_secret(os.path.join(sdir, "proxy_token"), secrets.token_hex(32).encode()):
        made.append("proxy_token")
    if _write_secret(os.path.join(sdir, "crypt_key"), secrets.token_hex(32).encode()):
        made.append("crypt_key")
    tdir = os.path.join(STATE, "tls")
    os.makedirs(tdir, mode=0o700, exist_ok=True)
    active = os.path.join(tdir, "active")
    mounted = all(os.path.exists(os.path.join(MOUNTED_TLS, f)) for f in ("tls.crt", "tls.key"))
    if mounted:
        src = MOUNTED_TLS
    else:
        src = tdir
        if not (os.path.exists(os.path.join(tdir, "tls.crt")) and os.path.exists(os.path.join(tdir, "tls.key"))):
            fqdn = socket.getfqdn()
            names = [n for n in dict.fromkeys([fqdn, socket.gethostname(), "localhost"]) if n]
            make_self_signed(os.path.join(tdir, "tls.crt"), os.path.join(tdir, "tls.key"), names)
            made.append("self-signed TLS certificate")
    # nginx reads the pair from one fixed place: a symlink to whichever source is in use.
    tmp = active + ".new"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(src, tmp)
    os.replace(tmp, active)
    for d, mode in (("/run/appliance", 0o755), ("/run/appliance/ccache", 0o711)):
        os.makedirs(d, exist_ok=True)
        os.chmod(d, mode)
    print(f"appliance-init: state in {STATE}; created: {', '.join(made) or 'nothing (all present)'}; "
          f"TLS from {'mounted /etc/appliance/tls' if mounted else 'state volume'}", flush=True)
    if os.path.isdir(HOOKS):
        for name in sorted(os.listdir(HOOKS)):
            if name.endswith(".sh"):
                path = os.path.join(HOOKS, name)
                print(f"appliance-init: running hook {name}", flush=True)
                rc = subprocess.call(["/bin/bash", path])
                if rc != 0:
                    print(f"appliance-init: hook {name} failed with {rc}", file=sys.stderr, flush=True)
                    return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
