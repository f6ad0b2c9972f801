"""appliance.credmon: the Kerberos credmon's files, renewal and signal handling."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from appliance import ccache
from appliance.credmon import COMPLETE, KerberosCredmon
from appliance.renewal import RenewalPolicy

from .test_bridge import T0, Clock, FakeRenewer
from .test_ccache import REALM, kdc, pykrb5, synth, write_file  # noqa: F401 (fixtures)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def cdir(tmp_path):
    d = tmp_path / "krb_credentials"
    d.mkdir(mode=0o700)
    return d


@pytest.fixture
def mon(cdir):
    clock = Clock(T0 + 1)
    renewer = FakeRenewer(clock)
    m = KerberosCredmon(str(cdir), realm=REALM, clock=clock, renewer=renewer)
    m.clock_, m.renewer_ = clock, renewer
    return m


def cred(cdir, user="alice", **kw):
    kw.setdefault("now", T0)
    kw.setdefault("principal", f"{user}@{REALM}")
    return write_file(cdir / f"{user}.cred", synth(**kw))


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_writes_cc_root_0600_with_cred_content_and_touches_complete(mon, cdir):
    cred(cdir)
    result = mon.scan()
    cc = cdir / "alice.cc"
    st = os.lstat(cc)
    assert stat.S_ISREG(st.st_mode)
    assert (st.st_uid, st.st_gid) == (0, 0)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert read(cc) == read(cdir / "alice.cred")
    assert result["alice"].wrote_cc and not result["alice"].renewed
    assert result["alice"].next_action == T0 + 300
    assert (cdir / COMPLETE).exists()
    assert [p.name for p in cdir.iterdir() if p.name.startswith(".")] == []  # no temp files


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_modes_do_not_depend_on_umask(mon, cdir, umask):
    cred(cdir)
    old = os.umask(umask)
    try:
        mon.scan()
        mon.write_pid(1)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.lstat(cdir / "alice.cc").st_mode) == 0o600
    assert stat.S_IMODE(os.lstat(cdir / "pid").st_mode) == 0o644


def test_complete_is_touched_on_every_pass(mon, cdir):
    mon.scan()  # no users yet: still complete
    first = os.stat(cdir / COMPLETE).st_mtime_ns
    os.utime(cdir / COMPLETE, ns=(first - 10**9, first - 10**9))
    mon.scan()
    assert os.stat(cdir / COMPLETE).st_mtime_ns > first - 10**9
    mon.clear_complete()
    assert not (cdir / COMPLETE).exists()


def test_pid_file_world_readable(mon, cdir):
    mon.write_pid(4242)
    st = os.stat(cdir / "pid")
    assert stat.S_IMODE(st.st_mode) == 0o644
    assert read(cdir / "pid") == b"4242\n"


def test_unchanged_cc_is_not_rewritten(mon, cdir):
    cred(cdir)
    mon.scan()
    ino = os.stat(cdir / "alice.cc").st_ino
    result = mon.scan()
    assert not result["alice"].wrote_cc
    assert os.stat(cdir / "alice.cc").st_ino == ino


def test_restore_of_same_ticket_touches_cc(mon, cdir):
    """The credd re-stores the same ticket (the bridge does at every spawn): .cc keeps its content
    but becomes at least as new as .cred, the sign the bridge waits for."""
    data = read(cred(cdir))
    mon.scan()
    past = time.time() - 100
    os.utime(cdir / "alice.cc", (past, past))
    write_file(cdir / "alice.cred", data)  # same bytes, new mtime
    ino = os.stat(cdir / "alice.cc").st_ino
    result = mon.scan()["alice"]
    assert not result.wrote_cc
    st = os.stat(cdir / "alice.cc")
    assert st.st_ino == ino and read(cdir / "alice.cc") == data
    assert st.st_mtime_ns >= os.stat(cdir / "alice.cred").st_mtime_ns


def test_restore_of_same_ticket_moves_cc_into_a_later_whole_second(mon, cdir):
    """The bridge confirms a store by the .cc mtime (whole seconds) moving past the one it read
    before the store: a touch within the same second as the previous change must still move."""
    data = read(cred(cdir))
    mon.scan()
    late = int((int(time.time()) + 0.9) * 1e9)  # the previous change, late in this second
    os.utime(cdir / "alice.cc", ns=(late, late))
    write_file(cdir / "alice.cred", data)
    os.utime(cdir / "alice.cred", ns=(late + 1000, late + 1000))  # the credd's re-store
    mon.scan()
    after = os.stat(cdir / "alice.cc").st_mtime_ns
    assert after // 10**9 == late // 10**9 + 1, (late, after)


def test_cc_is_never_older_than_cred_after_renewal(mon, cdir):
    cred(cdir)
    mon.scan()
    mon.clock_.t = T0 + 300
    result = mon.scan()["alice"]
    assert result.wrote_cred and result.wrote_cc
    assert os.stat(cdir / "alice.cc").st_mtime_ns >= os.stat(cdir / "alice.cred").st_mtime_ns


def test_renewal_updates_cc_and_cred_atomically(mon, cdir):
    cred(cdir)
    mon.scan()
    cc_ino = os.stat(cdir / "alice.cc").st_ino
    cred_st = os.stat(cdir / "alice.cred")
    mon.clock_.t = T0 + 300
    result = mon.scan()["alice"]
    assert result.renewed and result.wrote_cc and result.wrote_cred
    assert mon.renewer_.calls == 1
    new_cc = ccache.parse(read(cdir / "alice.cc"))
    assert new_cc.tgt.endtime == T0 + 900
    assert read(cdir / "alice.cred") == read(cdir / "alice.cc")
    # replaced by rename (new inode), not rewritten in place; .cred keeps owner and mode
    assert os.stat(cdir / "alice.cc").st_ino != cc_ino
    st = os.stat(cdir / "alice.cred")
    assert st.st_ino != cred_st.st_ino
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)
    assert result.next_action == T0 + 600


def test_cred_replaced_meanwhile_is_not_overwritten(mon, cdir):
    cred(cdir)
    mon.scan()
    newer = synth(now=T0 + 299, life=3600, renew=86400)
    real = mon.renewer

    def renew_while_credd_writes(data):
        write_file(cdir / "alice.cred", newer)  # the credd stores a new login meanwhile
        return real(data)

    mon.renewer = renew_while_credd_writes
    mon.clock_.t = T0 + 300
    result = mon.scan()["alice"]
    assert result.renewed and not result.wrote_cred
    assert read(cdir / "alice.cred") == newer
    mon.renewer = real
    mon.clock_.t = T0 + 301
    mon.scan()
    assert read(cdir / "alice.cc") == newer  # next pass picks the new login


def test_newer_login_in_cred_replaces_renewed_cc(mon, cdir):
    cred(cdir)
    mon.clock_.t = T0 + 300
    mon.scan()  # renewed: .cc has a later endtime than the original login
    newer = synth(now=T0 + 310, life=600, renew=3600)  # new login: later authtime
    write_file(cdir / "alice.cred", newer)
    mon.clock_.t = T0 + 311
    mon.scan()
    assert read(cdir / "alice.cc") == newer


def test_new_cc_content_always_gets_a_later_whole_second(mon, cdir):
    """Starters copy .cc into their jobs only when its mtime in whole seconds changes: a new
    ticket written within the second of the previous .cc change would never reach a job whose
    starter looked in between (issue 15, seen under re-logins while jobs start)."""
    cred(cdir)
    mon.scan()
    now = time.time()
    # the previous .cc change happened late in the current second (e.g. a touch just now)
    late = (int(now) + 0.9) * 1e9
    os.utime(cdir / "alice.cc", ns=(int(late), int(late)))
    before = os.stat(cdir / "alice.cc").st_mtime_ns
    write_file(cdir / "alice.cred", synth(now=T0 + 10, life=600, renew=3600))  # a newer login
    mon.clock_.t = T0 + 11
    assert mon.scan()["alice"].wrote_cc
    after = os.stat(cdir / "alice.cc").st_mtime_ns
    assert after // 10**9 > before // 10**9, (before, after)
    assert after // 10**9 <= int(time.time()) + 1  # at most a second ahead of the clock
    # ... and a write in a later second keeps the real time
    os.utime(cdir / "alice.cc", ns=(10**9, 10**9))
    write_file(cdir / "alice.cred", synth(now=T0 + 20, life=600, renew=3600))
    t = time.time_ns()
    mon.scan()
    assert os.stat(cdir / "alice.cc").st_mtime_ns >= t - 10**7


def test_renewed_cc_wins_over_older_cred(mon, cdir):
    cred(cdir)
    mon.clock_.t = T0 + 300
    mon.scan()
    renewed = read(cdir / "alice.cc")
    write_file(cdir / "alice.cred", synth(now=T0))  # an older copy comes back
    mon.clock_.t = T0 + 301
    result = mon.scan()["alice"]
    assert not result.wrote_cc
    assert read(cdir / "alice.cc") == renewed
    assert result.wrote_cred  # and .cred gets the renewed one again


def test_kdc_down_keeps_cc_and_backs_off(mon, cdir):
    cred(cdir, life=3600, renew=86400)
    mon.renewer_.fail = ccache.RenewError("Cannot contact any KDC")
    mon.clock_.t = T0 + 1800
    r = mon.scan()["alice"]
    assert "Cannot contact any KDC" in r.error
    assert r.wrote_cc and not r.renewed  # HTCondor still gets the valid ticket
    assert r.next_action == T0 + 1830
    mon.clock_.t = T0 + 1829
    mon.scan()
    assert mon.renewer_.calls == 1  # no retry before the backoff
    mon.clock_.t = T0 + 1830
    r = mon.scan()["alice"]
    assert mon.renewer_.calls == 2 and r.next_action == T0 + 1890
    mon.renewer_.fail = None
    mon.clock_.t = T0 + 1890
    r = mon.scan()["alice"]
    assert r.renewed and r.error is None
    assert ccache.parse(read(cdir / "alice.cc")).tgt.endtime == T0 + 1890 + 600


@pytest.mark.parametrize("problem", ["symlink", "group_readable", "user_owned", "hardlink",
                                     "principal", "expired", "no_tgt", "garbage"])
def test_bad_cred_gives_no_cc(mon, cdir, tmp_path, problem):
    if problem == "symlink":
        target = write_file(tmp_path / "elsewhere", synth(now=T0))
        os.symlink(target, cdir / "alice.cred")
    elif problem == "group_readable":
        cred(cdir)
        os.chmod(cdir / "alice.cred", 0o640)
    elif problem == "user_owned":
        cred(cdir)
        os.chown(cdir / "alice.cred", 2001, 2001)
    elif problem == "hardlink":
        cred(cdir)
        os.link(cdir / "alice.cred", tmp_path / "second")
    elif problem == "principal":
        cred(cdir, principal=f"bob@{REALM}")
    elif problem == "expired":
        cred(cdir)
        mon.clock_.t = T0 + 600
    elif problem == "no_tgt":
        cred(cdir, with_tgt=False)
    elif problem == "garbage":
        write_file(cdir / "alice.cred", b"not a ccache at all")
    result = mon.scan()
    assert result["alice"].error
    assert not (cdir / "alice.cc").exists()
    assert (cdir / COMPLETE).exists()  # the pass still completes
    if problem == "principal":  # another user's ticket: the shadow must not send it either
        assert not (cdir / "alice.cred").exists()


def test_one_bad_user_does_not_block_others(mon, cdir):
    write_file(cdir / "bob.cred", b"junk")
    cred(cdir)
    result = mon.scan()
    assert result["alice"].wrote_cc and result["bob"].error
    assert (cdir / "alice.cc").exists() and not (cdir / "bob.cc").exists()


def test_ignores_other_files(mon, cdir):
    cred(cdir)
    write_file(cdir / ".hidden.cred", synth(now=T0))
    write_file(cdir / "alice.mark", b"")
    (cdir / "sub.cred").mkdir()
    result = mon.scan()
    assert set(result) == {"alice", "sub"}  # ".hidden" is no user name
    assert "not_regular" in result["sub"].error
    assert not (cdir / ".hidden.cc").exists()
    assert not (cdir / "sub.cc").exists()


def test_without_realm_any_principal_is_accepted(cdir):
    m = KerberosCredmon(str(cdir), clock=Clock(T0 + 1), renewer=FakeRenewer(Clock()))
    write_file(cdir / "alice.cred", synth(now=T0, principal="alice@ELSEWHERE.ORG"))
    assert m.scan()["alice"].wrote_cc


def test_nothing_secret_in_logs(mon, cdir, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    cred(cdir)
    mon.clock_.t = T0 + 300
    mon.scan()
    mon.renewer_.fail = RuntimeError("KDC down")
    mon.clock_.t = T0 + 600
    mon.scan()
    assert "alice" in caplog.text
    assert "SECRET" not in caplog.text


def test_once_command_line(cdir):
    cred(cdir, now=int(time.time()))
    out = subprocess.run([sys.executable, "-m", "appliance.credmon", "--once", "--cred-dir",
                          str(cdir), "--realm", REALM, "-f"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert (cdir / "alice.cc").exists() and (cdir / COMPLETE).exists()
    assert read(cdir / "pid").strip().isdigit()
    assert "ignoring arguments: -f" in out.stderr


def test_log_file_option(cdir, tmp_path):
    cred(cdir, now=int(time.time()))
    log = tmp_path / "CredMonKrbLog"
    out = subprocess.run([sys.executable, "-m", "appliance.credmon", "--once", "--cred-dir",
                          str(cdir), "--realm", REALM, "--log-file", str(log)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "alice: wrote alice.cc" in log.read_text()
    assert "wrote alice.cc" not in out.stderr


def test_daemon_sighup_rescans_and_sigterm_exits(cdir):
    proc = subprocess.Popen([sys.executable, "-m", "appliance.credmon", "--cred-dir", str(cdir),
                             "--max-sleep", "30"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 20
        while time.time() < deadline and not (cdir / COMPLETE).exists():
            time.sleep(0.05)
        assert (cdir / COMPLETE).exists()
        assert int(read(cdir / "pid")) == proc.pid
        cred(cdir, now=int(time.time()))
        time.sleep(0.2)
        assert not (cdir / "alice.cc").exists()  # sleeping up to 30 s ...
        os.kill(int(read(cdir / "pid")), signal.SIGHUP)  # ... as HTCondor wakes it
        deadline = time.time() + 10
        while time.time() < deadline and not (cdir / "alice.cc").exists():
            time.sleep(0.05)
        assert (cdir / "alice.cc").exists()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.kdc
def test_real_kdc_renewal_of_cc_and_cred(kdc, pykrb5, cdir):
    path = kdc.kinit("alice", cdir / "alice.cred", lifetime="10m", renew="1h")
    os.chmod(path, 0o600)
    m = KerberosCredmon(str(cdir), realm=REALM, policy=RenewalPolicy(fraction=0.0))  # due at once
    before = ccache.parse(read(path)).tgt
    time.sleep(1.1)
    r = m.scan()["alice"]
    assert r.renewed and r.error is None, r
    cc = ccache.parse(read(cdir / "alice.cc"))
    assert cc.tgt.endtime > before.endtime
    assert read(cdir / "alice.cred") == read(cdir / "alice.cc")
    assert f"alice@{REALM}" in kdc.klist(cdir / "alice.cc")
