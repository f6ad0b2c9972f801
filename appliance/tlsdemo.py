"""The demo certificate: a leaf signed by a local CA generated in the state volume.

Used only when the site mounts no certificate of its own (``/etc/appliance/tls``; a mounted pair is
never read or touched here). Layout in ``<state>/tls`` (0700): ``ca.key`` / ``tls.key`` (0600),
``ca.crt`` / ``tls.crt``; the CA certificate is also published (0644) as
``<state>/public/appliance-ca.crt``, which nginx serves at ``/appliance-ca.crt`` and the demo prints,
so browsers and test clients can trust the demo by trusting that one file.

* The CA: ``CA:TRUE, pathlen:0``, ``keyCertSign, cRLSign``, and name constraints limited to the
  demo's names (a leaked CA key cannot impersonate any other site); 10 years.
* The leaf: ``CA:FALSE``, ``digitalSignature``, EKU ``serverAuth``, SANs ``localhost``,
  ``hub.localhost``, ``*.hub.localhost`` (the demo hub and its users' servers, one origin each),
  ``APPLIANCE_HUB_HOST`` and ``*.`` of it, the host's names, 127.0.0.1, ::1 and whatever
  ``APPLIANCE_PUBLIC_HOST`` adds; 365 days (Mozilla's intermediate profile allows at most 366),
  re-issued at start when it has less than 30 days left or lacks a name.
* An earlier image's certificate (self-signed with ``CA:TRUE``, a CA used as a server certificate)
  is replaced automatically.

Pure functions take ``now``; :func:`ensure` does the file work for ``appliance.init``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Optional, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BASE_NAMES = ("localhost", "hub.localhost", "*.hub.localhost")
BASE_IPS = ("127.0.0.1", "::1")
LEAF_DAYS = 365
CA_DAYS = 3650
RENEW_DAYS = 30
CA_PUBLIC_NAME = "appliance-ca.crt"
DNS_RE = re.compile(r"^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                     r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")

IP = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


@dataclass(frozen=True)
class Names:
    """What the demo certificate covers."""

    dns: tuple[str, ...]
    ips: tuple[IP, ...]


def names_for(fqdn: str, hostname: str, public_hosts: str = "", hub_host: str = "") -> Names:
    """The demo's names: the base set, the hub's host and its ``*.`` subdomains (the per-user
    servers, ``APPLIANCE_HUB_HOST``, checked by appliance.publicorigin), the host's names, and
    each public host (plus its ``*.`` subdomains) from a comma/space separated list such as
    ``APPLIANCE_PUBLIC_HOST``. Raises ValueError naming a bad entry."""
    dns: list[str] = list(BASE_NAMES)
    if hub_host:
        dns += [hub_host, "*." + hub_host]
    ips: list[IP] = [ipaddress.ip_address(a) for a in BASE_IPS]
    for n in (fqdn, hostname):
        if n and DNS_RE.match(n) and not n.startswith("*."):
            dns.append(n.lower())
    for item in filter(None, re.split(r"[\s,]+", public_hosts or "")):
        try:
            ips.append(ipaddress.ip_address(item.strip("[]")))
            continue
        except ValueError:
            pass
        if not DNS_RE.match(item) or item.startswith("*."):
            raise ValueError(f"APPLIANCE_PUBLIC_HOST: {item!r} is not a host name or IP address")
        dns += [item.lower(), "*." + item.lower()]
    return Names(tuple(dict.fromkeys(dns)), tuple(dict.fromkeys(ips)))


def _base(name: str) -> str:
    return name[2:] if name.startswith("*.") else name


def _permitted_dns(names: Names) -> list[str]:
    """Name-constraint subtrees: the fewest names whose subtrees cover every demo name."""
    bases = sorted({_base(n) for n in names.dns}, key=lambda n: n.count("."))
    out: list[str] = []
    for b in bases:
        if not any(b == p or b.endswith("." + p) for p in out):
            out.append(b)
    return out


def ca_covers(ca: x509.Certificate, names: Names) -> bool:
    """True if the CA's name constraints permit every name (a CA without them permits all)."""
    try:
        nc = ca.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return True
    dns = [s.value for s in nc.permitted_subtrees or [] if isinstance(s, x509.DNSName)]
    nets = [s.value for s in nc.permitted_subtrees or [] if isinstance(s, x509.IPAddress)]
    return (all(any(_base(n) == p or _base(n).endswith("." + p) for p in dns) for n in names.dns)
            and all(any(ip in net for net in nets if net.version == ip.version)
                    for ip in names.ips))


def make_ca(names: Names, now: datetime.datetime, label: str):
    """(key, certificate) of a new local CA for these names."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "JupyterHub Batch Appliance"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"Local CA of {label}"[:64]),
    ])
    nets = [ipaddress.ip_network(ip) for ip in names.ips]
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.NameConstraints(
            permitted_subtrees=[x509.DNSName(d) for d in _permitted_dns(names)]
            + [x509.IPAddress(n) for n in nets], excluded_subtrees=None), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_leaf(ca_key, ca_cert: x509.Certificate, names: Names, now: datetime.datetime,
              days: float = LEAF_DAYS, usages: tuple = (ExtendedKeyUsageOID.SERVER_AUTH,)):
    """(key, certificate) for these names, signed by the CA: a server certificate unless
    ``usages`` says otherwise (extended key usages), valid ``days``."""
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName(d) for d in names.dns] + [x509.IPAddress(i) for i in names.ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names.dns[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now - datetime.timedelta(minutes=5) + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def is_earlier_image_cert(cert: x509.Certificate) -> bool:
    """The self-signed server certificate of images before the local CA: issuer = subject and
    ``CA:TRUE`` (a CA certificate used as a server certificate)."""
    return cert.issuer == cert.subject and _is_ca(cert)


def leaf_problem(leaf: x509.Certificate, ca: x509.Certificate, names: Names,
                 now: datetime.datetime) -> Optional[str]:
    """Why the demo leaf must be re-issued, or None."""
    if _is_ca(leaf):
        return "it is a CA certificate"
    if leaf.issuer != ca.subject:
        return "another CA issued it"
    try:
        leaf.verify_directly_issued_by(ca)
    except Exception:
        return "the local CA's signature does not verify"
    if leaf.not_valid_after_utc - now < datetime.timedelta(days=RENEW_DAYS):
        return f"it ends {leaf.not_valid_after_utc:%Y-%m-%d}"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    missing = ([d for d in names.dns if d not in san.get_values_for_type(x509.DNSName)]
               + [str(i) for i in names.ips if i not in san.get_values_for_type(x509.IPAddress)])
    if missing:
        return f"it lacks {', '.join(missing)}"
    return None


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_atomic(path: str, data: bytes, mode: int) -> None:
    """Atomically (temp file + rename), never through a symlink."""
    tmp = f"{path}.new"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def load_cert(path: str) -> Optional[x509.Certificate]:
    try:
        with open(path, "rb") as f:
            return x509.load_pem_x509_certificate(f.read())
    except (OSError, ValueError):
        return None


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def ensure(tls_dir: str, public_dir: str, names: Names, now: datetime.datetime,
           label: str) -> list[str]:
    """Make or refresh the demo CA and leaf in ``tls_dir``; returns what was done (for the log).

    Existing pairs stay as long as they are right. A server certificate in ``tls_dir`` that is
    neither ours nor an earlier image's is left alone (reported)."""
    done: list[str] = []
    ca_crt, ca_key = os.path.join(tls_dir, "ca.crt"), os.path.join(tls_dir, "ca.key")
    crt, key = os.path.join(tls_dir, "tls.crt"), os.path.join(tls_dir, "tls.key")
    leaf = load_cert(crt)
    ca = load_cert(ca_crt) if os.path.exists(ca_key) else None
    if ca is None and leaf is not None and not is_earlier_image_cert(leaf):
        return [f"kept {crt}: not made by this appliance (mount a site certificate in "
                f"/etc/appliance/tls instead)"]
    if ca is None and leaf is not None:
        done.append("replaced the earlier image's self-signed CA-style certificate")
    if (ca is None or ca.not_valid_after_utc - now < datetime.timedelta(days=RENEW_DAYS)
            or not ca_covers(ca, names)):
        if ca is not None:
            done.append("made a new local CA (the old one ends soon or does not cover the names): "
                        "trust the new file")
        new_key, ca = make_ca(names, now, label)
        write_atomic(ca_key, key_pem(new_key), 0o600)
        write_atomic(ca_crt, pem(ca), 0o644)
        done.append("local CA")
        leaf = None
    problem = "missing" if leaf is None else leaf_problem(leaf, ca, names, now)
    if problem:
        with open(ca_key, "rb") as f:
            signer = serialization.load_pem_private_key(f.read(), password=None)
        leaf_key, leaf = make_leaf(signer, ca, names, now)
        write_atomic(key, key_pem(leaf_key), 0o600)
        write_atomic(crt, pem(leaf), 0o644)
        done.append("demo certificate" + ("" if problem == "missing" else f" (old one: {problem})"))
    os.makedirs(public_dir, mode=0o755, exist_ok=True)
    os.chmod(public_dir, 0o755)
    public = os.path.join(public_dir, CA_PUBLIC_NAME)
    if load_cert(public) != ca:
        write_atomic(public, pem(ca), 0o644)
    return done


def withdraw_public(public_dir: str) -> None:
    """A site certificate is mounted: the demo CA is not advertised."""
    try:
        os.unlink(os.path.join(public_dir, CA_PUBLIC_NAME))
    except FileNotFoundError:
        pass
