"""Issue 10, sudo: the hub (root) may run only the submit helper, only as members of
jupyterhub-users, and every use and refusal reaches syslog (image/sudoers).

`sudo -l -U root -u TARGET CMD` asks sudo's own policy whether the hub may run CMD as TARGET
(without running it); the refused cases are then also really attempted with `sudo -n`.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import ROOT, container, site_exec, wait_for

pytestmark = pytest.mark.minisite

HELPER = "/opt/jupyterhub/bin/appliance-submit"


def may_run(target: str, *cmd: str) -> bool:
    r = site_exec("appliance", "sudo", "-n", "-l", "-U", "root", "-u", target, *cmd, check=False)
    return r.returncode == 0


def test_the_hubs_only_sudo_rule_is_the_helper_as_a_hub_user(site):
    out = site_exec("appliance", "sudo", "-n", "-l", "-U", "root").stdout
    rules = [l.strip() for l in out.split("may run the following commands", 1)[1].splitlines()[1:]
             if l.strip()]
    assert rules == [f'(%jupyterhub-users, !root) NOPASSWD: {HELPER} ""'], out
    assert "!syslog" not in out
    members = site_exec("appliance", "getent", "group", "jupyterhub-users").stdout
    assert "alice" in members and "bench18" in members


@pytest.mark.parametrize("target, cmd, allowed", [
    ("alice", [HELPER], True),                           # the one thing the hub needs
    ("bench18", [HELPER], True),
    ("alice", ["/bin/sh"], False),                       # another command
    ("alice", ["/usr/bin/env", HELPER], False),
    ("alice", [HELPER, "--config", "/tmp/evil.json"], False),  # the helper with arguments
    ("daemon", [HELPER], False),                         # system accounts
    ("nobody", [HELPER], False),
    ("munge", [HELPER], False),
    ("www-data", [HELPER], False),
    ("root", [HELPER], False),                           # root
    ("#0", [HELPER], False),
])
def test_sudo_policy(site, target, cmd, allowed):
    assert may_run(target, *cmd) is allowed, (target, cmd)


LISTENER = r"""
import socket, sys, time, os
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/dev/log")
s.settimeout(0.5)
end = time.monotonic() + float(sys.argv[1])
with open("/tmp/jba-syslog.txt", "wb", buffering=0) as f:
    while time.monotonic() < end:
        try:
            f.write(s.recv(8192) + b"\n")
        except socket.timeout:
            pass
os.unlink("/dev/log")
"""


@pytest.fixture
def syslog(site):
    """A /dev/log listener in the appliance for the test's duration (the container has no syslog
    daemon; a site mounts the host's /dev/log)."""
    site_exec("appliance", "rm", "-f", "/tmp/jba-syslog.txt")
    assert site_exec("appliance", "test", "-e", "/dev/log", check=False).returncode != 0, \
        "the appliance already has a /dev/log"
    env = {"CONTAINERS_CONF": str(ROOT / "containers.conf"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(["podman", "exec", container("appliance"), "/opt/jupyterhub/bin/python",
                             "-c", LISTENER, "30"], env=env)
    wait_for("the /dev/log listener", lambda: site_exec(
        "appliance", "test", "-S", "/dev/log", check=False).returncode == 0, timeout=20)

    def read(expect: str) -> str:
        def text():
            t = site_exec("appliance", "cat", "/tmp/jba-syslog.txt", check=False).stdout
            return t if expect in t else ""
        return wait_for(f"{expect!r} in syslog", text, timeout=10)

    yield read
    proc.terminate()
    proc.wait(10)
    site_exec("appliance", "rm", "-f", "/dev/log", "/tmp/jba-syslog.txt", check=False)


def test_refused_for_real_and_logged(syslog):
    attempts = [
        (["-u", "daemon", HELPER], "daemon"),
        (["-u", "root", HELPER], "root"),
        (["-u", "alice", "/bin/sh", "-c", "id"], "alice"),
        (["-E", "-u", "alice", HELPER], "alice"),          # keeping the hub's environment
    ]
    for args, target in attempts:
        r = site_exec("appliance", "sudo", "-n", *args, check=False, input="")
        assert r.returncode != 0, f"sudo {args} ran: {r.stdout}"
        assert "not allowed" in r.stderr or "sorry" in r.stderr.lower(), r.stderr
    text = syslog("COMMAND=/bin/sh -c id")
    assert "command not allowed" in text and "USER=daemon" in text and "USER=root" in text
    # An allowed use is logged as well (the helper refuses the empty request; that is fine).
    site_exec("appliance", "sudo", "-n", "-u", "alice", HELPER, check=False, input="")
    assert "USER=alice ; COMMAND=" + HELPER in syslog("USER=alice ; COMMAND=" + HELPER)
