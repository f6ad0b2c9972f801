"""Operations settings of the hub: database URL, the metrics reader, the reservation service and
the scrape-time metric collectors. Applied by the config fragment
``appliance/hub/config/operations.py`` (see docs/operations.md).

Everything is switched on by files, so a site enables a part by mounting its secret/config:

* ``/etc/appliance/secrets/db/db_url``              hub database URL (else sqlite, state volume)
* ``/etc/appliance/secrets/metrics/prometheus.token`` the token of the hub service ``prometheus``,
  whose only role (``metrics-reader``) grants ``read:metrics``
* ``/etc/appliance/reservations_config.py``         the reservation policy: adds the hub-managed
  service ``reservations`` (run as the unprivileged ``resvsvc``), the custom scope
  ``custom:reservations`` and the role ``reservation-staff`` for the staff it names
"""

from __future__ import annotations

import os
import sys
from typing import Any

from . import database

METRICS_TOKEN = "/etc/appliance/secrets/metrics/prometheus.token"
RESERVATIONS_CONFIG = "/etc/appliance/reservations_config.py"
RESERVATIONS_PORT = 10101
RESERVATIONS_USER = "resvsvc"


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _extend(c: Any, cls: str, name: str, items: list) -> None:
    """Append services/roles not there yet (by name): the fragment may be loaded twice."""
    section = getattr(c, cls)
    current = list(section[name]) if name in section else []
    have = {x.get("name") for x in current if isinstance(x, dict)}
    section[name] = current + [x for x in items if x["name"] not in have]


def services_and_roles(metrics_token: str = METRICS_TOKEN,
                       reservations_config: str = RESERVATIONS_CONFIG,
                       python: str = sys.executable) -> tuple[list, list, dict]:
    """(services, roles, custom_scopes) for what is enabled (pure apart from reading the files)."""
    services, roles, scopes = [], [], {}
    if os.path.exists(metrics_token):
        services.append({"name": "prometheus", "api_token": _read(metrics_token)})
        roles.append({"name": "metrics-reader", "description": "May read /hub/metrics, nothing else",
                      "scopes": ["read:metrics"], "services": ["prometheus"]})
    if os.path.exists(reservations_config):
        from ..reservations.policy import load_policy

        staff = sorted(load_policy(reservations_config).staff)
        scopes["custom:reservations"] = {
            "description": "Create, list, extend and delete Slurm reservations within the "
            "reservation policy (reservation service)"}
        services.append({
            "name": "reservations", "display": True, "oauth_no_confirm": True,
            "url": f"http://127.0.0.1:{RESERVATIONS_PORT}",
            "command": [python, "-m", "appliance.reservations.service"],
            "user": RESERVATIONS_USER, "cwd": "/",
            "environment": {"APPLIANCE_RESERVATIONS_CONFIG": reservations_config},
            "oauth_client_allowed_scopes": ["custom:reservations"],
        })
        roles.append({"name": "reservation-staff",
                      "description": "Staff of the reservation service (reservation policy)",
                      "scopes": ["custom:reservations", "access:services!service=reservations"],
                      "users": staff})
    return services, roles, scopes


def configure(c: Any) -> None:
    c.JupyterHub.db_url = url = database.db_url()
    # bounded waits on an unreachable PostgreSQL (database.engine_kwargs); a site's own win
    site_kwargs = dict(c.JupyterHub.db_kwargs) if "db_kwargs" in c.JupyterHub else {}
    c.JupyterHub.db_kwargs = {**database.engine_kwargs(url), **site_kwargs}
    database.explain_unavailable_database()
    # jupyterhub_active_users (distinct users per 24h/7d/30d, the users-per-day picture) is
    # recomputed hourly by default; every minute costs one small query.
    if "active_users_update_interval" not in c.PeriodicMetricsCollector:
        c.PeriodicMetricsCollector.active_users_update_interval = 60
    services, roles, scopes = services_and_roles()
    _extend(c, "JupyterHub", "services", services)
    _extend(c, "JupyterHub", "load_roles", roles)
    if scopes:
        merged = dict(c.JupyterHub.custom_scopes) if "custom_scopes" in c.JupyterHub else {}
        merged.update(scopes)
        c.JupyterHub.custom_scopes = merged
    install_collectors()


def install_collectors(bridge_socket: str = "/run/appliance/bridge.sock") -> None:
    from ..credd_bridge.client import BridgeClient
    from . import metrics, registry

    client = BridgeClient(bridge_socket, timeout=5)
    metrics.install(watchers=registry.latest_watchers, bridge_fetch=client.states)
