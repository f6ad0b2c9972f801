"""Credentials end (issue 10): the bridge's ``end`` (forget, the credd's copy deleted, the
user's login caches removed) and the login cache sweep, on a fake credd and a temporary ccache
directory with the clock injected (fixtures of tests/unit/test_bridge.py)."""

from __future__ import annotations

import os

import pytest

from .test_bridge import T0, ccdir, env, put_cache  # noqa: F401 (fixtures)


def names(ccdir):
    return sorted(os.listdir(ccdir))


def age(ccdir, name, mtime):
    os.utime(os.path.join(ccdir, name), (mtime, mtime))


def test_end_forgets_deletes_the_credd_copy_and_removes_the_users_login_caches(env):
    b, store, clock, _, ccdir = env
    b.store("alice", put_cache(ccdir, "krb5cc_2001_new"))
    put_cache(ccdir, "krb5cc_2001_old")          # an earlier login of alice
    put_cache(ccdir, "krb5cc_2002_bob", uid=2002, principal="bob@BRIDGE.TEST")
    assert "alice" in store.creds
    out = b.end("alice")
    assert out == {"forgotten": True, "credd_deleted": True, "caches_removed": 2}
    assert b.state("alice") is None and "alice" not in store.creds
    assert names(ccdir) == ["krb5cc_2002_bob"]   # bob's login is not touched
    clock.t += 3600
    assert b.run_due() == []                      # nothing renewed for alice any more
    assert b.end("alice") == {"forgotten": False, "credd_deleted": True, "caches_removed": 0}


def test_end_with_the_credd_down_still_forgets_and_removes(env):
    b, store, _, _, ccdir = env
    b.store("alice", put_cache(ccdir))

    def down(user):
        raise ConnectionError("credd unreachable")

    store.delete = down
    assert b.end("alice") == {"forgotten": True, "credd_deleted": False, "caches_removed": 1}
    assert names(ccdir) == []


def test_end_refuses_a_bad_user_name(env):
    from appliance.privfile import Refusal
    b, *_ = env
    with pytest.raises(Refusal):
        b.end("../alice")


def test_the_sweep_removes_caches_no_login_needs_after_the_grace(env):
    b, store, clock, _, ccdir = env
    now = clock()
    b.store("alice", put_cache(ccdir, "krb5cc_2001_current"))
    put_cache(ccdir, "krb5cc_2001_earlier")
    put_cache(ccdir, "krb5cc_2002_untracked", uid=2002, principal="bob@BRIDGE.TEST")
    put_cache(ccdir, "krb5cc_2003_fresh", uid=2003)
    put_cache(ccdir, "unrelated_file")
    age(ccdir, "krb5cc_2001_current", now - 1000)
    age(ccdir, "krb5cc_2001_earlier", now - 2000)
    age(ccdir, "krb5cc_2002_untracked", now - 1000)
    age(ccdir, "krb5cc_2003_fresh", now - 10)   # a login in progress: inside the grace
    os.symlink("/etc/passwd", os.path.join(ccdir, "krb5cc_2004_link"))
    os.utime(os.path.join(ccdir, "krb5cc_2004_link"), (now - 1000, now - 1000),
             follow_symlinks=False)
    assert b.sweep_login_caches() == 3
    assert names(ccdir) == ["krb5cc_2001_current", "krb5cc_2003_fresh", "unrelated_file"]
    assert os.path.exists("/etc/passwd")


def test_the_sweep_runs_at_start_and_then_every_sweep_every_seconds(env):
    b, store, clock, _, ccdir = env
    b.sweep_every = 600
    put_cache(ccdir, "krb5cc_2002_left", uid=2002)  # left by an earlier run: nobody tracked
    age(ccdir, "krb5cc_2002_left", clock() - 1000)
    b.run_due()                                      # the first round: at start-up
    assert names(ccdir) == []
    put_cache(ccdir, "krb5cc_2002_again", uid=2002)
    age(ccdir, "krb5cc_2002_again", clock() - 1000)
    clock.t += 599
    b.run_due()
    assert names(ccdir) == ["krb5cc_2002_again"]     # not yet
    clock.t += 1
    b.run_due()
    assert names(ccdir) == []
