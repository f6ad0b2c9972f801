"""``SupervisedProxy``: configurable-http-proxy as supervisor runs it, with its routes watched.

CHP keeps its routing table in memory: when it restarts (a crash, ``supervisorctl restart chp``)
every user's route is gone until the hub puts them back. JupyterHub does that only when it started
the proxy itself (``should_start``) or at its ``last_activity_interval`` pass (30 s here, a costly
pass over every user). This proxy class asks CHP for its routes every ``route_check_interval``
seconds (one small API call) and, when the hub's own route is missing - CHP has restarted with
an empty table - runs JupyterHub's ``check_routes`` at once, which adds every missing route.
The fault suite (tests/integration/test_zy_faults.py) measures routes back within 10 s.
"""

from __future__ import annotations

from jupyterhub.proxy import ConfigurableHTTPProxy
from tornado.ioloop import PeriodicCallback
from traitlets import Float, default


class SupervisedProxy(ConfigurableHTTPProxy):
    route_check_interval = Float(
        2.0, min=0,
        help="Seconds between the hub's checks that CHP (run by supervisor) still has its routes; "
        "after a CHP restart every route is added back at the next check. 0: only JupyterHub's "
        "own pass every last_activity_interval.",
    ).tag(config=True)

    @default("should_start")
    def _supervised(self):
        return False  # supervisor starts and restarts CHP (supervisor/appliance.conf)

    _watch = None

    async def check_routes(self, user_dict, service_dict, routes=None):
        """JupyterHub's check (at hub start and every last_activity_interval); the first one
        also starts the watch."""
        if self._watch is None and self.route_check_interval:
            self._watch = PeriodicCallback(self.routes_lost, 1e3 * self.route_check_interval)
            self._watch.start()
        return await super().check_routes(user_dict, service_dict, routes)

    async def routes_lost(self) -> bool:
        """One check: True if CHP had lost its routes (they are being added back)."""
        try:
            routes = await self.get_all_routes()
        except Exception as e:  # noqa: BLE001 - CHP restarting: the next check sees it
            self.log.debug("route check: proxy not answering (%s)", e)
            return False
        if self.app is None or self.app.hub.routespec in routes:
            return False
        self.log.warning("The proxy has lost its routes (it restarted): adding them back")
        await super().check_routes(self.app.users, self.app._service_map, routes)
        return True
