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


# -- the helper's own checks (appliance/userside/siteconfig.py) --------------------------------

CONFIG = "/etc/appliance/submit-helper.json"


def helper_as(user: str, request: dict) -> dict:
    """Run the real helper through the hub's sudo rule as ``user``; its JSON answer."""
    import json

    r = site_exec("appliance", "sudo", "-n", "-u", user, HELPER, check=False,
                  input=json.dumps(request))
    assert r.stdout.strip(), (r.returncode, r.stderr)
    return json.loads(r.stdout)


@pytest.fixture
def helper_config(site):
    """Change the helper's config for one test (as root, as a site would), restored after."""
    site_exec("appliance", "cp", "-p", CONFIG, CONFIG + ".orig")

    def change(*shell: str):
        site_exec("appliance", "sh", "-c", " && ".join(shell))

    yield change
    site_exec("appliance", "mv", "-f", CONFIG + ".orig", CONFIG)
    st = site_exec("appliance", "stat", "-c", "%u %a", CONFIG).stdout.split()
    assert st == ["0", "644"], st


# A request for a backend that does not exist: what the helper answers once its checks pass.
PROBE_REQUEST = {"backend": "none", "submit": {}}


def test_the_image_config_is_root_0644_and_lets_users_through(site):
    assert site_exec("appliance", "stat", "-c", "%U %a", CONFIG).stdout.split() == ["root", "644"]
    assert "unknown backend" in helper_as("alice", PROBE_REQUEST)["error"]


@pytest.mark.parametrize("submit, key", [
    ({"backend": "slurm", "submit": {"sbatch": "/bin/sh", "argv": ["-c", "id > /tmp/pwned"]}},
     "sbatch"),
    ({"backend": "slurm", "submit": {"slurm_conf": "/tmp/evil.conf", "argv": ["--parsable"]}},
     "slurm_conf"),
    ({"backend": "htcondor", "submit": {"condor_config": "/tmp/evil", "description": {}}},
     "condor_config"),
])
def test_a_path_on_stdin_is_refused(site, submit, key):
    error = helper_as("alice", submit)["error"]
    assert f"the request names {key}" in error and CONFIG in error, error
    assert site_exec("appliance", "test", "-e", "/tmp/pwned", check=False).returncode != 0


def test_uids_below_the_sites_minimum_are_refused(helper_config):
    # Every hub user has a uid of 2001 or more: a site minimum of 2002 makes alice (2001) the
    # "system account" that a sudo slip would have let through.
    helper_config(f"""printf '{{"min_uid": 2002}}' > {CONFIG}""")
    error = helper_as("alice", PROBE_REQUEST)["error"]
    assert "does not run for uid 2001: below the site's minimum 2002" in error, error
    assert "unknown backend" in helper_as("bench18", PROBE_REQUEST)["error"]  # uid 2118


@pytest.mark.parametrize("loosen, expect", [
    ("chmod 0666 {c}", "has mode 0666; at most 0644"),
    ("chmod 0664 {c}", "has mode 0664; at most 0644"),
    ("chown alice {c}", "owned by uid 2001, not root"),
    ("mv {c} {c}.real && ln -s {c}.real {c}", "a symlink is refused"),
])
def test_a_loose_config_refuses_every_request(helper_config, loosen, expect):
    helper_config(loosen.format(c=CONFIG))
    try:
        error = helper_as("alice", PROBE_REQUEST)["error"]
        assert expect in error and CONFIG in error, error
    finally:
        site_exec("appliance", "sh", "-c", f"[ -L {CONFIG} ] && rm -f {CONFIG} {CONFIG}.real || true")
