"""Where a notebook's route may point: the execute host from the scheduler's own record, checked.

The job's owner can edit most of an HTCondor job ad (``condor_qedit``; ``RemoteHost`` included),
so the route host never comes from the job ad. It comes from the record the owner cannot write:

* HTCondor: the lane collector's slot ad (published by the startd, ``ALLOW_DAEMON`` only) whose
  ``JobId`` is the job, whose ``GlobalJobId`` names this hub's schedd and whose ``RemoteUser`` is
  the job's owner; its ``Machine`` is the host. Exactly one slot must match.
* Slurm: the allocation's node (``squeue --json`` ``nodes``, the controller's record), which must be
  one of the nodes ``scontrol show node`` lists; its ``NodeAddr`` is the host.

Either way the name must match :data:`~appliance.names.HOST_NAME_RE` (so no ``host:port#`` trick
can pass) and be one of the nodes the scheduler knows. Pure functions; the backends call them.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from ...names import HOST_NAME_RE


class HostRefused(Exception):
    """The scheduler's record names a host the hub will not route to (message says why)."""


def checked_host(name: str, known: Iterable[str], what: str) -> str:
    """``name`` if it is a strict host name among ``known`` (case-insensitive), else HostRefused."""
    if not isinstance(name, str) or not HOST_NAME_RE.match(name):
        raise HostRefused(f"{what}: {name!r} is not a plain host name")
    if name.lower() not in {str(k).lower() for k in known}:
        raise HostRefused(f"{what}: {name!r} is not a node the scheduler knows")
    return name


def _text(ad: Any, key: str) -> str:
    value = ad.get(key)
    return str(value) if value is not None else ""


def slot_host(slots: Iterable[Any], job_id: str, owner: Optional[str],
              schedd_name: str) -> Optional[str]:
    """The ``Machine`` of the one lane slot running ``job_id`` of ``owner`` from ``schedd_name``.

    None while no slot shows the job yet (the startd's update may lag the schedd by ~1 s).
    HostRefused when the record is inconsistent: several slots claim the job, or the slot's
    machine is not a plain host name among the lane's startds.
    """
    slots = list(slots)
    known = {_text(ad, "Machine") for ad in slots} - {""}
    prefix = f"{schedd_name}#{job_id}#"
    found = [ad for ad in slots
             if _text(ad, "JobId") == job_id and _text(ad, "GlobalJobId").startswith(prefix)]
    if not found:
        return None
    if len(found) > 1:
        raise HostRefused(f"job {job_id}: {len(found)} slots claim it "
                          f"({', '.join(sorted(_text(ad, 'Name') for ad in found))})")
    ad = found[0]
    remote_user = _text(ad, "RemoteUser").split("@")[0]
    if not owner or remote_user != owner:
        raise HostRefused(f"job {job_id}: its slot runs it for {remote_user!r}, "
                          f"not for the job's owner {owner!r}")
    machine = _text(ad, "Machine")
    name = _text(ad, "Name")
    if name.rpartition("@")[2] != machine:
        raise HostRefused(f"job {job_id}: slot {name!r} does not belong to machine {machine!r}")
    return checked_host(machine, known, f"job {job_id}'s slot")
