"""Idle sessions give their slot back: ``jupyterhub-idle-culler`` as a hub-managed service.

The stock culler (PyPI ``jupyterhub-idle-culler``, pinned in the image) runs as the service
``idle-culler`` under the unprivileged account ``cullsvc``, with the scopes it documents
(``list:users``, ``read:users:activity``, ``read:servers``, ``delete:servers``) plus one of ours,
``custom:batch:cull``. Its own ``cull_arbiter_hook`` (:func:`arbiter`, loaded from
``culler_config.py``) asks the hub, for each ready server, ``POST /hub/api/batch/cull``; the hub
decides (:func:`decide`):

* the limit of the server's backend and partition (:class:`IdleCulling` ``timeouts``; 0 or no
  entry: never culled there);
* never a server whose kernels are busy: the hub asks the server's ``/api/kernels`` for their
  ``execution_state`` with a token it mints for that one server and deletes right after (the
  culler itself never gets access to users' servers);
* when it says yes it leaves a notice on the spawner, so the stop that follows is recorded as
  ``culled`` with the reason, and the user reads it on the home page.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Optional

from traitlets import Dict, Float, Integer, Unicode
from traitlets.config import Configurable

SCOPE = "custom:batch:cull"
SERVICE = "idle-culler"
CONFIG_FILE = os.path.join(os.path.dirname(__file__), "culler_config.py")


class IdleCulling(Configurable):
    """Admin settings of idle culling (``c.IdleCulling.*`` in appliance_config.py)."""

    timeouts = Dict(
        {},
        help="Idle limit in seconds per backend or backend/partition, e.g. {'htcondor': 3600, "
        "'slurm': 7200, 'slurm/maxwell': 1800}; the most specific key wins; 0 or no key: never "
        "culled. Empty: the culler service is not started.",
    ).tag(config=True)
    cull_every = Integer(
        300, min=1, help="Seconds between two passes of the culler over all servers.",
    ).tag(config=True)
    kernel_check_timeout = Float(
        10.0, min=0.5,
        help="Seconds to wait for a server's /api/kernels (busy check); no answer: not culled.",
    ).tag(config=True)
    service_user = Unicode(
        "cullsvc", help="Unix account the culler service runs as (no rights of its own).",
    ).tag(config=True)

    def limit_for(self, user_options: Optional[dict], default_backend: str = "") -> float:
        """Seconds of idleness after which a server with these options is culled (0: never)."""
        opts = user_options or {}
        backend = str(opts.get("backend") or default_backend or "")
        partition = str(opts.get("partition") or "")
        for key in (f"{backend}/{partition}" if partition else None, backend):
            if key and key in self.timeouts:
                return float(self.timeouts[key] or 0)
        return 0.0


def busy_kernels(kernels: Any) -> list[str]:
    """Ids of the kernels whose ``execution_state`` is not idle (busy, starting)."""
    if not isinstance(kernels, list):
        return []
    return [str(k.get("id", "?")) for k in kernels
            if isinstance(k, dict) and k.get("execution_state") not in ("idle", "dead", None)]


def decide(limit: float, inactive: float, kernels: Optional[list]) -> tuple[bool, str]:
    """(cull?, why) from the limit, the seconds idle and the server's kernel list (None: the
    server did not answer). Pure."""
    if limit <= 0:
        return False, "no idle limit for this backend/partition"
    if inactive < limit:
        return False, f"idle {inactive:.0f} s, below the limit of {limit:.0f} s"
    if kernels is None:
        return False, "the server did not answer the kernel check"
    busy = busy_kernels(kernels)
    if busy:
        return False, f"kernel {', '.join(busy)} is busy"
    return True, (f"Stopped after {_dur(inactive)} without activity (idle limit {_dur(limit)}); "
                  "no kernel was running code.")


def _dur(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min" \
        if seconds >= 120 else f"{seconds:.0f} s"


def service_and_role(cfg: IdleCulling, python: str = sys.executable) -> tuple[list, list, dict]:
    """(services, roles, custom_scopes) for c.JupyterHub (empty when nothing is culled)."""
    limits = [float(v) for v in cfg.timeouts.values() if v and float(v) > 0]
    if not limits:
        return [], [], {}
    service = {
        "name": SERVICE,
        "command": [python, "-m", "jupyterhub_idle_culler", f"--timeout={int(min(limits))}",
                    f"--cull-every={cfg.cull_every}", f"--config={CONFIG_FILE}"],
        "user": cfg.service_user, "cwd": "/",
    }
    role = {"name": "idle-culler", "description": "Stops idle servers (jupyterhub-idle-culler)",
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers",
                       SCOPE],
            "services": [SERVICE]}
    scopes = {SCOPE: {"description": "Ask the hub whether an idle server may be culled "
                      "(per-backend limits, busy kernels) and announce the cull"}}
    return [service], [role], scopes


def configure(c: Any) -> None:
    """Add the culler service, its role and scope to the hub config ``c`` (if any limit is set)."""
    services, roles, scopes = service_and_role(IdleCulling(config=c))
    if not services:
        return
    have = list(c.JupyterHub.services) if "services" in c.JupyterHub else []
    c.JupyterHub.services = [s for s in have if s.get("name") != SERVICE] + services
    have = list(c.JupyterHub.load_roles) if "load_roles" in c.JupyterHub else []
    c.JupyterHub.load_roles = [r for r in have if r.get("name") != roles[0]["name"]] + roles
    merged = dict(c.JupyterHub.custom_scopes) if "custom_scopes" in c.JupyterHub else {}
    merged.update(scopes)
    c.JupyterHub.custom_scopes = merged


async def arbiter(inactive, inactive_limit, server, **_kw) -> bool:
    """The culler's ``cull_arbiter_hook``: the hub decides (``POST /hub/api/batch/cull``)."""
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    body = json.dumps({"server": server.get("full_name", ""),
                       "inactive_seconds": inactive.total_seconds()})
    req = HTTPRequest(os.environ["JUPYTERHUB_API_URL"].rstrip("/") + "/batch/cull",
                      method="POST", body=body,
                      headers={"Authorization": f"token {os.environ['JUPYTERHUB_API_TOKEN']}",
                               "Content-Type": "application/json"})
    try:
        resp = await AsyncHTTPClient().fetch(req)
        answer = json.loads(resp.body or b"{}")
    except Exception as e:  # the hub could not decide: keep the server
        print(f"idle-culler: hub refused or failed the cull check for {server.get('full_name')}: "
              f"{e}", file=sys.stderr)
        return False
    return bool(answer.get("cull"))
