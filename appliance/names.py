r"""Allow-lists for names that cross a trust boundary; written once, used everywhere.

Standard library only (the user-side helper imports this). ``appliance/launcher.py`` keeps its
own copy of :data:`ENV_NAME_RE`, because it is installed alone on the nodes.

Every pattern ends in ``\Z``, not ``$`` (which also matches before a final newline), so
``PATTERN.match(text)`` accepts the whole text or nothing.
"""

from __future__ import annotations

import re

#: A unix user name as the hub, the credential bridge and the credmon accept it.
USER_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\Z")
#: An environment variable name a user may set (before the reserved-name check).
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
#: Slurm object names (partitions, reservations, job names): a conservative allow-list.
SLURM_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
#: Job ids: HTCondor "cluster.proc", Slurm "N" or "N_M" (array task).
HTCONDOR_JOB_ID_RE = re.compile(r"^\d+\.\d+\Z")
SLURM_JOB_ID_RE = re.compile(r"^\d+(_\d+)?\Z")
#: A host name a route may point at: dot-separated RFC 1123 labels, nothing else (no port, no
#: "@", "#", "/", ":" or spaces), at most 253 characters. A dotted IPv4 address also matches.
HOST_NAME_RE = re.compile(
    r"^(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z")
