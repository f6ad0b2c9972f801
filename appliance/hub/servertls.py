"""The spawner's half of internal TLS (appliance.internaltls): issue a server's certificate, hand
it to the job, and pin it before the route is added.

* ``issue``: a key and certificate for the user's own host (``<user>.<hub host>``, what CHP checks)
  and the node names (what JupyterHub's readiness check needs), from the notebooks CA;
* ``env``: the PEMs for the job's private env file (never a job ad or a command line); the node
  launcher writes them to 0600 files and points ``JUPYTERHUB_SSL_*`` at them;
* ``check``: connects to the reported host and port with the appliance's client certificate and
  accepts only the very certificate issued for this spawn (SHA-256); anything else (another user's
  process on the port, no TLS, a bad handshake) fails the spawn, logged as "refused certificate".
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import logging
import ssl
from typing import Callable, Optional

from appliance import internaltls

from .job import SpawnError

ENV_KEY, ENV_CERT, ENV_CA = "APPLIANCE_TLS_KEY", "APPLIANCE_TLS_CERT", "APPLIANCE_TLS_CLIENT_CA"

_authorities: dict[str, internaltls.Authority] = {}


def authority(root: str) -> internaltls.Authority:
    """The notebooks CA of ``root``, loaded once per hub process."""
    if root not in _authorities:
        _authorities[root] = internaltls.Authority(internaltls.Paths(root))
    return _authorities[root]


class ServerTLS:
    def __init__(self, root: str, nodes: list[str], log: logging.Logger,
                 clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(
                     datetime.timezone.utc)):
        self.ca = authority(root)
        self.nodes = list(nodes)
        self.log = log
        self.clock = clock

    def issue(self, user_host: str, days: float) -> internaltls.IssuedServer:
        return self.ca.issue(user_host, self.nodes, self.clock(), days)

    def env(self, issued: internaltls.IssuedServer) -> dict[str, str]:
        return {ENV_KEY: issued.key_pem, ENV_CERT: issued.cert_pem, ENV_CA: self.ca.cluster_ca_pem}

    async def check(self, host: str, port: int, issued: internaltls.IssuedServer, who: str,
                    timeout: float) -> None:
        """Return if the server at host:port shows the certificate issued for it; else raise."""
        seen: Optional[str] = None
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=self.ca.client_context(),
                                        server_hostname=host), timeout=timeout)
            try:
                der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
                seen = hashlib.sha256(der).hexdigest()
            finally:
                writer.close()
            problem = None if seen == issued.sha256 else \
                f"its certificate (SHA-256 {seen[:16]}...) is not the one issued for it"
        except (ssl.SSLError, ssl.CertificateError) as e:
            problem = f"TLS handshake failed: {getattr(e, 'reason', None) or e}"
        except (OSError, asyncio.TimeoutError) as e:
            problem = f"no TLS answer: {e or type(e).__name__}"
        if problem is None:
            return
        self.log.warning("%s: refused certificate from %s:%s: %s; not routed", who, host, port,
                         problem)
        raise SpawnError(f"The server on {host}:{port} did not prove it is yours ({problem}): "
                         "another user's process may hold that port. Not routed; try again.")
