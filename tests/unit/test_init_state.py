"""appliance-init: creates the state, and refuses to start on secrets looser than documented."""

from __future__ import annotations

import datetime
import os

import pytest

from appliance import init, statecheck, tlsdemo

NOW = datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc)


@pytest.fixture
def state(tmp_path, monkeypatch):
    st, run, mounted = tmp_path / "srv", tmp_path / "run", tmp_path / "mounted-tls"
    monkeypatch.setattr(init, "STATE", str(st))
    monkeypatch.setattr(init, "RUN", str(run))
    monkeypatch.setattr(init, "HOOKS", str(tmp_path / "no-hooks"))
    monkeypatch.setattr(init, "MOUNTED_TLS", str(mounted))
    return st


def run_init(capsys):
    rc = init.main(NOW)
    out = capsys.readouterr()
    return rc, out.out + out.err


def mode(p):
    return oct(os.lstat(p).st_mode & 0o7777)


def test_first_start_creates_private_secrets_and_the_demo_pair(state, capsys):
    rc, out = run_init(capsys)
    assert rc == 0, out
    for name in ("cookie_secret", "proxy_token", "crypt_key"):
        assert mode(state / "secrets" / name) == "0o600"
        assert len((state / "secrets" / name).read_text()) == 64
    assert mode(state / "secrets") == mode(state / "tls") == "0o700"
    assert mode(state) == "0o711"
    assert os.readlink(state / "tls" / "active") == str(state / "tls")
    assert (state / "public" / "appliance-ca.crt").exists()
    assert "local CA" in out and "SHA-256" in out and "appliance-ca.crt" in out
    assert "BEGIN" not in out, "no key or certificate text in the log"
    # a second start changes nothing
    before = {p: p.read_bytes() for p in (state / "secrets").iterdir()}
    assert run_init(capsys)[0] == 0
    assert {p: p.read_bytes() for p in (state / "secrets").iterdir()} == before


@pytest.mark.parametrize("path, bad_mode", [
    ("secrets/cookie_secret", 0o644), ("secrets/proxy_token", 0o640), ("secrets", 0o755),
    ("tls/tls.key", 0o604), ("tls", 0o750), ("condor-tokens.d/hubsvc", 0o644),
    ("credbridge-tokens.d", 0o711), ("jupyterhub.sqlite", 0o666),
])
def test_refuses_to_start_on_a_loose_secret_and_says_which(state, capsys, path, bad_mode):
    assert run_init(capsys)[0] == 0
    for d in ("condor-tokens.d", "credbridge-tokens.d"):
        (state / d).mkdir(mode=0o700)
    (state / "condor-tokens.d" / "hubsvc").write_text("t")
    (state / "condor-tokens.d" / "hubsvc").chmod(0o600)
    (state / "jupyterhub.sqlite").write_text("")
    (state / "jupyterhub.sqlite").chmod(0o600)
    assert run_init(capsys)[0] == 0
    target = state / path
    os.chmod(target, bad_mode)
    before = mode(target)
    rc, out = run_init(capsys)
    assert rc == 2
    assert "refusing to start" in out
    assert f"{target} " in out and f"mode {bad_mode:04o}" in out and f"chmod " in out, out
    assert mode(target) == before, "a loose secret must not be changed silently"
    assert out.count("has mode") == 1, out


def test_refuses_a_mounted_key_others_can_read_but_never_touches_it(state, capsys, tmp_path):
    mounted = tmp_path / "mounted-tls"
    mounted.mkdir()
    (mounted / "tls.crt").write_text("site certificate")
    (mounted / "tls.key").write_text("site key")
    (mounted / "tls.key").chmod(0o644)
    rc, out = run_init(capsys)
    assert rc == 2 and f"{mounted / 'tls.key'} (mounted TLS private key) has mode 0644" in out
    assert (mounted / "tls.key").read_text() == "site key" and mode(mounted / "tls.key") == "0o644"
    (mounted / "tls.key").chmod(0o400)
    rc, out = run_init(capsys)
    assert rc == 0, out
    assert os.readlink(state / "tls" / "active") == str(mounted)
    assert not (state / "tls" / "tls.crt").exists(), "no demo pair when the site mounts its own"
    assert not (state / "public" / "appliance-ca.crt").exists()
    assert (mounted / "tls.crt").read_text() == "site certificate"


def test_symlinked_secret_and_foreign_owner_are_refused(tmp_path):
    st = tmp_path / "s"
    (st / "secrets").mkdir(parents=True, mode=0o700)
    os.symlink("/etc/hostname", st / "secrets" / "cookie_secret")
    (st / "secrets" / "proxy_token").write_text("x")
    os.chmod(st / "secrets" / "proxy_token", 0o600)
    rules = statecheck.rules(str(st), str(tmp_path / "none"))
    bad = statecheck.problems(rules, owner_uid=os.getuid())
    assert bad == [f"{st}/secrets/cookie_secret (hub secret) is a symlink: replace it with the "
                   f"real file"]
    other = statecheck.problems(rules, owner_uid=os.getuid() + 1)
    assert any("proxy_token (hub secret) is owned by uid" in m and "chown" in m for m in other)


def test_bad_public_host_is_refused_with_its_name(state, capsys, monkeypatch):
    monkeypatch.setenv("APPLIANCE_PUBLIC_HOST", "hub.example.org, not/a/host")
    rc, out = run_init(capsys)
    assert rc == 2 and "APPLIANCE_PUBLIC_HOST: 'not/a/host'" in out
    assert not (state / "tls" / "tls.crt").exists()


def test_earlier_image_state_is_upgraded_in_place(state, capsys):
    from tests.unit.test_tlsdemo import earlier_image_pair

    (state / "secrets").mkdir(parents=True, mode=0o700)
    (state / "tls").mkdir(mode=0o700)
    old = earlier_image_pair(state / "tls")
    os.chmod(state / "tls" / "tls.key", 0o600)
    rc, out = run_init(capsys)
    assert rc == 0, out
    assert "replaced the earlier image's self-signed CA-style certificate" in out
    leaf = tlsdemo.load_cert(str(state / "tls" / "tls.crt"))
    assert leaf != old and not tlsdemo.is_earlier_image_cert(leaf)
