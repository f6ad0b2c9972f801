"""``appliance-reservation-admin``: the reservation service's only privileged step.

Run by sudo as root for the service account (image/sudoers), one JSON request on stdin::

    {"action": "create"|"extend"|"delete", "actor": "<staff user>", "name": ..., ...}

It loads the policy itself from the root-owned config (refusing a file others may write), checks
the request again (the service is not trusted to have done it), runs ``scontrol`` with a fixed argv
(no shell) on reservations named with the service's prefix only, and appends one audit line (who,
what, when, result) to the audit log, which the service account can read but not write.
Answer on stdout: ``{"ok": true, ...}`` or ``{"ok": false, "error": field, "message", "status"}``.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from typing import Any, Callable, Optional

from .policy import Checked, PolicyError, ReservationPolicy, load_policy

CONFIG = "/etc/appliance/reservations_config.py"
SCONTROL = "/usr/bin/scontrol"
MAX_REQUEST = 16384


def check_config_file(path: str) -> None:
    st = os.stat(path)
    if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PolicyError("config", f"{path} must be owned by root and writable by root only", 500)


def audit(path: str, record: dict) -> None:
    """Append one JSON line (O_APPEND; root 0640, group of the service account may read)."""
    d = os.path.dirname(path)
    os.makedirs(d, mode=0o750, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o640)
    try:
        os.fchown(fd, 0, os.stat(d).st_gid)  # the directory's group (the service's) may read
        os.fchmod(fd, 0o640)  # whatever the caller's umask
        os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode())
    finally:
        os.close(fd)


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})


def reservation_times(name: str, run: Callable = _run) -> Optional[tuple[float, float]]:
    """(start, end) of an existing reservation, None if Slurm does not know it."""
    p = run([SCONTROL, "show", "reservation", name, "--json"])
    if p.returncode != 0:
        return None
    for r in json.loads(p.stdout or "{}").get("reservations", []) or []:
        if r.get("name") == name:
            def t(v):
                return float(v.get("number", 0) if isinstance(v, dict) else v or 0)
            return t(r.get("start_time")), t(r.get("end_time"))
    return None


def handle(request: Any, policy: ReservationPolicy, now: float, run: Callable = _run) -> dict:
    """Check and carry out one request; returns the answer (and writes the audit line)."""
    actor = request.get("actor") if isinstance(request, dict) else None
    record: dict[str, Any] = {"time": int(now), "iso_time": time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)), "actor": actor,
        "action": request.get("action") if isinstance(request, dict) else None,
        "request": {k: v for k, v in (request or {}).items() if k != "actor"}
        if isinstance(request, dict) else None}
    try:
        if not isinstance(actor, str) or not actor:
            raise PolicyError("actor", "missing", 400)
        times = None
        if request.get("action") in ("extend", "delete"):
            name = policy.full_name(request.get("name"))
            times = reservation_times(name, run)
            if times is None:
                raise PolicyError("name", f"there is no reservation {name}", 404)
        checked: Checked = policy.check(request, actor, now,
                                        current_start=times[0] if times else None,
                                        current_end=times[1] if times else None)
        if not policy.own(checked.reservation):  # pragma: no cover - full_name guarantees it
            raise PolicyError("name", "not a reservation of this service", 403)
        p = run([SCONTROL, *checked.argv])
        if p.returncode != 0:
            msg = (p.stderr or p.stdout).strip()[-300:] or f"scontrol exit {p.returncode}"
            raise PolicyError("slurm", f"Slurm refused: {msg}", 409)
        answer = {"ok": True, "reservation": checked.reservation, **checked.summary}
        record.update(result="ok", reservation=checked.reservation, details=checked.summary)
    except PolicyError as e:
        answer = {"ok": False, **e.as_dict()}
        record.update(result="refused", status=e.status, error=str(e))
    audit(policy.audit_log, record)
    return answer


def main(argv: Optional[list[str]] = None) -> int:
    if os.geteuid() != 0:
        print(json.dumps({"ok": False, "error": "wrapper", "message": "must run as root (sudo)",
                          "status": 500}))
        return 1
    raw = sys.stdin.read(MAX_REQUEST + 1)
    try:
        if len(raw) > MAX_REQUEST:
            raise PolicyError("request", "too large")
        try:
            request = json.loads(raw)
        except ValueError:
            raise PolicyError("request", "must be JSON") from None
        check_config_file(CONFIG)  # fixed path: the caller cannot pick the policy
        policy = load_policy(CONFIG)
    except PolicyError as e:
        print(json.dumps({"ok": False, **e.as_dict()}))
        return 1
    answer = handle(request, policy, time.time())
    print(json.dumps(answer))
    return 0 if answer["ok"] else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
