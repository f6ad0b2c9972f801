"""A private TLS identity for the notebook's Dask clusters, and the ``DASK_*`` variables using it.

Why: a Dask scheduler and its workers listen on TCP ports that every process on the node network
can reach; without TLS anyone who connects can submit work, which then runs as the cluster's
owner. With Dask's TLS security (``distributed.comm.require-encryption`` plus a certificate for
every role) both ends must present a certificate signed by the cluster's CA (distributed sets
``CERT_REQUIRED`` on both sides), so only holders of the key, i.e. the user's own processes, get
in.

What: one self-signed certificate and key (EC P-256, like ``Security.temporary()`` one cert for
every role and as its own CA), made anew at every notebook start in a directory of the user's
shared home (0700, files 0600) so that worker jobs on other nodes can read them. Only paths go into
the environment (never the key: environments end up in job ads others can read). The variables
are Dask's own configuration (``DASK_DISTRIBUTED__COMM__...``), so ``SLURMCluster()``,
``HTCondorCluster()``, ``LocalCluster()`` and ``Client()`` all use TLS without arguments, and
worker jobs get the same variables through the site's Dask configuration (Slurm ``--export``,
HTCondor ``getenv``; minisite/dask/appliance.yaml).
"""

from __future__ import annotations

import datetime
import os
import stat
from typing import Optional

DEFAULT_DIR = "~/.cache/appliance/dask-tls"
CERT_NAME = "cert.pem"
KEY_NAME = "key.pem"
# Dask configuration keys, as environment variables (dask.config.collect_env).
PREFIX = "DASK_DISTRIBUTED__COMM__"
ROLES = ("SCHEDULER", "WORKER", "CLIENT")


def env_names() -> list[str]:
    """Every variable :func:`dask_env` sets (the worker jobs must receive all of them)."""
    names = [PREFIX + "REQUIRE_ENCRYPTION", PREFIX + "TLS__CA_FILE"]
    for role in ROLES:
        names += [f"{PREFIX}TLS__{role}__CERT", f"{PREFIX}TLS__{role}__KEY"]
    return names


def dask_env(directory: Optional[str]) -> dict[str, str]:
    """The variables for an identity in ``directory``.

    ``directory=None`` (no identity could be made) still requires encryption: Dask then refuses to
    start a cluster ("encryption required") instead of starting an open one.
    """
    env = {PREFIX + "REQUIRE_ENCRYPTION": "True"}
    if directory:
        cert = os.path.join(directory, CERT_NAME)
        key = os.path.join(directory, KEY_NAME)
        env[PREFIX + "TLS__CA_FILE"] = cert
        for role in ROLES:
            env[f"{PREFIX}TLS__{role}__CERT"] = cert
            env[f"{PREFIX}TLS__{role}__KEY"] = key
    return env


def _private_dir(path: str) -> str:
    """Create ``path`` (and parents) for this user; refuse a symlink or a directory others can use."""
    path = os.path.abspath(os.path.expanduser(path))
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise PermissionError(f"{path} is not a directory of this user")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def _write_private(directory: str, name: str, data: bytes) -> None:
    """Write ``directory/name`` 0600 through a temporary file and rename (never half a file)."""
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, os.path.join(directory, name))


def make_identity(directory: str = DEFAULT_DIR, *, now: Optional[datetime.datetime] = None,
                  days: int = 8) -> str:
    """Create a new key and self-signed certificate in ``directory``; return the directory.

    Valid for ``days`` (a notebook runs at most 7 days); a new notebook start replaces both files.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory = _private_dir(directory)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dask-internal")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("dask-internal")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    _write_private(directory, KEY_NAME, key_pem)
    _write_private(directory, CERT_NAME, cert.public_bytes(serialization.Encoding.PEM))
    return directory
