"""Owner and mode of the appliance's secrets, checked before anything starts.

``appliance.init`` refuses to start (exit 2) when a secret file or directory is looser than the
table below (documented in docs/security.md), and names each one with the fix. Nothing is
"repaired" silently: a secret that was readable by others may have been read, and its owner
should know.

Every path is checked with ``lstat`` (a symlink is refused: it could point anywhere).
"""

from __future__ import annotations

import fnmatch
import os
import stat
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    pattern: str         # absolute path; the last component may be a glob
    kind: str            # "dir" | "file"
    max_mode: int        # no permission bit outside these
    what: str            # for the message


def rules(state: str, mounted_tls: str) -> list[Rule]:
    return [
        Rule(f"{state}/secrets", "dir", 0o700, "secrets directory"),
        Rule(f"{state}/secrets/*", "file", 0o600, "hub secret"),
        Rule(f"{state}/tls", "dir", 0o700, "TLS directory"),
        Rule(f"{state}/tls/*.key", "file", 0o600, "TLS private key"),
        Rule(f"{state}/internal-tls", "dir", 0o700, "internal TLS directory"),
        Rule(f"{state}/internal-tls/*.key", "file", 0o600, "internal TLS private key"),
        Rule(f"{state}/condor-tokens.d", "dir", 0o700, "the hub's HTCondor token directory"),
        Rule(f"{state}/condor-tokens.d/*", "file", 0o600, "the hub's HTCondor token"),
        Rule(f"{state}/credbridge-tokens.d", "dir", 0o700,
             "the credential bridge's HTCondor token directory"),
        Rule(f"{state}/credbridge-tokens.d/*", "file", 0o600,
             "the credential bridge's HTCondor token"),
        Rule(f"{state}/credd-bridge", "dir", 0o700, "the credential bridge's state directory"),
        Rule(f"{state}/credd-bridge/state*", "file", 0o600,
             "the credential bridge's state (users' tickets, encrypted)"),
        Rule(f"{state}/jupyterhub.sqlite", "file", 0o600, "hub database"),
        Rule(f"{mounted_tls}/tls.key", "file", 0o600, "mounted TLS private key"),
    ]


def _expand(pattern: str) -> list[str]:
    parent, leaf = os.path.split(pattern)
    if not any(c in leaf for c in "*?["):
        return [pattern] if os.path.lexists(pattern) else []
    try:
        names = sorted(os.listdir(parent))
    except OSError:
        return []
    return [os.path.join(parent, n) for n in names
            if fnmatch.fnmatchcase(n, leaf) and not n.startswith(".")]


def problems(rule_list: list[Rule], owner_uid: int = 0) -> list[str]:
    """One message per path that breaks its rule (an absent path breaks nothing)."""
    out = []
    for rule in rule_list:
        for path in _expand(rule.pattern):
            st = os.lstat(path)
            want_dir = rule.kind == "dir"
            if stat.S_ISLNK(st.st_mode):
                out.append(f"{path} ({rule.what}) is a symlink: replace it with the real "
                           f"{'directory' if want_dir else 'file'}")
                continue
            if want_dir != stat.S_ISDIR(st.st_mode) or not (want_dir or stat.S_ISREG(st.st_mode)):
                out.append(f"{path} ({rule.what}) must be a {'directory' if want_dir else 'file'}")
                continue
            mode = stat.S_IMODE(st.st_mode)
            if st.st_uid != owner_uid:
                out.append(f"{path} ({rule.what}) is owned by uid {st.st_uid}, must be uid "
                           f"{owner_uid}: chown {owner_uid}:{owner_uid} {path}")
            if mode & ~rule.max_mode:
                out.append(f"{path} ({rule.what}) has mode {mode:04o}, at most {rule.max_mode:04o} "
                           f"is allowed (no access for group and others): "
                           f"chmod {rule.max_mode:04o} {path}")
    return out
