"""Internal TLS (issue 9): the CAs and certificates, the per-user name check, the hub's pin."""

import asyncio
import datetime
import logging
import os
import ssl
import stat

import pytest

from appliance import internaltls, launcher
from appliance.hub.job import SpawnError
from appliance.hub.servertls import ENV_CA, ENV_CERT, ENV_KEY, ServerTLS

# The code takes its clock; OpenSSL's verification below reads the wall clock, so "now" is real.
NOW = datetime.datetime.now(datetime.timezone.utc)
HUB = "hub.localhost"
NODES = ("*.mini.test",)


@pytest.fixture()
def pki(tmp_path):
    root = tmp_path / "internal-tls"
    made = internaltls.ensure(str(root), HUB, ("appliance.mini.test",), ("172.29.10.10",), NODES,
                              NOW)
    return internaltls.Paths(str(root)), made


def test_ensure_makes_both_cas_and_the_appliance_certificates_private(pki):
    paths, made = pki
    assert made == ["notebooks CA", "cluster CA", "cluster-side API certificate",
                    "proxy/hub client certificate"]
    assert stat.S_IMODE(os.stat(paths.root).st_mode) == 0o700
    for name in (internaltls.NOTEBOOKS_CA, internaltls.CLUSTER_CA, internaltls.CLUSTER_API,
                 internaltls.CLIENT):
        assert stat.S_IMODE(os.stat(paths.key(name)).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(paths.crt(name)).st_mode) == 0o644
    assert paths.present()


def test_ensure_keeps_what_is_right_and_renews_for_new_names(pki):
    paths, _ = pki
    before = open(paths.crt(internaltls.NOTEBOOKS_CA)).read()
    assert internaltls.ensure(paths.root, HUB, ("appliance.mini.test",), ("172.29.10.10",),
                              NODES, NOW + datetime.timedelta(days=1)) == []
    # another node domain is outside the notebooks CA's name constraints: a new CA
    made = internaltls.ensure(paths.root, HUB, ("appliance.mini.test",), ("172.29.10.10",),
                              ("*.other.org",), NOW)
    assert made == ["notebooks CA"]
    assert open(paths.crt(internaltls.NOTEBOOKS_CA)).read() != before


@pytest.mark.parametrize("bad", ["*.hub.localhost", "alice.hub.localhost", "x.alice.hub.localhost",
                                 "not a name", "hub.localhost"])
def test_node_names_never_cover_users_hosts(bad):
    with pytest.raises(ValueError, match="internal TLS node name"):
        internaltls.node_patterns([bad], HUB)


def test_node_names_accepted():
    assert internaltls.node_patterns(["*.mini.test", " exec1.mini.test ", "*.localhost"], HUB) \
        == ("*.mini.test", "exec1.mini.test", "*.localhost")


def test_cluster_side_defaults_and_refusals():
    side = internaltls.cluster_side({"APPLIANCE_CLUSTER_ADDR": "172.29.10.10"},
                                    "appliance.mini.test", HUB)
    assert side == internaltls.ClusterSide("https://appliance.mini.test:8444",
                                           "appliance.mini.test", ("172.29.10.10",),
                                           ("*.mini.test",))
    plain = internaltls.cluster_side({}, "appliance.mini.test", HUB)
    assert plain.connect_url == "http://appliance.mini.test:8081" and plain.ips == ()
    with pytest.raises(ValueError, match="APPLIANCE_NODE_NAMES"):
        internaltls.cluster_side({"APPLIANCE_NODE_NAMES": "*.hub.localhost"}, "a.b.c", HUB)
    with pytest.raises(ValueError, match="APPLIANCE_HUB_CONNECT_URL"):
        internaltls.cluster_side({"APPLIANCE_HUB_CONNECT_URL": "ftp://x"}, "a.b.c", HUB)


# -- the check CHP makes: the name is the user's host (node's TLS client takes it from Host) -----
def _server_ctx(paths, issued, tmp_path):
    cert, key = tmp_path / "s.crt", tmp_path / "s.key"
    cert.write_text(issued.cert_pem)
    key.write_text(issued.key_pem)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH,
                                     cafile=paths.crt(internaltls.CLUSTER_CA))
    ctx.verify_mode = ssl.CERT_REQUIRED  # as jupyter-server with client_ca
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


async def _serve(ctx):
    async def handle(reader, writer):
        try:
            await reader.read(1)
        except Exception:
            pass
        writer.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    return server, server.sockets[0].getsockname()[1]


def _chp_like(paths, name, with_client_cert=True):
    ctx = ssl.create_default_context(cafile=paths.crt(internaltls.NOTEBOOKS_CA))
    if with_client_cert:
        ctx.load_cert_chain(paths.crt(internaltls.CLIENT), paths.key(internaltls.CLIENT))
    return ctx, name


async def _connect(port, ctx, name):
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=name)
    writer.write(b"x")
    await writer.drain()
    writer.close()


def test_only_the_users_own_server_answers_for_her_host(pki, tmp_path):
    paths, _ = pki
    ca = internaltls.Authority(paths)
    mallory = ca.issue("mallory.hub.localhost", NODES, NOW, days=2)

    async def main():
        server, port = await _serve(_server_ctx(paths, mallory, tmp_path))
        async with server:
            await _connect(port, *_chp_like(paths, "mallory.hub.localhost"))  # her own route
            await _connect(port, *_chp_like(paths, "exec1.mini.test"))  # the hub's host check
            with pytest.raises(ssl.SSLCertVerificationError, match="alice.hub.localhost"):
                await _connect(port, *_chp_like(paths, "alice.hub.localhost"))  # alice's route
    asyncio.run(main())


def test_a_client_without_the_appliance_certificate_is_refused(pki, tmp_path):
    paths, _ = pki
    alice = internaltls.Authority(paths).issue("alice.hub.localhost", NODES, NOW, days=2)
    handled = []

    async def main():
        async def handle(reader, writer):
            handled.append(writer.get_extra_info("peercert")["subject"])
            writer.close()
        server = await asyncio.start_server(handle, "127.0.0.1", 0,
                                            ssl=_server_ctx(paths, alice, tmp_path))
        port = server.sockets[0].getsockname()[1]
        async with server:
            ctx, name = _chp_like(paths, "alice.hub.localhost", with_client_cert=False)
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                          server_hostname=name)
            try:  # TLS 1.3: the server's refusal arrives with the first read
                got = await reader.read(1)
            except (ssl.SSLError, ConnectionResetError) as e:
                got = e
            writer.close()
            assert got == b"" or isinstance(got, Exception)
            await _connect(port, *_chp_like(paths, "alice.hub.localhost"))
            for _ in range(100):
                if handled:
                    break
                await asyncio.sleep(0.01)
    asyncio.run(main())
    assert handled == [((("commonName", "appliance.mini.test"),),)]  # only the one with it


# -- the hub's pin (appliance.hub.servertls) ----------------------------------------------------
def test_hub_pins_the_certificate_it_issued(pki, tmp_path, caplog):
    paths, _ = pki
    tls = ServerTLS(paths.root, list(NODES), logging.getLogger("test"), clock=lambda: NOW)
    alice = tls.issue("alice.hub.localhost", days=2)
    other_alice = tls.issue("alice.hub.localhost", days=2)  # same name, not this spawn's

    async def main():
        server, port = await _serve(_server_ctx(paths, alice, tmp_path))
        async with server:
            await tls.check("127.0.0.1", port, alice, "alice", timeout=5)
            with pytest.raises(SpawnError, match="did not prove it is yours"):
                await tls.check("127.0.0.1", port, other_alice, "alice", timeout=5)
        plain = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        async with plain:
            with pytest.raises(SpawnError, match="TLS handshake failed|no TLS answer"):
                await tls.check("127.0.0.1", plain.sockets[0].getsockname()[1], alice, "alice",
                                timeout=5)
    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    assert "alice: refused certificate from 127.0.0.1" in caplog.text


def test_job_env_carries_the_identity_and_the_cluster_ca(pki):
    paths, _ = pki
    tls = ServerTLS(paths.root, list(NODES), logging.getLogger("test"), clock=lambda: NOW)
    issued = tls.issue("alice.hub.localhost", days=2)
    env = tls.env(issued)
    assert env[ENV_KEY].startswith("-----BEGIN PRIVATE KEY-----")
    assert env[ENV_CERT] == issued.cert_pem
    assert env[ENV_CA] == open(paths.crt(internaltls.CLUSTER_CA)).read()


# -- the node launcher's side --------------------------------------------------------------------
def test_launcher_installs_the_identity_in_private_files(tmp_path):
    env = {"APPLIANCE_TLS_KEY": "k", "APPLIANCE_TLS_CERT": "c", "APPLIANCE_TLS_CLIENT_CA": "ca",
           "OTHER": "1"}
    d = launcher.install_tls(env, base=str(tmp_path))
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert not any(k.startswith("APPLIANCE_TLS_") for k in env)
    for var, text in (("JUPYTERHUB_SSL_KEYFILE", "k"), ("JUPYTERHUB_SSL_CERTFILE", "c"),
                      ("JUPYTERHUB_SSL_CLIENT_CA", "ca")):
        assert open(env[var]).read() == text
        assert stat.S_IMODE(os.stat(env[var]).st_mode) == 0o600
    launcher.remove_tls(d)
    assert not os.path.exists(d)
    assert launcher.install_tls({"OTHER": "1"}) is None
    with pytest.raises(SystemExit, match="APPLIANCE_TLS_CLIENT_CA"):
        launcher.install_tls({"APPLIANCE_TLS_KEY": "k", "APPLIANCE_TLS_CERT": "c"})


def test_the_hubs_requests_with_a_users_token_pass_only_her_servers_certificate(pki, tmp_path):
    """The idle check sends a token for alice's server: a server with mallory's certificate on
    the node (any URL host) must not get it; alice's own does."""
    paths, _ = pki
    ca = internaltls.Authority(paths)
    mallory = ca.issue("mallory.hub.localhost", NODES, NOW, days=2)
    alice = ca.issue("alice.hub.localhost", NODES, NOW, days=2)

    async def handshake(issued, tag):
        server, port = await _serve(_server_ctx(paths, issued, tmp_path / tag))
        async with server:
            # as tornado does: the URL's host (a node name) goes to wrap_bio as server_hostname
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ca.user_context("alice.hub.localhost"),
                server_hostname="exec1.mini.test")
            writer.close()

    (tmp_path / "a").mkdir()
    (tmp_path / "m").mkdir()
    asyncio.run(handshake(alice, "a"))
    with pytest.raises(ssl.SSLCertVerificationError, match="alice.hub.localhost"):
        asyncio.run(handshake(mallory, "m"))
