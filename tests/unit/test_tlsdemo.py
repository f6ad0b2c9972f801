"""The demo certificate: a leaf signed by a local CA; an earlier image's CA-style cert is upgraded."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import socket
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance import tlsdemo

NOW = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.timezone.utc)
NAMES = tlsdemo.names_for("appliance.mini.test", "appliance.mini.test")


def earlier_image_pair(tdir, hostnames=("appliance.mini.test", "localhost")):
    """What appliance.init wrote before the local CA existed: self-signed, CA:TRUE, 825 days."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])])
    sans = [x509.DNSName(h) for h in hostnames] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=100))
            .not_valid_after(NOW + datetime.timedelta(days=725))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (tdir / "tls.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (tdir / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


def load(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def ext(cert, cls):
    return cert.extensions.get_extension_for_class(cls)


@pytest.fixture
def dirs(tmp_path):
    tdir, pdir = tmp_path / "tls", tmp_path / "public"
    tdir.mkdir(mode=0o700)
    return tdir, pdir


def test_names_cover_the_decided_public_names_and_the_host():
    n = tlsdemo.names_for("appliance.mini.test", "appliance", "hub.example.org, 192.0.2.7")
    assert n.dns[:3] == ("localhost", "hub.localhost", "*.hub.localhost")
    assert {"appliance.mini.test", "appliance", "hub.example.org", "*.hub.example.org"} <= set(n.dns)
    assert {str(i) for i in n.ips} == {"127.0.0.1", "::1", "192.0.2.7"}
    with pytest.raises(ValueError, match="APPLIANCE_PUBLIC_HOST: 'bad_name!'"):
        tlsdemo.names_for("a", "a", "bad_name!")


def test_first_start_makes_a_leaf_signed_by_a_constrained_local_ca(dirs):
    tdir, pdir = dirs
    done = tlsdemo.ensure(str(tdir), str(pdir), NAMES, NOW, "appliance.mini.test")
    assert done == ["local CA", "demo certificate"]
    ca, leaf = load(tdir / "ca.crt"), load(tdir / "tls.crt")
    assert (pdir / "appliance-ca.crt").read_bytes() == (tdir / "ca.crt").read_bytes()
    assert oct((tdir / "ca.key").stat().st_mode & 0o777) == "0o600"
    assert oct((tdir / "tls.key").stat().st_mode & 0o777) == "0o600"
    assert oct((pdir / "appliance-ca.crt").stat().st_mode & 0o777) == "0o644"
    # the leaf: not a CA, signature only, server auth, the names, at most 366 days (Mozilla)
    bc = ext(leaf, x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False
    ku = ext(leaf, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    assert ext(leaf, x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH])
    san = ext(leaf, x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == set(NAMES.dns)
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days == 365
    leaf.verify_directly_issued_by(ca)
    # the CA: a CA, may only sign certificates (no chain below it), only for the demo's names
    assert ext(ca, x509.BasicConstraints).value.ca and ext(ca, x509.BasicConstraints).value.path_length == 0
    assert ext(ca, x509.KeyUsage).value.key_cert_sign
    nc = ext(ca, x509.NameConstraints)
    assert nc.critical
    assert {s.value for s in nc.value.permitted_subtrees if isinstance(s, x509.DNSName)} == {
        "localhost", "appliance.mini.test"}


def test_second_start_keeps_everything(dirs):
    tdir, pdir = dirs
    tlsdemo.ensure(str(tdir), str(pdir), NAMES, NOW, "x")
    before = {p.name: p.read_bytes() for p in tdir.iterdir()}
    assert tlsdemo.ensure(str(tdir), str(pdir), NAMES, NOW + datetime.timedelta(days=300), "x") == []
    assert {p.name: p.read_bytes() for p in tdir.iterdir()} == before


def test_leaf_is_renewed_before_it_ends_and_when_a_name_is_added(dirs):
    tdir, pdir = dirs
    tlsdemo.ensure(str(tdir), str(pdir), NAMES, NOW, "x")
    ca = (tdir / "ca.crt").read_bytes()
    done = tlsdemo.ensure(str(tdir), str(pdir), NAMES, NOW + datetime.timedelta(days=340), "x")
    assert len(done) == 1 and done[0].startswith("demo certificate (old one: it ends")
    assert (tdir / "ca.crt").read_bytes() == ca, "the CA must stay (browsers trust it)"
    more = tlsdemo.names_for("appliance.mini.test", "appliance.mini.test", "hub2.localhost")
    done = tlsdemo.ensure(str(tdir), str(pdir), more, NOW + datetime.timedelta(days=341), "x")
    assert done == ["demo certificate (old one: it lacks hub2.localhost, *.hub2.localhost)"]
    assert (tdir / "ca.crt").read_bytes() == ca  # localhost's subtree covers hub2.localhost


def test_a_name_outside_the_cas_constraints_needs_a_new_ca(dirs):
    tdir, pdir = dirs
    tlsdemo.ensure(str(tdir), str(pdir), NAMES, NOW, "x")
    other = tlsdemo.names_for("appliance.mini.test", "appliance.mini.test", "hub.example.org")
    done = tlsdemo.ensure(str(tdir), str(pdir), other, NOW, "x")
    assert done[0].startswith("made a new local CA") and "local CA" in done
    assert tlsdemo.ca_covers(load(tdir / "ca.crt"), other)


def test_earlier_images_self_signed_ca_certificate_is_upgraded(dirs):
    tdir, pdir = dirs
    old = earlier_image_pair(tdir)
    assert tlsdemo.is_earlier_image_cert(old)
    done = tlsdemo.ensure(str(tdir), str(pdir), NAMES, NOW, "x")
    assert done[0] == "replaced the earlier image's self-signed CA-style certificate"
    leaf = load(tdir / "tls.crt")
    assert leaf != old and ext(leaf, x509.BasicConstraints).value.ca is False
    leaf.verify_directly_issued_by(load(tdir / "ca.crt"))


def test_a_foreign_certificate_in_the_state_volume_is_left_alone(dirs):
    tdir, pdir = dirs
    tlsdemo.ensure(str(tdir), str(pdir), NAMES, NOW, "x")
    for f in ("ca.crt", "ca.key"):
        (tdir / f).unlink()   # a leaf without our CA: someone else's certificate
    before = (tdir / "tls.crt").read_bytes()
    done = tlsdemo.ensure(str(tdir), str(pdir), NAMES, NOW, "x")
    assert done[0].startswith("kept ") and (tdir / "tls.crt").read_bytes() == before


def handshake(cert, key, cafile, name) -> bool:
    """A real TLS handshake on loopback (OpenSSL, as a browser checks: chain, name constraints,
    host name). True if the client trusting only ``cafile`` accepts the server as ``name``."""
    srv = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    srv.load_cert_chain(cert, key)
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        def serve():
            conn, _ = lsock.accept()
            try:
                with srv.wrap_socket(conn, server_side=True) as s:
                    s.recv(1)
            except (ssl.SSLError, OSError):
                pass
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        cli = ssl.create_default_context(cafile=str(cafile))
        try:
            with socket.create_connection(lsock.getsockname()) as raw:
                with cli.wrap_socket(raw, server_hostname=name) as s:
                    s.send(b"x")
            return True
        except ssl.SSLCertVerificationError:
            return False
        finally:
            t.join(10)


def test_a_client_trusting_only_the_local_ca_accepts_the_demo_and_nothing_else(dirs, tmp_path):
    tdir, pdir = dirs
    now = datetime.datetime.now(datetime.timezone.utc)
    tlsdemo.ensure(str(tdir), str(pdir), NAMES, now, "x")
    ca_file = pdir / "appliance-ca.crt"
    for name in ("localhost", "hub.localhost", "alice.hub.localhost", "appliance.mini.test"):
        assert handshake(tdir / "tls.crt", tdir / "tls.key", ca_file, name), name
    assert not handshake(tdir / "tls.crt", tdir / "tls.key", ca_file, "evil.example")
    # Even with the CA's key, a certificate for another site is refused (name constraints).
    ca_key = serialization.load_pem_private_key((tdir / "ca.key").read_bytes(), None)
    rogue = tlsdemo.Names(("bank.example",), ())
    key, cert = tlsdemo.make_leaf(ca_key, load(tdir / "ca.crt"), rogue, now)
    (tmp_path / "r.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "r.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    assert not handshake(tmp_path / "r.crt", tmp_path / "r.key", ca_file, "bank.example")
