"""The hub's public origin and the per-user origins under it (issue 9, hole 1; stdlib only).

The hub answers at ``https://<hub host>[:port]``; each user's server at
``https://<user>.<hub host>[:port]`` (JupyterHub's ``subdomain_host``, its default ``idna``
subdomain hook), so a page one user serves is never on the hub's origin nor on another user's.
One setting decides it for the hub, nginx and the demo certificate:

* ``APPLIANCE_HUB_HOST`` (default ``hub.localhost``): the hub's host name. A site sets its own
  (e.g. ``jupyter.example.org``) with a wildcard DNS record ``*.jupyter.example.org`` and a
  certificate covering both names (docs/admin.md). It needs at least two labels: browsers and
  OpenSSL refuse a wildcard directly under a top-level name (``*.localhost``), so the demo's
  hub is ``hub.localhost`` and its users ``<user>.hub.localhost``, which browsers resolve to
  loopback themselves (RFC 6761).
* ``APPLIANCE_PUBLIC_HTTPS_PORT`` (default 8443): the port browsers use (not named when 443).

``image/bin/appliance-nginx-conf`` checks the same variable with the same rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

DEFAULT_HOST = "hub.localhost"
DEFAULT_PORT = 8443
# Lower-case DNS labels, at least two, and room for a user's label in front (253 in all).
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
HOST_RE = re.compile(rf"^{_LABEL}(\.{_LABEL})+$")
MAX_HOST = 190


@dataclass(frozen=True)
class PublicOrigin:
    host: str
    port: int

    @property
    def url(self) -> str:
        """``https://host[:port]``: JupyterHub's ``subdomain_host``."""
        return f"https://{self.host}" + ("" if self.port == 443 else f":{self.port}")


def check_host(host: str) -> str:
    """The host name, or ValueError naming ``APPLIANCE_HUB_HOST``."""
    if len(host) > MAX_HOST or not HOST_RE.match(host):
        raise ValueError(
            f"APPLIANCE_HUB_HOST must be a lower-case DNS name of at least two labels, at most "
            f"{MAX_HOST} characters, e.g. jupyter.example.org (got {host!r}); user servers are "
            f"served at <user>.<that name>")
    return host


def from_env(env: Mapping[str, str]) -> PublicOrigin:
    host = check_host(env.get("APPLIANCE_HUB_HOST") or DEFAULT_HOST)
    raw = env.get("APPLIANCE_PUBLIC_HTTPS_PORT") or str(DEFAULT_PORT)
    if not (raw.isdigit() and 1 <= int(raw) <= 65535):
        raise ValueError(f"APPLIANCE_PUBLIC_HTTPS_PORT must be a whole number from 1 to 65535 "
                         f"(got {raw!r})")
    return PublicOrigin(host, int(raw))
