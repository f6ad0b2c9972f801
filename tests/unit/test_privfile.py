"""appliance.privfile: safe reads (no symlink, one link, owner, mode, size), atomic writes and
exclusive creates of private files. Real files in a temp dir, real owners (tests run as root)."""

from __future__ import annotations

import os
import stat

import pytest

from appliance import ccache, privfile
from appliance.privfile import FileRefused, atomic_write

from .test_ccache import REALM, princ, synth, write_file

# ---------------------------------------------------------------------------
# safe reading (moved from test_ccache.py)


@pytest.fixture
def good_file(tmp_path):
    return write_file(tmp_path / "krb5cc_2001_x", synth(), uid=2001, gid=2001)


def test_read_private_file_ok(good_file):
    data, st = privfile.read_private(good_file, expected_uid=2001)
    assert ccache.parse(data).principal == princ(f"alice@{REALM}")
    assert st.st_uid == 2001


def test_read_refuses_symlink(tmp_path, good_file):
    link = tmp_path / "link"
    os.symlink(good_file, link)
    with pytest.raises(FileRefused) as e:
        privfile.read_private_file(str(link), expected_uid=2001)
    assert e.value.code == "symlink"


def test_read_refuses_hardlink(tmp_path, good_file):
    os.link(good_file, tmp_path / "second")
    with pytest.raises(FileRefused) as e:
        privfile.read_private_file(good_file, expected_uid=2001)
    assert e.value.code == "hardlink"


def test_read_refuses_other_owner(good_file):
    os.chown(good_file, 2002, 2002)
    with pytest.raises(FileRefused) as e:
        privfile.read_private_file(good_file, expected_uid=2001)
    assert e.value.code == "wrong_owner"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o700 | 0o010])
def test_read_refuses_group_or_other_bits(good_file, mode):
    os.chmod(good_file, mode)
    with pytest.raises(FileRefused) as e:
        privfile.read_private_file(good_file, expected_uid=2001)
    assert e.value.code == "bad_mode"


def test_read_refuses_size_type_and_missing(tmp_path):
    big = write_file(tmp_path / "big", b"\0" * 2048, uid=2001)
    with pytest.raises(FileRefused) as e:
        privfile.read_private_file(big, expected_uid=2001, max_size=1024)
    assert e.value.code == "too_large"
    empty = write_file(tmp_path / "empty", b"", uid=2001)
    with pytest.raises(FileRefused) as e:
        privfile.read_private_file(empty, expected_uid=2001)
    assert e.value.code == "empty"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    os.chown(fifo, 2001, 2001)
    with pytest.raises(FileRefused) as e:  # must not block on the FIFO either
        privfile.read_private_file(str(fifo), expected_uid=2001)
    assert e.value.code == "not_regular"
    with pytest.raises(FileRefused) as e:
        privfile.read_private_file(str(tmp_path / "nope"), expected_uid=2001)
    assert e.value.code == "not_found"


def test_read_uses_dir_fd(tmp_path, good_file):
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert privfile.read_private_file("krb5cc_2001_x", expected_uid=2001, dir_fd=dfd)
    finally:
        os.close(dfd)


# ---------------------------------------------------------------------------
# atomic writes (moved from test_credmon.py)


def test_atomic_write_replaces_symlink_not_target(tmp_path):
    target = tmp_path / "target"
    target.write_bytes(b"precious")
    link_dir = tmp_path / "d"
    link_dir.mkdir()
    os.symlink(target, link_dir / "alice.cc")
    dfd = os.open(link_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        atomic_write(dfd, "alice.cc", b"new")
    finally:
        os.close(dfd)
    assert target.read_bytes() == b"precious"
    assert not os.path.islink(link_dir / "alice.cc")
    assert (link_dir / "alice.cc").read_bytes() == b"new"


def test_atomic_write_failure_leaves_old_file_and_no_temp(tmp_path):
    (tmp_path / "alice.cc").write_bytes(b"old")
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(TypeError):
            atomic_write(dfd, "alice.cc", "not bytes")  # type: ignore[arg-type]
    finally:
        os.close(dfd)
    assert (tmp_path / "alice.cc").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice.cc"]


def test_atomic_write_sets_owner_and_mode(tmp_path):
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        atomic_write(dfd, "f", b"x", uid=2001, gid=2002, mode=0o640)
    finally:
        os.close(dfd)
    st = os.lstat(tmp_path / "f")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (2001, 2002, 0o640)


# ---------------------------------------------------------------------------
# exclusive creates (the bridge's submit ccaches, the submit helper's env file)


def test_create_private_refuses_existing_file_and_symlink(tmp_path):
    target = tmp_path / "victim"
    target.write_text("keep")
    os.symlink(target, tmp_path / "link")
    (tmp_path / "old").write_text("old")
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in ("link", "old"):
            with pytest.raises(FileExistsError):
                privfile.create_private(dfd, name, b"secret")
        privfile.create_private(dfd, "new", b"secret", uid=2001, gid=2002)
    finally:
        os.close(dfd)
    assert target.read_text() == "keep" and (tmp_path / "old").read_text() == "old"
    st = os.lstat(tmp_path / "new")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (2001, 2002, 0o600)
    assert (tmp_path / "new").read_bytes() == b"secret"


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_create_in_dir_makes_private_dir_and_file_whatever_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = privfile.create_in_dir(str(tmp_path / "a" / "jobs"), "env.json", b"{}")
    finally:
        os.umask(old)
    assert path == str(tmp_path / "a" / "jobs" / "env.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "jobs").st_mode) == 0o700


def test_create_in_dir_fixes_the_dir_mode_and_refuses_links(tmp_path):
    d = tmp_path / "jobs"
    d.mkdir(mode=0o777)
    os.chmod(d, 0o777)
    privfile.create_in_dir(str(d), "one", b"1")
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    # a symlinked directory is not followed
    other = tmp_path / "other"
    other.mkdir()
    os.symlink(other, tmp_path / "linked")
    with pytest.raises(OSError):
        privfile.create_in_dir(str(tmp_path / "linked"), "two", b"2")
    assert list(other.iterdir()) == []
    with pytest.raises(FileRefused) as e:
        privfile.create_in_dir(str(d), "../escape", b"3")
    assert e.value.code == "bad_name"


def test_create_in_dir_refuses_a_directory_of_another_owner(tmp_path):
    d = tmp_path / "theirs"
    d.mkdir()
    os.chown(d, 2001, 2001)
    with pytest.raises(FileRefused) as e:
        privfile.create_in_dir(str(d), "x", b"x")
    assert e.value.code == "wrong_owner"
    assert list(d.iterdir()) == []


def test_read_ccache_parses_or_refuses_malformed(tmp_path, good_file):
    data, cc, st = ccache.read_ccache(good_file, expected_uid=2001)
    assert cc.principal == princ(f"alice@{REALM}") and data == open(good_file, "rb").read()
    bad = write_file(tmp_path / "bad", b"\x05\x04garbage", uid=2001)
    with pytest.raises(ccache.CredentialRefused) as e:
        ccache.read_ccache(bad, expected_uid=2001)
    assert e.value.code == "malformed"
