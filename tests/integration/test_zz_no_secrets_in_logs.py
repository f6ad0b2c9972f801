"""Issue 10, secrets and logs: after the whole run, no secret it used is in any log or in the hub's
database in clear. Runs LAST in the session (marker `last`, tests/conftest.py), so it sees what
every other test left behind.

Secrets looked for:
* the hub's cookie secret, proxy token and crypt key (the state volume's secrets/);
* every API token the tests created (recorded by tests.conftest.HubClient.make_token), and, from a
  spawn of its own, a notebook server's API token and the browser session's cookies;
* the HTCondor IDTOKENs' signatures (hub and credential bridge);
* ticket bytes: the session key and the ticket of every credential in the appliance's login and
  submit ticket caches and in the HTCondor credds' stores (what the run's logins, spawns and
  renewals made), as hex and base64 at every alignment.
Where: every container's output (`podman logs`), every file under /var/log in every container,
the notebook servers' own logs (~/.jupyterhub-batch/*.out, *.err), and the hub's database (PostgreSQL dump and table files, or the SQLite file)
(raw bytes too). A failure names the secret and the place, never the secret itself.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets as pysecrets
import struct

import pytest

from appliance import ccache
from tests.conftest import (LOGIN_CACHES_SEEN, PROJECT, SECRETS_SEEN, container, podman,
                            record_secret, site_exec)

pytestmark = [pytest.mark.minisite, pytest.mark.last]

CCACHE_DIRS = {"appliance": ["/run/appliance/ccache", "/run/appliance/ccache-submit"],
               "condor-lane": ["/var/lib/condor/krb_credentials"],
               "condor-schedd": ["/var/lib/condor/krb_credentials"],
               "condor-exec1": ["/var/lib/condor/krb_credentials"],
               "condor-exec2": ["/var/lib/condor/krb_credentials"]}


def key_and_ticket(raw: bytes) -> tuple[bytes, bytes]:
    """Session key and ticket of one FILE v4 ccache entry (layout as in appliance.ccache)."""
    pos = 0

    def u32():
        nonlocal pos
        (v,) = struct.unpack_from(">I", raw, pos)
        pos += 4
        return v

    def counted():
        nonlocal pos
        n = u32()
        pos += n
        return raw[pos - n:pos]

    for _ in range(2):                      # client, server principals
        u32()
        n = u32()
        counted()
        for _ in range(n):
            counted()
    pos += 2                                # enctype
    key = counted()
    pos += 16 + 1 + 4                       # times, is_skey, flags
    for _ in range(2):                      # addresses, authdata
        for _ in range(u32()):
            pos += 2
            counted()
    return key, counted()


def ticket_secrets() -> dict[str, bytes]:
    """The session keys and tickets of every cache still on the site, and of every login cache
    the run's logins made (recorded at login by tests/conftest.py: logouts delete them)."""
    images: list[tuple[str, bytes]] = [(f"appliance:{p} (at login)", d)
                                       for p, d in LOGIN_CACHES_SEEN.items()]
    for service, dirs in CCACHE_DIRS.items():
        script = ("for f in $(find " + " ".join(dirs) + " -maxdepth 1 -type f 2>/dev/null); do "
                  "case $f in *.cc|*.cred|*/krb5cc_*) echo \"$f $(base64 -w0 $f)\";; esac; done")
        for line in site_exec(service, "sh", "-c", script, check=False).stdout.splitlines():
            path, _, data = line.partition(" ")
            try:
                images.append((f"{service}:{path}", base64.b64decode(data)))
            except (binascii.Error, ValueError):
                continue
    out: dict[str, bytes] = {}
    for where, data in images:
        try:
            cc = ccache.parse(data)
        except (ccache.CCacheError, ValueError):
            continue
        for cred in cc.credentials:
            key, ticket = key_and_ticket(cred.raw)
            if len(key) >= 16:
                out[f"session key of {where} ({cred.server})"] = key
            if len(ticket) >= 64:
                out[f"ticket of {where} ({cred.server})"] = ticket[-48:]
    return out


def encodings(value: bytes | str) -> set[str]:
    """Text forms a secret could take in a log: itself; for bytes: hex, base64 (std and url-safe,
    at each of the 3 alignments inside a longer stream, the padding-free core)."""
    if isinstance(value, str):
        return {value}
    out = {value.hex(), value.hex().upper()}
    for off in range(3):  # value[off:] starts on a 3-byte boundary of the surrounding stream
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            core = enc(value[off:]).decode().rstrip("=")[:-2]  # the last chars depend on what follows
            if len(core) >= 16:
                out.add(core)
    return out


def hub_database_bytes() -> bytes:
    """The hub's database as bytes: with PostgreSQL (the mini site's `db` service) a full logical
    dump plus the raw table files; with SQLite the database file and its journals."""
    if podman("container", "exists", container("db"), check=False).returncode == 0:
        dump = site_exec("db", "sh", "-c", "runuser -u postgres -- pg_dump jupyterhub | base64 -w0",
                         check=False, timeout=120).stdout
        files = site_exec("db", "sh", "-c", "tar -C /var/lib/postgresql/data -c base 2>/dev/null "
                          "| base64 -w0", check=False, timeout=120).stdout
        return base64.b64decode(dump) + base64.b64decode(files)
    return b"".join(base64.b64decode(site_exec("appliance", "sh", "-c",
                    f"cat /srv/appliance/jupyterhub.sqlite{suffix} 2>/dev/null | base64 -w0",
                    check=False).stdout) for suffix in ("", "-wal", "-journal"))


def spawn_and_collect(client_for) -> None:
    """A notebook of our own: its server's API token and the session's cookies are secrets too."""
    c = client_for("carol")
    r = c.spawn({"backend": "htcondor"})
    assert r.status_code in (201, 202), r.text
    try:
        c.wait_ready(timeout=180)
        token = c.run_code("import os; print(os.environ['JUPYTERHUB_API_TOKEN'])").strip()
        assert len(token) >= 32
        record_secret("the notebook server's API token", token)
        c.user_api("GET", "/api/status")
        for cookie in c.s.cookies:  # the login cookie (the session id is no credential)
            if cookie.name == "jupyterhub-hub-login" or cookie.name.startswith("jupyterhub-user-"):
                record_secret(f"cookie {cookie.name}", cookie.value)
    finally:
        c.stop()


def all_secrets(client_for) -> dict[str, bytes | str]:
    spawn_and_collect(client_for)
    found: dict[str, bytes | str] = dict(SECRETS_SEEN)
    for name in ("cookie_secret", "proxy_token", "crypt_key"):
        text = site_exec("appliance", "cat", f"/srv/appliance/secrets/{name}").stdout.strip()
        found[f"hub {name}"] = text
        found[f"hub {name} (bytes)"] = bytes.fromhex(text)
    for d in ("condor-tokens.d", "credbridge-tokens.d"):
        for tok in site_exec("appliance", "sh", "-c", f"cat /srv/appliance/{d}/*",
                             check=False).stdout.split():
            if tok.count(".") == 2:
                found[f"IDTOKEN signature in {d}"] = tok.rsplit(".", 1)[1]
    tickets = ticket_secrets()
    assert tickets, "no ticket found to look for: the ticket caches moved?"
    # the caches recorded at login count too (logouts and the bridge's sweep delete the files)
    assert not LOGIN_CACHES_SEEN or any("(at login)" in k for k in tickets), list(tickets)
    found.update(tickets)
    return found


def project_containers() -> list[str]:
    return podman("ps", "-a", "--filter", f"label=io.podman.compose.project={PROJECT}",
                  "--format", "{{.Names}}").stdout.split()


def plant_canaries() -> dict[str, bytes | str]:
    """Known copies the scan must find (so a scan that finds nothing proves something): a token
    on the appliance's output and key bytes, base64 at an odd offset, in a file under /var/log."""
    token, key = pysecrets.token_hex(32), os.urandom(32)
    site_exec("appliance", "sh", "-c", "read -r t; echo \"canary $t\" > /proc/1/fd/1",
              input=token + "\n")
    line = base64.b64encode(b"x" + key + b"yz").decode()
    site_exec("condor-exec2", "sh", "-c", "cat > /var/log/jba-canary.log", input=line + "\n")
    return {"canary token": token, "canary key": key}


def test_no_secret_of_the_run_in_any_log_or_the_hub_database(client_for):
    canaries = plant_canaries()
    secrets = {**all_secrets(client_for), **canaries}
    patterns = {p: label for label, v in secrets.items() for p in encodings(v)}
    print(f"looking for {len(secrets)} secrets ({len(patterns)} encodings; "
          f"{sum(1 for k in secrets if k.startswith(('session key', 'ticket')))} from tickets)")
    leaks: set[str] = set()
    stdin = "\n".join(patterns) + "\n"
    for name in project_containers():
        log = podman("logs", name, check=False, timeout=120)
        text = log.stdout + log.stderr
        leaks |= {f"{label} in `podman logs {name}`" for p, label in patterns.items() if p in text}
        # Files under /var/log (HTCondor, Slurm, KDC, ...), matched inside the container; the
        # patterns go in on stdin. Only which pattern matched where comes back.
        r = podman("exec", "-i", name, "sh", "-c",
                   "grep -rHoF -f /dev/stdin /var/log 2>/dev/null | sort -u", input=stdin,
                   check=False, timeout=120)
        for line in r.stdout.splitlines():
            path, _, match = line.partition(":")
            if match in patterns:
                leaks.add(f"{patterns[match]} in {name}:{path}")
    # The notebook servers' own logs, in the shared homes.
    r = site_exec("appliance", "sh", "-c",
                  "find /home -path '*/.jupyterhub-batch/*' \\( -name '*.out' -o -name '*.err' \\) "
                  "-type f -print0 | xargs -0 -r grep -HoF -f /dev/stdin | sort -u",
                  input=stdin, check=False, timeout=120)
    for line in r.stdout.splitlines():
        path, _, match = line.partition(":")
        if match in patterns:
            leaks.add(f"{patterns[match]} in {path}")
    db = hub_database_bytes()
    assert len(db) > 10000, "the hub database was not read"
    for label, value in secrets.items():
        raw = [value] if isinstance(value, bytes) else [value.encode()]
        # a text secret in a bytea column shows as hex in the dump
        forms = encodings(value) | ({value.encode().hex()} if isinstance(value, str) else set())
        if any(r in db for r in raw) or any(p.encode() in db for p in forms):
            leaks.add(f"{label} in the hub database")
    # The credential bridge's state file (every stored ticket, encrypted): nothing in clear.
    state = base64.b64decode(site_exec("appliance", "sh", "-c",
                             "cat /srv/appliance/credd-bridge/state 2>/dev/null | base64 -w0",
                             check=False).stdout)
    assert len(state) > 100, "the credential bridge's state file was not read"
    for label, value in secrets.items():
        raw = [value] if isinstance(value, bytes) else [value.encode()]
        if any(r in state for r in raw) or any(p.encode() in state for p in encodings(value)):
            leaks.add(f"{label} in the credential bridge's state file")
    site_exec("condor-exec2", "rm", "-f", "/var/log/jba-canary.log")
    found = {leak for leak in leaks if leak.startswith("canary")}
    assert {f.split(" in ")[0] for f in found} == set(canaries), f"the scan missed a canary: {found}"
    leaks -= found
    assert not leaks, "secrets in clear:\n  " + "\n  ".join(sorted(leaks))
