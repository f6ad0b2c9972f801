"""Reservation policy and request validation (pure: no Slurm calls, the clock is passed in).

The admin's file (default ``/etc/appliance/reservations_config.py``, traitlets config)::

    c.ReservationPolicy.staff = {
        "alice": {"partitions": ["upex", "maxwell"], "nodes": ["node2", "node3"], "max_hours": 24},
    }
    c.ReservationPolicy.max_hours = 72

Requests (JSON): ``create`` {name, partition, nodes, users | groups, hours, start?};
``extend`` {name, hours}  (hours added to the end); ``delete`` {name}. Every reservation the
service makes is named ``name_prefix + name``; it may touch only such reservations.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from traitlets import Dict, Float, Integer, Unicode
from traitlets.config import Configurable, Config, PyFileConfigLoader

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
SLURM_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
ACTIONS = ("create", "extend", "delete")


class PolicyError(Exception):
    """A refused request. ``status``: 400 (bad or out-of-policy field), 403 (not staff)."""

    def __init__(self, field_name: str, message: str, status: int = 400):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message
        self.status = status

    def as_dict(self) -> dict:
        return {"error": self.field, "message": str(self), "status": self.status}


@dataclass
class StaffRights:
    partitions: list[str]
    nodes: list[str]
    max_hours: float
    max_nodes: int


@dataclass
class Checked:
    """A validated request: what the wrapper runs (``argv`` after ``scontrol``) and logs."""

    action: str
    actor: str
    reservation: str
    argv: list[str]
    summary: dict = field(default_factory=dict)


class ReservationPolicy(Configurable):
    staff = Dict(
        help="Staff who may manage reservations: user name -> {'partitions': [...], 'nodes': "
        "[...], 'max_hours': H, 'max_nodes': N}. 'nodes' lists the nodes they may reserve; "
        "max_hours/max_nodes default to the global values. The hub grants these users the "
        "'reservation-staff' role (custom:reservations)."
    ).tag(config=True)
    max_hours = Float(72.0, help="Longest reservation anyone may make (hours, from start to end).").tag(config=True)
    max_nodes = Integer(4, help="Most nodes in one reservation (unless a staff entry says less).").tag(config=True)
    max_start_days = Float(30.0, help="How far ahead a reservation may start (days).").tag(config=True)
    name_prefix = Unicode(
        "staff-", help="Prefix of every reservation the service makes; it touches no others."
    ).tag(config=True)
    audit_log = Unicode(
        "/srv/appliance/reservations/audit.log",
        help="Audit log (JSON lines: who, what, when, result), written by the root wrapper.",
    ).tag(config=True)

    def rights(self, actor: str) -> StaffRights:
        entry = self.staff.get(actor)
        if not isinstance(entry, dict):
            raise PolicyError("user", f"{actor} is not reservation staff", status=403)
        return StaffRights(
            partitions=[str(p) for p in entry.get("partitions", [])],
            nodes=[str(n) for n in entry.get("nodes", [])],
            max_hours=min(float(entry.get("max_hours", self.max_hours)), self.max_hours),
            max_nodes=min(int(entry.get("max_nodes", self.max_nodes)), self.max_nodes),
        )

    def full_name(self, name: Any) -> str:
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise PolicyError("name", "must be 1-32 characters a-z, 0-9 and '-', starting with a "
                              "letter or digit")
        return self.name_prefix + name

    def own(self, reservation: str) -> bool:
        return reservation.startswith(self.name_prefix)

    # ------------------------------------------------------------------ checks
    def _hours(self, value: Any, rights: StaffRights, what: str = "hours") -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PolicyError(what, "must be a number of hours")
        if not 0 < value <= rights.max_hours:
            raise PolicyError(what, f"must be more than 0 and at most {rights.max_hours:g} h")
        return float(value)

    def _names(self, value: Any, what: str) -> list[str]:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise PolicyError(what, "must be a list of names")
        bad = [v for v in value if not SLURM_NAME_RE.match(v)]
        if bad:
            raise PolicyError(what, f"invalid name {bad[0]!r}")
        return sorted(set(value))

    def check(self, request: Any, actor: str, now: float,
              current_end: Optional[float] = None, current_start: Optional[float] = None) -> Checked:
        """Validate ``request`` of ``actor``; return the scontrol argv. ``current_end`` /
        ``current_start``: the existing reservation's times (``extend``)."""
        rights = self.rights(actor)
        if not isinstance(request, dict):
            raise PolicyError("request", "must be a JSON object")
        action = request.get("action")
        if action not in ACTIONS:
            raise PolicyError("action", f"must be one of {', '.join(ACTIONS)}")
        name = self.full_name(request.get("name"))
        if action == "delete":
            return Checked(action, actor, name, ["delete", f"ReservationName={name}"],
                           {"name": name})
        if action == "extend":
            if current_end is None or current_start is None:
                raise PolicyError("name", f"there is no reservation {name}", status=404)
            hours = self._hours(request.get("hours"), rights)
            end = current_end + hours * 3600
            if end - current_start > rights.max_hours * 3600:
                raise PolicyError("hours", f"the reservation would last longer than "
                                  f"{rights.max_hours:g} h")
            return Checked(action, actor, name,
                           ["update", f"ReservationName={name}", f"EndTime={_slurm_time(end)}"],
                           {"name": name, "end": int(end), "hours_added": hours})
        # create
        unknown = set(request) - {"action", "actor", "name", "partition", "nodes", "users", "groups",
                                  "hours", "start"}
        if unknown:
            raise PolicyError(sorted(unknown)[0], "unknown field")
        partition = request.get("partition")
        if not isinstance(partition, str) or partition not in rights.partitions:
            raise PolicyError("partition", f"you may reserve in: {', '.join(rights.partitions) or 'none'}")
        nodes = self._names(request.get("nodes"), "nodes")
        if not nodes:
            raise PolicyError("nodes", "name at least one node")
        outside = [n for n in nodes if n not in rights.nodes]
        if outside:
            raise PolicyError("nodes", f"you may not reserve {', '.join(outside)} (allowed: "
                              f"{', '.join(rights.nodes) or 'none'})")
        if len(nodes) > rights.max_nodes:
            raise PolicyError("nodes", f"at most {rights.max_nodes} nodes")
        users = self._names(request.get("users") or [], "users")
        groups = self._names(request.get("groups") or [], "groups")
        if bool(users) == bool(groups):
            raise PolicyError("users", "name either users or groups (one of the two)")
        hours = self._hours(request.get("hours"), rights)
        start = request.get("start", "now")
        if start == "now" or start is None:
            start_ts, start_arg = now, "now"
        elif isinstance(start, (int, float)) and not isinstance(start, bool):
            if not now - 60 <= start <= now + self.max_start_days * 86400:
                raise PolicyError("start", f"must be within the next {self.max_start_days:g} days")
            start_ts, start_arg = float(start), _slurm_time(start)
        else:
            raise PolicyError("start", "must be 'now' or seconds since the epoch")
        minutes = max(1, int(round(hours * 60)))
        argv = ["create", "reservation", f"ReservationName={name}", f"StartTime={start_arg}",
                f"Duration={minutes}", f"PartitionName={partition}", f"Nodes={','.join(nodes)}"]
        argv.append(f"Users={','.join(users)}" if users else f"Groups={','.join(groups)}")
        return Checked(action, actor, name, argv, {
            "name": name, "partition": partition, "nodes": nodes, "users": users,
            "groups": groups, "start": int(start_ts), "end": int(start_ts + minutes * 60)})


def _slurm_time(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ts))


def load_policy(path: str) -> ReservationPolicy:
    """The policy from a traitlets config file (a missing file: no staff, nothing allowed)."""
    import os

    cfg = Config()
    if os.path.exists(path):
        loader = PyFileConfigLoader(os.path.basename(path), os.path.dirname(path) or ".")
        cfg = loader.load_config()
    return ReservationPolicy(config=cfg)
