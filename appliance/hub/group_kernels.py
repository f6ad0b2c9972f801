"""Group kernels: extra Jupyter data directories (kernelspecs) per Unix group, on JUPYTER_PATH in
the notebook job's environment of the group's members (``BatchSpawner.group_kernel_paths``;
DESY puts the belle2 kernels on JUPYTER_PATH for that group).

Membership comes from the hub host's group database (the same NSS/LDAP the nodes use), never from
anything the user controls; the directories come only from the admin's configuration (users
cannot set JUPYTER_PATH: ``reserved_env`` has ``JUPYTER*``). A JUPYTER_PATH already in the job's
environment (the admin's ``Spawner.environment``) stays first.
"""

from __future__ import annotations

import grp
import os
import pwd
from typing import Iterable, Mapping


def check_mapping(mapping: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """The admin's {group: [directory, ...]} as plain lists; ValueError naming the entry for a
    directory that is not absolute or holds ':' (JUPYTER_PATH's separator)."""
    out: dict[str, list[str]] = {}
    for group, dirs in mapping.items():
        if isinstance(dirs, str):
            raise ValueError(f"group {group!r}: a list of directories, not a string")
        out[str(group)] = []
        for d in dirs:
            if not isinstance(d, str) or not os.path.isabs(d) or os.pathsep in d:
                raise ValueError(f"group {group!r}: {d!r} is not an absolute directory without "
                                 f"{os.pathsep!r}")
            out[str(group)].append(os.path.normpath(d))
    return out


def unix_groups(username: str) -> set[str]:
    """The names of ``username``'s groups (primary and supplementary) on the hub host; empty for
    an unknown user."""
    try:
        gid = pwd.getpwnam(username).pw_gid
    except KeyError:
        return set()
    out = set()
    for g in os.getgrouplist(username, gid):
        try:
            out.add(grp.getgrgid(g).gr_name)
        except KeyError:
            continue
    return out


def kernel_dirs(groups: Iterable[str], mapping: Mapping[str, Iterable[str]]) -> list[str]:
    """The directories of the groups the user is in, in the mapping's order, each once."""
    mine = set(groups)
    out: list[str] = []
    for group, dirs in mapping.items():
        if group in mine:
            out.extend(d for d in dirs if d not in out)
    return out


def jupyter_path(dirs: Iterable[str], existing: str = "") -> str:
    """JUPYTER_PATH with ``dirs`` after the entries already in ``existing``."""
    parts = [p for p in existing.split(os.pathsep) if p]
    parts.extend(d for d in dirs if d not in parts)
    return os.pathsep.join(parts)
