"""Internal TLS (issue 9): who may answer a route, and the cluster side of the hub's API.

Why not JupyterHub's ``internal_ssl``: it signs every single-user server's certificate with one
"notebooks" CA and names the certificate after the server's host. On a shared node two users'
servers then hold equally good certificates for the same host, so a process of mallory that binds
alice's port after alice's server died (or any port the route points at) passes CHP's check. Here
each server's certificate names **its user's own origin** (``alice.hub.example.org``, the
per-user host of ``subdomain_host``), and CHP checks exactly that name: node's TLS client takes the
name to verify from the request's ``Host`` header, which for a route of alice is alice's host. A
server of another user cannot show a certificate for alice's host (only the hub signs, and only
with the user's own host), so the handshake fails and CHP answers 503. The hub itself pins: before
it adds a route it connects and compares the server's certificate with the one it issued for that
server (SHA-256), and refuses the spawn otherwise ("refused certificate" in the hub's log).

Layout, made by ``appliance.init`` in ``<state>/internal-tls`` (0700, keys 0600), all EC P-256:

* ``notebooks-ca``: signs one certificate per server (EKU serverAuth, valid for the session's
  longest possible runtime plus a day, key made by the hub at each spawn, sent to the node only in
  the job's private env file); name-constrained to the users' hosts and the nodes' domains.
  Trusted by CHP (``--client-ssl-ca``) and the hub.
* ``cluster-ca``: signs ``cluster-api`` (nginx's TLS listener for nodes, EKU serverAuth, the
  cluster-side names) and ``appliance-client`` (EKU clientAuth: CHP and the hub present it to
  single-user servers, which accept no client without it). Single-user servers trust it
  (``JUPYTERHUB_SSL_CLIENT_CA``) both for their clients and for the hub's API.

Pure builders take ``now``; :func:`ensure` does the file work.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import re
import ssl
from dataclasses import dataclass
from typing import Iterable, Optional
from urllib.parse import urlparse

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from appliance import tlsdemo
from appliance.tlsdemo import Names

DIR_NAME = "internal-tls"
NOTEBOOKS_CA = "notebooks-ca"
CLUSTER_CA = "cluster-ca"
CLUSTER_API = "cluster-api"
CLIENT = "appliance-client"
CLIENT_DAYS = 365
CLUSTER_TLS_PORT = 8444  # nginx's TLS listener for nodes on APPLIANCE_CLUSTER_ADDR


@dataclass(frozen=True)
class IssuedServer:
    """A single-user server's TLS identity: PEM key and certificate, the certificate's SHA-256."""

    key_pem: str
    cert_pem: str
    sha256: str


def node_patterns(names: Iterable[str], hub_host: str) -> tuple[str, ...]:
    """The node names a server certificate carries for the hub's own host-name check (JupyterHub
    checks the route's host): each a host name or ``*.<domain>``. None may cover a user's host
    (``<user>.<hub host>``): that would let every server answer for every user. Raises ValueError
    naming the bad entry."""
    out = []
    hub = hub_host.lower().rstrip(".")
    for n in names:
        n = n.strip().lower().rstrip(".")
        if not n:
            continue
        if not tlsdemo.DNS_RE.match(n):
            raise ValueError(f"internal TLS node name {n!r} is not a host name or *.domain")
        base = n[2:] if n.startswith("*.") else n
        # a wildcard covers one label: "*.<hub>" is every user's host; a name under the hub's is one
        if base == hub or base.endswith("." + hub):
            raise ValueError(f"internal TLS node name {n!r} would cover users' hosts "
                             f"(<user>.{hub})")
        out.append(n)
    return tuple(dict.fromkeys(out))


def default_node_patterns(connect_host: str) -> tuple[str, ...]:
    """``*.<domain>`` of the hub's cluster-side name (nodes usually share it), else nothing."""
    parts = connect_host.lower().split(".")
    return (f"*.{'.'.join(parts[1:])}",) if len(parts) > 2 else ()


@dataclass(frozen=True)
class ClusterSide:
    """What nodes connect to and which names the internal certificates carry, from the
    environment (one place for ``appliance.init`` and the hub's configuration)."""

    connect_url: str   # Spawner.hub_connect_url
    host: str          # its host name (the cluster-side certificate's first name)
    ips: tuple[str, ...]
    nodes: tuple[str, ...]  # node names / *.domains in every server certificate


def cluster_side(env, fqdn: str, hub_host: str) -> ClusterSide:
    """``APPLIANCE_HUB_CONNECT_URL`` (default with ``APPLIANCE_CLUSTER_ADDR``:
    ``https://<fqdn>:8444``, nginx's TLS listener; without it the hub's own plain
    ``http://<fqdn>:8081``), ``APPLIANCE_NODE_NAMES`` (comma/space separated; default
    ``*.<domain of the connect host>``). Raises ValueError naming the bad setting."""
    addr = env.get("APPLIANCE_CLUSTER_ADDR", "")
    default = f"https://{fqdn}:{CLUSTER_TLS_PORT}" if addr else f"http://{fqdn}:8081"
    url = env.get("APPLIANCE_HUB_CONNECT_URL") or default
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"APPLIANCE_HUB_CONNECT_URL: {url!r} is not an http(s) URL")
    raw = env.get("APPLIANCE_NODE_NAMES")
    names = re.split(r"[\s,]+", raw) if raw else default_node_patterns(parsed.hostname)
    try:
        nodes = node_patterns(names, hub_host)
    except ValueError as e:
        raise ValueError(f"APPLIANCE_NODE_NAMES: {e}") from None
    return ClusterSide(url.rstrip("/"), parsed.hostname.lower(), (addr,) if addr else (), nodes)


def issue_server(ca_key, ca_cert: x509.Certificate, user_host: str, nodes: Iterable[str],
                 now: datetime.datetime, days: float) -> IssuedServer:
    """A certificate for one user's server: the user's own host first (what CHP checks), then the
    node patterns (what the hub's readiness check needs)."""
    key, cert = tlsdemo.make_leaf(ca_key, ca_cert, Names((user_host, *nodes), ()), now,
                                  days=days)
    return IssuedServer(tlsdemo.key_pem(key).decode(), tlsdemo.pem(cert).decode(),
                        sha256_of_der(cert.public_bytes(serialization.Encoding.DER)))


def sha256_of_der(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def server_context(client_cert: str, client_key: str, ca_file: str) -> ssl.SSLContext:
    """The hub's client side towards a single-user server: its client certificate, the notebooks
    CA; the host name is not checked here (the caller pins the certificate instead)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(client_cert, client_key)
    return ctx


class _NamedContext(ssl.SSLContext):
    """Checks the peer's certificate against a fixed name whatever host the URL has (and sends
    that name as SNI): HTTP clients pass the URL's host to ``wrap_socket``/``wrap_bio``."""

    expected_name = ""

    def wrap_socket(self, sock, *args, server_hostname=None, **kw):
        return super().wrap_socket(sock, *args, server_hostname=self.expected_name, **kw)

    def wrap_bio(self, incoming, outgoing, *args, server_hostname=None, **kw):
        return super().wrap_bio(incoming, outgoing, *args, server_hostname=self.expected_name,
                                **kw)


def user_server_context(client_cert: str, client_key: str, ca_file: str,
                        user_host: str) -> ssl.SSLContext:
    """The hub's client side towards one user's server when it sends her credentials (a token
    for her server): only a certificate for her own host passes, as in CHP."""
    ctx = _NamedContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.expected_name = user_host
    ctx.load_verify_locations(ca_file)
    ctx.load_cert_chain(client_cert, client_key)
    return ctx


@dataclass(frozen=True)
class Paths:
    """Where the files live, for the hub, CHP and nginx."""

    root: str

    def crt(self, name: str) -> str:
        return os.path.join(self.root, f"{name}.crt")

    def key(self, name: str) -> str:
        return os.path.join(self.root, f"{name}.key")

    def present(self) -> bool:
        return all(os.path.exists(p) for n in (NOTEBOOKS_CA, CLUSTER_CA, CLIENT)
                   for p in (self.crt(n), self.key(n)))


class Authority:
    """The hub's notebooks CA, loaded once (the key stays in the hub's memory)."""

    def __init__(self, paths: Paths):
        self.paths = paths
        with open(paths.key(NOTEBOOKS_CA), "rb") as f:
            self._key = serialization.load_pem_private_key(f.read(), password=None)
        self._cert = tlsdemo.load_cert(paths.crt(NOTEBOOKS_CA))
        with open(paths.crt(CLUSTER_CA)) as f:
            self.cluster_ca_pem = f.read()

    def issue(self, user_host: str, nodes: Iterable[str], now: datetime.datetime,
              days: float) -> IssuedServer:
        return issue_server(self._key, self._cert, user_host, nodes, now, days)

    def client_context(self) -> ssl.SSLContext:
        return server_context(self.paths.crt(CLIENT), self.paths.key(CLIENT),
                              self.paths.crt(NOTEBOOKS_CA))

    def user_context(self, user_host: str) -> ssl.SSLContext:
        return user_server_context(self.paths.crt(CLIENT), self.paths.key(CLIENT),
                                   self.paths.crt(NOTEBOOKS_CA), user_host)


def _names_ok(cert: Optional[x509.Certificate], ca: x509.Certificate, names: Names,
              now: datetime.datetime) -> bool:
    return cert is not None and tlsdemo.leaf_problem(cert, ca, names, now) is None


def _ensure_ca(paths: Paths, name: str, names: Names, now: datetime.datetime,
               label: str) -> tuple[object, x509.Certificate, bool]:
    ca = tlsdemo.load_cert(paths.crt(name)) if os.path.exists(paths.key(name)) else None
    if (ca is not None and ca.not_valid_after_utc - now > datetime.timedelta(days=tlsdemo.RENEW_DAYS)
            and tlsdemo.ca_covers(ca, names)):
        with open(paths.key(name), "rb") as f:
            return serialization.load_pem_private_key(f.read(), password=None), ca, False
    key, ca = tlsdemo.make_ca(names, now, label)
    tlsdemo.write_atomic(paths.key(name), tlsdemo.key_pem(key), 0o600)
    tlsdemo.write_atomic(paths.crt(name), tlsdemo.pem(ca), 0o644)
    return key, ca, True


def _ensure_leaf(paths: Paths, name: str, ca_key, ca: x509.Certificate, names: Names,
                 now: datetime.datetime, renewed_ca: bool, usages: tuple) -> bool:
    if not renewed_ca and _names_ok(tlsdemo.load_cert(paths.crt(name)), ca, names, now):
        return False
    key, cert = tlsdemo.make_leaf(ca_key, ca, names, now, days=CLIENT_DAYS, usages=usages)
    tlsdemo.write_atomic(paths.key(name), tlsdemo.key_pem(key), 0o600)
    tlsdemo.write_atomic(paths.crt(name), tlsdemo.pem(cert), 0o644)
    return True


def ensure(root: str, hub_host: str, cluster_names: Iterable[str], cluster_ips: Iterable[str],
           nodes: Iterable[str], now: datetime.datetime) -> list[str]:
    """Make or refresh both CAs and the two appliance certificates; returns what was made."""
    if not os.path.isdir(root):
        os.mkdir(root, 0o700)
    paths = Paths(root)
    cluster = Names(tuple(dict.fromkeys(n.lower() for n in cluster_names)),
                    tuple(ipaddress.ip_address(a) for a in cluster_ips))
    if not cluster.dns:
        raise ValueError("internal TLS needs the hub's cluster-side host name "
                         "(APPLIANCE_HUB_CONNECT_URL)")
    node_list = node_patterns(nodes, hub_host)
    notebooks = Names((f"*.{hub_host}", *node_list), ())
    done = []
    _, _, new_nb = _ensure_ca(paths, NOTEBOOKS_CA, notebooks, now, "its notebook servers")
    if new_nb:
        done.append("notebooks CA")
    ca_key, ca, new_cl = _ensure_ca(paths, CLUSTER_CA, cluster, now, "its cluster side")
    if new_cl:
        done.append("cluster CA")
    if _ensure_leaf(paths, CLUSTER_API, ca_key, ca, cluster, now, new_cl,
                    (ExtendedKeyUsageOID.SERVER_AUTH,)):
        done.append("cluster-side API certificate")
    client = Names((cluster.dns[0],), ())
    if _ensure_leaf(paths, CLIENT, ca_key, ca, client, now, new_cl,
                    (ExtendedKeyUsageOID.CLIENT_AUTH,)):
        done.append("proxy/hub client certificate")
    return done
