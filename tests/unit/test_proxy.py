"""SupervisedProxy: after a CHP restart (an empty routing table) the hub adds every route back at
its next route check, without waiting for JupyterHub's last_activity pass."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from jupyterhub.proxy import Proxy

from appliance.hub.proxy import SupervisedProxy

class TableProxy(SupervisedProxy):
    """CHP's API replaced by a dict (or an error while CHP restarts)."""

    table: dict | Exception = {}

    async def get_all_routes(self):
        if isinstance(self.table, Exception):
            raise self.table
        return dict(self.table)


@pytest.fixture
def proxy(monkeypatch):
    checked = []

    async def check_routes(self, user_dict, service_dict, routes=None):
        checked.append((user_dict, service_dict, routes))

    monkeypatch.setattr(Proxy, "check_routes", check_routes)
    p = TableProxy(auth_token="t", route_check_interval=0)
    p.app = SimpleNamespace(hub=SimpleNamespace(routespec="/"), users={"alice": "u"},
                            _service_map={"s": "x"})
    p.checked = checked
    return p


@pytest.mark.asyncio
async def test_routes_in_place_nothing_to_do(proxy):
    proxy.table = {"/": {}, "/user/alice/": {}}
    assert await proxy.routes_lost() is False and proxy.checked == []


@pytest.mark.asyncio
async def test_an_empty_table_after_a_restart_gets_every_route_back(proxy):
    proxy.table = {}
    assert await proxy.routes_lost() is True
    assert proxy.checked == [({"alice": "u"}, {"s": "x"}, {})]


@pytest.mark.asyncio
async def test_a_proxy_still_restarting_is_checked_again_later(proxy):
    proxy.table = ConnectionRefusedError("connect refused")
    assert await proxy.routes_lost() is False and proxy.checked == []


def test_not_started_by_the_hub():
    assert SupervisedProxy(auth_token="t").should_start is False
    assert SupervisedProxy(auth_token="t").route_check_interval == 2.0
