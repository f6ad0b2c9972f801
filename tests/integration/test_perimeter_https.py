"""Issue 10, the HTTPS front (nginx/appliance.conf) on the mini site:

* TLS meets Mozilla's "intermediate" profile, checked by sslyze's own Mozilla checker, with the
  demo's ECDSA certificate and with a site's mounted RSA certificate (a throwaway container of the
  appliance image, started the way the image starts: appliance-init, then nginx);
* the demo certificate is a leaf (CA:FALSE, serverAuth) signed by the local CA the demo serves;
* security headers on hub pages and on the user's server (which keeps JupyterLab's own CSP);
* request bodies: small on the login form and the hub, large only on the contents API;
* a burst of login POSTs from one address (a container on the dmz network) gets 429 with
  Retry-After, while a login from another address (the host) goes through;
* wrong passwords for one account get the hub's 429 with Retry-After after five, identical for an
  unknown name, while another user logs in at once.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import ssl
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.conftest import (HTTP_URL, PROJECT, SITE_URL, HubClient, ca_bundle,
                            image, podman, site_exec, wait_for)

pytestmark = pytest.mark.minisite

HTTPS_PORT = urlparse(SITE_URL).port or 443
HUB_HOST = urlparse(SITE_URL).hostname


def requests_session():
    import requests

    s = requests.Session()
    s.trust_env = False
    s.verify = ca_bundle()
    return s


# ----------------------------------------------------------------------------------- TLS

def mozilla_intermediate_issues(port: int, ca_file: str, host: str = "localhost") -> dict:
    """sslyze's scan of 127.0.0.1:port with the commands its Mozilla checker needs, and the
    checker's verdict against "intermediate" ({} = compliant)."""
    from sslyze import (CertificateInfoExtraArgument, Scanner, ScanCommandsExtraArguments,
                        ServerNetworkConfiguration, ServerNetworkLocation, ServerScanRequest)
    from sslyze.mozilla_tls_profile.tls_config_checker import (
        SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER, MozillaTlsConfiguration,
        ServerNotCompliantWithTlsConfiguration, TlsConfigurationEnum,
        check_server_against_tls_configuration)

    request = ServerScanRequest(
        server_location=ServerNetworkLocation(host, port, ip_address="127.0.0.1"),
        network_configuration=ServerNetworkConfiguration(tls_server_name_indication=host),
        scan_commands=SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
        scan_commands_extra_arguments=ScanCommandsExtraArguments(
            certificate_info=CertificateInfoExtraArgument(custom_ca_file=Path(ca_file))))
    scanner = Scanner()
    t0 = time.monotonic()
    scanner.queue_scans([request])
    [result] = list(scanner.get_results())
    print(f"sslyze scan of port {port}: {time.monotonic() - t0:.1f} s")
    try:
        check_server_against_tls_configuration(
            result, MozillaTlsConfiguration.get(TlsConfigurationEnum.MOZILLA_INTERMEDIATE))
    except ServerNotCompliantWithTlsConfiguration as e:
        return e.issues
    return {}


def test_tls_meets_mozilla_intermediate_with_the_demo_certificate(site):
    assert mozilla_intermediate_issues(HTTPS_PORT, ca_bundle()) == {}


def peer_certificate(port: int, ca_file: str, host: str = "localhost"):
    from cryptography import x509

    ctx = ssl.create_default_context(cafile=ca_file)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            return x509.load_der_x509_certificate(s.getpeercert(binary_form=True)), s.version()


def test_demo_certificate_is_a_leaf_of_the_served_local_ca(site):
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    served = requests_session().get(f"{HTTP_URL}/appliance-ca.crt", timeout=10)
    assert served.status_code == 200
    assert served.headers["Content-Type"] == "application/x-x509-ca-cert"
    assert served.text == Path(ca_bundle()).read_text(), "the served CA is the one that signed"
    ca = x509.load_pem_x509_certificate(served.content)
    leaf, version = peer_certificate(HTTPS_PORT, ca_bundle())
    assert version in ("TLSv1.2", "TLSv1.3")
    leaf.verify_directly_issued_by(ca)
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert ExtendedKeyUsageOID.SERVER_AUTH in leaf.extensions.get_extension_for_class(
        x509.ExtendedKeyUsage).value
    dns = leaf.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert {"localhost", "hub.localhost", "*.hub.localhost", "appliance.mini.test"} <= set(dns)
    for name in ("hub.localhost", "alice.hub.localhost", "appliance.mini.test"):
        assert peer_certificate(HTTPS_PORT, ca_bundle(), host=name)[0] == leaf


def make_rsa_site_pair(directory: Path):
    """A site's RSA-2048 certificate for localhost, signed by a test CA (the site's own CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test site CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                         critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=90))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False,
                                         False), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    (directory / "tls.crt").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    os.chmod(directory / "tls.key", 0o600)
    (directory / "site-ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))


@pytest.fixture
def scratch():
    d = Path(tempfile.mkdtemp(prefix="jba-perimeter-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def digest(directory: Path) -> dict[str, tuple[str, int, float]]:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode, p.stat().st_mtime)
            for p in sorted(directory.iterdir())}


def test_tls_meets_mozilla_intermediate_with_a_mounted_rsa_certificate(site, scratch):
    """The image's own start (appliance-init, appliance-nginx-conf, nginx) with a site's RSA
    certificate mounted read-write: the profile holds, and init never touches the pair."""
    tls, state = scratch / "site-tls", scratch / "state"
    tls.mkdir()
    state.mkdir()
    make_rsa_site_pair(tls)
    before = digest(tls)
    start = ("/opt/jupyterhub/bin/python -m appliance.init && /usr/local/bin/appliance-nginx-conf "
             "&& exec nginx -g 'daemon off;' -c /etc/nginx/appliance.conf")
    cid = podman("run", "-d", "--rm", "-p", "127.0.0.1::8443", "-v", f"{tls}:/etc/appliance/tls",
                 "-v", f"{state}:/srv/appliance", "--entrypoint", "/bin/bash",
                 image("appliance"), "-c", start).stdout.strip()
    try:
        port = int(podman("port", cid, "8443").stdout.strip().rsplit(":", 1)[1])

        def serving():
            try:
                return peer_certificate(port, str(tls / "site-ca.crt"))[0]
            except OSError:
                return None
        leaf = wait_for("nginx with the site's certificate", serving, timeout=30, interval=0.3)
        assert leaf.public_key().key_size == 2048
        assert mozilla_intermediate_issues(port, str(tls / "site-ca.crt")) == {}
        assert not (state / "public" / "appliance-ca.crt").exists()
        assert not (state / "tls" / "tls.crt").exists(), "a demo pair next to the site's"
    finally:
        podman("rm", "-f", "-t", "2", cid, check=False)
    assert digest(tls) == before, "appliance-init changed the mounted site certificate"


def test_appliance_refuses_to_start_with_a_loose_secret(site, scratch):
    """The image's real entrypoint on a state volume whose cookie secret others can read."""
    state = scratch / "state"
    (state / "secrets").mkdir(parents=True, mode=0o700)
    secret = state / "secrets" / "cookie_secret"
    secret.write_text("0" * 64)
    os.chmod(secret, 0o644)
    r = podman("run", "--rm", "-v", f"{state}:/srv/appliance", image("appliance"),
               check=False, timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "refusing to start" in out
    assert "/srv/appliance/secrets/cookie_secret (hub secret) has mode 0644" in out
    assert "chmod 0600 /srv/appliance/secrets/cookie_secret" in out
    assert "supervisord" not in out and (secret.stat().st_mode & 0o777) == 0o644


# ------------------------------------------------------------------------------- headers

def test_security_headers_on_hub_pages(site):
    s = requests_session()
    for path in ("/hub/login", "/hub/api/", "/hub/static/css/style.min.css"):
        r = s.get(f"{SITE_URL}{path}", timeout=10, allow_redirects=False)
        h = r.headers
        assert h["Strict-Transport-Security"] == "max-age=63072000", path
        assert h["X-Content-Type-Options"] == "nosniff", path
        assert h["Referrer-Policy"] == "same-origin", path
        assert "frame-ancestors 'none'" in h.get("Content-Security-Policy", ""), path
        assert h["X-Frame-Options"] == "DENY", path
    r = s.get(f"{SITE_URL}/hub/login", timeout=10)
    assert r.headers["X-Content-Type-Options"].count("nosniff") == 1, "header sent twice"


def test_only_static_assets_are_compressed(site):
    """Issue 16: static files are gzipped for slow links; HTML pages and API answers never are
    (BREACH: they carry the XSRF token next to reflected input)."""
    s = requests_session()
    gz = {"Accept-Encoding": "gzip"}
    css = s.get(f"{SITE_URL}/hub/static/css/style.min.css", headers=gz, timeout=10)
    assert css.status_code == 200 and css.headers.get("Content-Encoding") == "gzip"
    assert "Accept-Encoding" in css.headers.get("Vary", "")
    for path in ("/hub/login", "/hub/api/", "/hub/login?next=%2Fhub%2F" + "x" * 2000):
        r = s.get(f"{SITE_URL}{path}", headers=gz, timeout=10, allow_redirects=False)
        assert "Content-Encoding" not in r.headers, (path, r.headers)


def test_user_server_keeps_jupyterlabs_own_policy_and_takes_big_uploads(client_for):
    alice = client_for("alice")
    r = alice.spawn({"backend": "htcondor"})
    assert r.status_code in (201, 202), r.text
    try:
        alice.wait_ready(timeout=180)
        lab = alice.user_api("GET", "/lab")
        assert lab.status_code == 200 and "JupyterLab" in lab.text
        h = lab.headers
        assert h["Strict-Transport-Security"] == "max-age=63072000"
        assert h["X-Content-Type-Options"] == "nosniff" and h["Referrer-Policy"] == "same-origin"
        # nginx passes the server's own Content-Security-Policy unchanged (compare the answer
        # of configurable-http-proxy itself, inside the appliance, without nginx in front).
        # (CHP routes by host: the request names alice's own origin)
        code = ("import sys, urllib.request as u; r = u.urlopen(u.Request(sys.argv[1], headers="
                "{'Authorization': 'token ' + sys.stdin.read().strip(), 'Host': sys.argv[2]})); "
                "print(r.headers.get('Content-Security-Policy'))")
        own = site_exec("appliance", "/opt/jupyterhub/bin/python", "-c", code,
                        "http://127.0.0.1:8000/user/alice/lab",
                        urlparse(alice.user_url()).netloc, input=alice.token).stdout.strip()
        assert own not in ("", "None") and h.get("Content-Security-Policy") == own, (own, h)
        # Compression (issue 16): JupyterLab's versioned static files yes, its page and API no.
        assert "Content-Encoding" not in h
        assert "Content-Encoding" not in alice.user_api("GET", "/api/status").headers
        import re
        asset = re.search(r'src="(/user/alice/static/[^"]+\.js[^"]*)"', lab.text)
        assert asset, lab.text[:2000]
        js = alice.s.get(urlparse(alice.user_url())._replace(path="").geturl() + asset.group(1),
                         headers={"Authorization": f"token {alice.token}"}, timeout=30)
        assert js.status_code == 200 and js.headers.get("Content-Encoding") == "gzip", js.headers
        # An upload of 3 MB through the contents API goes through ...
        import base64
        body = {"type": "file", "format": "base64",
                "content": base64.b64encode(os.urandom(3 * 1024 * 1024)).decode()}
        r = alice.user_api("PUT", "/api/contents/perimeter-upload.bin", json=body)
        assert r.status_code in (200, 201), r.status_code
        alice.user_api("DELETE", "/api/contents/perimeter-upload.bin")
        # ... the same size anywhere else on the user server is refused by nginx.
        r = alice.user_api("POST", "/api/sessions", data=b"x" * (3 * 1024 * 1024))
        assert r.status_code == 413, r.status_code
    finally:
        alice.stop()


def test_small_bodies_on_the_login_form_and_the_hub(site, users):
    s = requests_session()
    r = s.post(f"{SITE_URL}/hub/login", data={"username": "alice", "password": "x" * 20000},
               timeout=10, allow_redirects=False)
    assert r.status_code == 413
    c = HubClient(site)
    assert c.login("alice", users["alice"]["password"]).status_code == 302
    c.make_token()
    r = c.api("POST", "/users/alice/server", data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
              headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert "" not in c.user_model().get("servers", {}), "the oversized request started a server"


# ------------------------------------------------------------------------------ throttle

BURST = r"""
import concurrent.futures, json, re, sys
import requests
base, ca, n = sys.argv[1], sys.argv[2], int(sys.argv[3])  # argv[4]: the account guessed
s = requests.Session()
s.verify = ca
page = s.get(base + "/hub/login", timeout=20)
xsrf = re.search(r'name="_xsrf"\s+value="([^"]+)"', page.text).group(1)
def guess(i):
    r = s.post(base + "/hub/login?next=", data={"username": sys.argv[4], "password": f"guess-{i}",
               "_xsrf": xsrf}, allow_redirects=False, timeout=60)
    return [r.status_code, r.headers.get("Retry-After"), r.text[:200]]
with concurrent.futures.ThreadPoolExecutor(n) as ex:
    out = list(ex.map(guess, range(n)))
print(json.dumps(out))
"""


def appliance_dmz_ip() -> str:
    nets = json.loads(podman("inspect", "-f", "{{json .NetworkSettings.Networks}}",
                             f"{PROJECT}_appliance_1").stdout)
    return nets[f"{PROJECT}_dmz"]["IPAddress"]


def test_password_guessing_is_throttled_per_client_address(site, users):
    """40 wrong passwords at once from a container on the dmz network (another client address
    than the host's): the ones beyond nginx's burst get its 429 + Retry-After; alice then logs in
    from the host at once. The guessed account is a name nobody uses (the hub's per-account
    back-off answers the same for unknown names, so some of the 20 that pass nginx get the hub's
    429: test_password_guessing_is_throttled_per_account tries that one)."""
    ca = Path(ca_bundle()).read_text()
    script = f"cat > /tmp/ca.pem <<'EOF'\n{ca}EOF\nexec /opt/jupyterhub/bin/python - " \
             f"https://{HUB_HOST}:8443 /tmp/ca.pem 40 nosuch{secrets.token_hex(3)} " \
             f"<<'EOF'\n{BURST}EOF\n"
    # the hub's own name (any other is only redirected to it), resolved to the dmz address
    r = podman("run", "--rm", "-i", "--network", f"{PROJECT}_dmz",
               "--add-host", f"{HUB_HOST}:{appliance_dmz_ip()}",
               "--entrypoint", "/bin/bash", image("appliance"), "-s", input=script, timeout=180)
    answers = json.loads(r.stdout.strip().splitlines()[-1])
    codes = [a[0] for a in answers]
    throttled = [a for a in answers if a[0] == 429 and "from your address" in a[2]]
    print(f"burst of 40: {len(throttled)} x nginx 429, {codes.count(429) - len(throttled)} x hub "
          f"429 (account), others {sorted(set(codes) - {429})}")
    assert len(throttled) >= 10, codes
    assert all(a[1] and int(a[1]) >= 1 for a in answers if a[0] == 429), answers
    assert "Too many login attempts from your address" in throttled[0][2]
    assert set(codes) - {429} <= {200, 403}, f"unexpected answers: {codes}"
    # Another client address (the host) is not slowed: a login goes straight through.
    t0 = time.monotonic()
    c = HubClient(site)
    assert c.login("alice", users["alice"]["password"]).status_code == 302
    print(f"login from the host right after the burst: {time.monotonic() - t0:.2f} s")


def post_login(user: str, password: str):
    """One login POST from the host (a fresh session); the response, not followed."""
    c = HubClient(SITE_URL)
    return c.login(user, password)


def test_password_guessing_is_throttled_per_account(site, users):
    """Wrong passwords for benchguess (a user no other test uses, demo/users.tsv) from the host:
    the first login_backoff_after (5) get the usual 403, the next one and even the right password
    get the hub's 429 + Retry-After; an unknown name gets exactly the same answers; alice logs
    in at once meanwhile; after Retry-After, benchguess logs in, which resets its count."""
    nobody = "nosuch" + secrets.token_hex(3)  # a fresh unknown name: no count from earlier runs

    def answers(user: str, n: int):
        out = []
        for i in range(n):
            t0 = time.monotonic()
            r = post_login(user, f"wrong-{i}")
            page = re.sub(r'(xsrf_token: "|name="_xsrf"\s+value=")[^"]*', r"\1",  # per session
                          r.text.replace(user, "USER"))
            out.append((r.status_code, r.headers.get("Retry-After"), page, time.monotonic() - t0))
        return out

    # Start from a count of zero, even after an interrupted run (a success resets it).
    for _ in range(4):
        r = post_login("benchguess", users["benchguess"]["password"])
        if r.status_code != 429:
            break
        time.sleep(int(r.headers["Retry-After"]))
    assert r.status_code == 302, r.status_code
    guessed, unknown = answers("benchguess", 6), answers(nobody, 6)
    print("per-account: benchguess", [(a[0], a[1], round(a[3], 2)) for a in guessed],
          "unknown", [(a[0], a[1], round(a[3], 2)) for a in unknown])
    assert [a[0] for a in guessed] == [403] * 5 + [429], guessed
    assert [a[:3] for a in guessed] == [a[:3] for a in unknown]  # status, Retry-After, page
    assert all(a[3] >= 1.0 for a in guessed[:5] + unknown[:5])   # the failure floor, both
    status, retry, page, _ = guessed[5]
    assert 1 <= int(retry) <= 10 and "Too many failed logins for this account" in page
    right = post_login("benchguess", users["benchguess"]["password"])
    assert right.status_code == 429 and right.headers.get("Retry-After"), right.status_code
    t0 = time.monotonic()
    assert post_login("alice", users["alice"]["password"]).status_code == 302
    print(f"alice's login meanwhile: {time.monotonic() - t0:.2f} s")
    # The lock ends when Retry-After says (its length is the setting's), and a success resets.
    time.sleep(int(right.headers["Retry-After"]))
    assert post_login("benchguess", users["benchguess"]["password"]).status_code == 302
    assert [a[0] for a in answers("benchguess", 1)] == [403]  # counting from zero again
    assert post_login("benchguess", users["benchguess"]["password"]).status_code == 302  # no count left

