"""appliance.ccache: parsing, safe reading, policy checks, renewal.

Also home of the helpers the bridge and credmon tests import:

* ``synth(...)`` - a synthetic FILE ccache (real format, fake ticket/key bytes) with
  chosen principal, times and flags; ``klist`` reads it (tested below).
* ``kdc`` fixture - a throwaway MIT KDC on 127.0.0.1 (k5test), realm BRIDGE.TEST, with
  principals alice and bob; ``kdc.kinit(principal, path, lifetime, renew)`` makes a
  real ccache file.  Tests using it are marked ``kdc`` and skip cleanly if
  krb5kdc/kdb5_util/k5test are missing (Debian: krb5-kdc, krb5-admin-server).
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import socket
import subprocess
import time

import pytest

from appliance import ccache
from appliance.ccache import (
    CCacheError,
    CredentialRefused,
    Principal,
    TicketFlags,
)

REALM = "BRIDGE.TEST"
#: A marker inside every synthetic session key and ticket: it must never show up
#: in a log line, a state dict or an error message.
SECRET = b"SECRET-TICKET-BYTES"

F = TicketFlags


def princ(text: str) -> Principal:
    name, _, realm = text.rpartition("@")
    return Principal(realm=realm, components=tuple(name.split("/")))


def synth(
    principal: str = f"alice@{REALM}",
    *,
    now: int | None = None,
    life: int = 600,
    renew: int | None = 3600,
    flags: int = F.INITIAL | F.PRE_AUTH,
    authtime: int | None = None,
    with_service: bool = True,
    with_config: bool = True,
    with_tgt: bool = True,
    server_realm: str | None = None,
) -> bytes:
    """A FILE ccache: [config entry], TGT for principal, [a service ticket]."""
    now = int(time.time()) if now is None else now
    client = princ(principal)
    realm = server_realm or client.realm
    start = now if authtime is None else authtime
    tflags = int(flags) | (int(F.RENEWABLE) if renew is not None else 0)
    entries = []
    if with_config:
        entries.append(ccache._pack_entry(
            client, Principal("X-CACHECONF:", ("krb5_ccache_conf_data", "pa_type",
                                               f"krbtgt/{realm}@{realm}")),
            authtime=0, starttime=0, endtime=0, renew_till=0, flags=0, key=b"", ticket=b"2"))
    if with_tgt:
        entries.append(ccache._pack_entry(
            client, Principal(realm, ("krbtgt", realm), name_type=2),
            authtime=start, starttime=start, endtime=start + life,
            renew_till=(start + renew) if renew is not None else 0, flags=tflags,
            key=SECRET + b"-key-" + os.urandom(8), ticket=SECRET + b"-tgt"))
    if with_service:
        entries.append(ccache._pack_entry(
            client, Principal(realm, ("host", "schedd.example"), name_type=3),
            authtime=start, starttime=start, endtime=start + life, renew_till=0,
            flags=int(F.PRE_AUTH), key=SECRET + b"-svc-key", ticket=SECRET + b"-svc"))
    return ccache.serialize(client, entries)


def write_file(path, data: bytes, *, uid: int = 0, gid: int = 0, mode: int = 0o600):
    with open(path, "wb") as f:
        f.write(data)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    return str(path)


# ---------------------------------------------------------------------------
# test KDC


class KDCHelper:
    def __init__(self, realm):
        self.realm = realm
        self.env = dict(realm.env)
        self.env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
        self.krb5_config = realm.env["KRB5_CONFIG"]
        self.keytabs = {}

    def add(self, name: str) -> None:
        p = f"{name}@{REALM}"
        self.realm.run_kadminl(f"addprinc -randkey -maxrenewlife 7d {p}")
        kt = os.path.join(self.realm.tmpdir, f"{name}.keytab")
        self.realm.extract_keytab(p, kt)
        self.keytabs[name] = kt

    def kinit(self, name: str, path, *, lifetime: str = "10m", renew: str | None = "1h") -> str:
        args = [self.realm._kinit, "-k", "-t", self.keytabs[name], "-l", lifetime]
        if renew:
            args += ["-r", renew]
        args += ["-c", f"FILE:{path}", f"{name}@{REALM}"]
        subprocess.run(args, env=self.env, check=True, capture_output=True)
        return str(path)

    def klist(self, path) -> str:
        return subprocess.run([self.realm._klist, "-f", "-c", f"FILE:{path}"], env=self.env,
                              check=True, capture_output=True, text=True).stdout


_KDC: list = []


def _free_port() -> int:
    for _ in range(50):
        port = random.randint(20000, 60000)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t, \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                t.bind(("127.0.0.1", port))
                u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


def _start_kdc():
    if _KDC:
        return _KDC[0]
    missing = [b for b in ("krb5kdc", "kdb5_util", "kadmin.local", "kinit")
               if not (shutil.which(b) or os.path.exists(f"/usr/sbin/{b}"))]
    if missing:
        _KDC.append(f"missing {', '.join(missing)} (apt-get install krb5-kdc krb5-admin-server krb5-user)")
        return _KDC[0]
    try:
        from k5test import K5Realm
    except ImportError:
        _KDC.append("the k5test package is not installed")
        return _KDC[0]
    realm = K5Realm(
        realm=REALM,
        portbase=_free_port(),
        create_user=False,
        create_host=False,
        get_creds=False,
        krb5_conf={
            "libdefaults": {"dns_lookup_realm": "false", "rdns": "false",
                            "dns_canonicalize_hostname": "false"},
            "realms": {"$realm": {"kdc": "127.0.0.1:$port0", "admin_server": None,
                                  "kpasswd_server": None}},
        },
        kdc_conf={"realms": {"$realm": {
            "kdc_ports": None, "kdc_tcp_ports": None,
            "kdc_listen": "127.0.0.1:$port0", "kdc_tcp_listen": "127.0.0.1:$port0",
        }}},
    )
    atexit.register(realm.stop)
    kdc = KDCHelper(realm)
    realm.run_kadminl(f"modprinc -maxrenewlife 7d krbtgt/{REALM}@{REALM}")
    kdc.add("alice")
    kdc.add("bob")
    _KDC.append(kdc)
    return kdc


@pytest.fixture
def kdc(monkeypatch):
    """A running test KDC; KRB5_CONFIG points at it for this test (for pykrb5)."""
    started = _start_kdc()
    if isinstance(started, str):
        pytest.skip(f"no test KDC: {started}")
    monkeypatch.setenv("KRB5_CONFIG", started.krb5_config)
    return started


@pytest.fixture
def pykrb5():
    """Renewal needs the PyPI krb5 package (pykrb5)."""
    return pytest.importorskip("krb5")


# ---------------------------------------------------------------------------
# parsing


def test_synthetic_cache_roundtrip_and_fields():
    now = 1_800_000_000
    data = synth(now=now, life=600, renew=3600)
    cc = ccache.parse(data)
    assert str(cc.principal) == f"alice@{REALM}"
    assert cc.config_entries == 1
    assert len(cc.credentials) == 2  # TGT + service ticket, config entry skipped
    tgt = cc.tgt
    assert str(tgt.server) == f"krbtgt/{REALM}@{REALM}"
    assert (tgt.start, tgt.endtime, tgt.renew_till) == (now, now + 600, now + 3600)
    assert tgt.renewable and tgt.can_extend()
    assert tgt.flags.letters() == "RIA"


def test_klist_reads_synthetic_cache(tmp_path):
    """The writer produces the real format: MIT klist agrees on principal, times, flags."""
    klist = shutil.which("klist")
    if not klist:
        pytest.skip("klist missing (krb5-user)")
    now = int(time.time())
    path = write_file(tmp_path / "cc", synth(now=now, with_config=False))
    out = subprocess.run([klist, "-f", "-c", f"FILE:{path}"], capture_output=True, text=True,
                         check=True, env={**os.environ, "TZ": "UTC"}).stdout
    assert f"Default principal: alice@{REALM}" in out
    assert f"krbtgt/{REALM}@{REALM}" in out
    assert "renew until" in out
    assert "Flags: RIA" in out
    assert time.strftime("%m/%d/%y %H:%M:%S", time.gmtime(now + 600)) in out


def test_minimal_keeps_only_principal_and_tgt():
    data = synth()
    cc = ccache.parse(data)
    small = ccache.parse(cc.minimal())
    assert small.principal == cc.principal
    assert [str(c.server) for c in small.credentials] == [f"krbtgt/{REALM}@{REALM}"]
    assert small.config_entries == 0
    assert small.tgt.raw == cc.tgt.raw


def test_minimal_without_tgt_raises():
    cc = ccache.parse(synth(with_tgt=False))
    assert cc.tgt is None
    with pytest.raises(CCacheError):
        cc.minimal()


def test_tgt_must_be_for_clients_realm():
    cc = ccache.parse(synth(server_realm="OTHER.REALM", with_service=False))
    assert cc.credentials and cc.tgt is None  # cross-realm TGT is not "the" TGT


def test_principal_escaping_distinguishes_components():
    assert str(Principal("R", ("a", "b"))) == "a/b@R"
    assert str(Principal("R", ("a/b",))) == "a\\/b@R"
    assert str(Principal("R", ("a@b",))) == "a\\@b@R"


def test_rejects_other_versions_and_garbage():
    data = synth()
    with pytest.raises(CCacheError, match="version"):
        ccache.parse(b"\x05\x03" + data[2:])
    with pytest.raises(CCacheError):
        ccache.parse(b"")
    with pytest.raises(CCacheError):
        ccache.parse(b"\x05\x04\x00\x00" + b"\xff" * 12)
    with pytest.raises(CCacheError, match="too large"):
        ccache.parse(b"\x05\x04" + b"\0" * ccache.MAX_CCACHE_SIZE)


def test_truncation_and_bitflips_only_raise_ccacheerror():
    data = synth()
    for i in range(len(data)):
        try:
            ccache.parse(data[:i])
        except CCacheError:
            pass
    rnd = random.Random(1)
    for _ in range(2000):
        buf = bytearray(data)
        for _ in range(rnd.randint(1, 4)):
            buf[rnd.randrange(len(buf))] = rnd.randrange(256)
        try:
            ccache.parse(bytes(buf))
        except CCacheError:
            pass


def test_repr_and_summary_never_show_ticket_bytes():
    cc = ccache.parse(synth())
    text = repr(cc) + repr(cc.tgt) + str(cc.tgt.summary())
    assert "SECRET" not in text


# ---------------------------------------------------------------------------
# policy


def test_check_tgt_accepts_good_cache():
    now = 1_800_000_000
    tgt = ccache.check_tgt(ccache.parse(synth(now=now)), f"alice@{REALM}", now + 1)
    assert tgt.endtime == now + 600


@pytest.mark.parametrize(
    "kwargs, expected, at, code",
    [
        ({}, f"bob@{REALM}", 1, "wrong_principal"),
        ({"principal": f"alice@OTHER.REALM"}, f"alice@{REALM}", 1, "wrong_principal"),
        ({"with_tgt": False}, f"alice@{REALM}", 1, "no_tgt"),
        ({"renew": None}, f"alice@{REALM}", 1, "not_renewable"),
        ({}, f"alice@{REALM}", 600, "expired"),
        ({}, f"alice@{REALM}", 10_000, "expired"),
        ({"flags": F.INITIAL | F.INVALID | F.POSTDATED}, f"alice@{REALM}", 1, "invalid"),
    ],
)
def test_check_tgt_refusals(kwargs, expected, at, code):
    now = 1_800_000_000
    cc = ccache.parse(synth(now=now, **kwargs))
    with pytest.raises(CredentialRefused) as e:
        ccache.check_tgt(cc, expected, now + at)
    assert e.value.code == code


# ---------------------------------------------------------------------------
# real ccaches from a real KDC


@pytest.mark.kdc
def test_parse_real_kinit_cache_matches_libkrb5(kdc, tmp_path):
    path = kdc.kinit("alice", tmp_path / "cc", lifetime="10m", renew="1h")
    cc = ccache.parse(open(path, "rb").read())
    assert str(cc.principal) == f"alice@{REALM}"
    tgt = cc.tgt
    assert tgt is not None and tgt.renewable and tgt.flags & F.INITIAL
    assert tgt.endtime - tgt.start == 600
    assert tgt.renew_till - tgt.start == 3600
    # independent reader: libkrb5 via pykrb5
    krb5 = pytest.importorskip("krb5")
    ctx = krb5.init_context()
    lib = [c for c in krb5.cc_resolve(ctx, f"FILE:{path}".encode())
           if c.server.name.startswith(b"krbtgt/")]
    assert len(lib) == 1
    assert lib[0].times.endtime == tgt.endtime
    assert lib[0].times.renew_till == tgt.renew_till
    assert lib[0].ticket_flags_raw == int(tgt.flags)
    # minimal() output is a cache libkrb5 reads back
    out = tmp_path / "min"
    write_file(out, cc.minimal())
    assert f"Default principal: alice@{REALM}" in kdc.klist(out)


@pytest.mark.kdc
def test_real_non_renewable_cache_is_refused(kdc, tmp_path):
    path = kdc.kinit("alice", tmp_path / "cc", lifetime="10m", renew=None)
    cc = ccache.parse(open(path, "rb").read())
    assert not cc.tgt.renewable
    with pytest.raises(CredentialRefused) as e:
        ccache.check_tgt(cc, f"alice@{REALM}", time.time())
    assert e.value.code == "not_renewable"


@pytest.mark.kdc
def test_renew_at_real_kdc(kdc, pykrb5, tmp_path):
    path = kdc.kinit("alice", tmp_path / "cc", lifetime="10m", renew="1h")
    before = ccache.parse(open(path, "rb").read()).tgt
    time.sleep(1.1)
    renewed = ccache.renew(open(path, "rb").read())
    after = ccache.parse(renewed)
    assert str(after.principal) == f"alice@{REALM}"
    assert after.tgt.endtime > before.endtime
    assert after.tgt.renew_till == before.renew_till
    assert after.tgt.authtime == before.authtime
    assert [str(c.server) for c in after.credentials] == [f"krbtgt/{REALM}@{REALM}"]
    out = tmp_path / "renewed"
    write_file(out, renewed)
    assert "renew until" in kdc.klist(out)


@pytest.mark.kdc
def test_renew_with_kdc_unreachable_raises_renewerror(kdc, pykrb5, tmp_path, monkeypatch):
    path = kdc.kinit("alice", tmp_path / "cc")
    conf = tmp_path / "krb5.conf"
    conf.write_text(
        f"[libdefaults]\n default_realm = {REALM}\n dns_lookup_kdc = false\n"
        f"[realms]\n {REALM} = {{\n  kdc = 127.0.0.1:{_free_port()}\n }}\n"
    )
    monkeypatch.setenv("KRB5_CONFIG", str(conf))
    with pytest.raises(ccache.RenewError) as e:
        ccache.renew(open(path, "rb").read())
    assert "SECRET" not in str(e.value)


@pytest.mark.kdc
def test_renew_refused_for_non_renewable(kdc, pykrb5, tmp_path):
    path = kdc.kinit("alice", tmp_path / "cc", renew=None)
    with pytest.raises(ccache.RenewError):
        ccache.renew(open(path, "rb").read())
