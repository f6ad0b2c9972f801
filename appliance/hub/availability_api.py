"""``GET /hub/api/batch/availability``: live availability for the CURRENT user (login required).

Query parameters ``cpus``, ``memory_gb``, ``gpus``: the job size the numbers are for (defaults and
bounds as in user_options; a bad value is a 400 naming the field). The answer follows
``availability.schema.json`` (shipped beside this module) and comes from the hub's shared views
(``appliance.hub.availability``): asking costs no scheduler query of its own. When a scheduler
could not be queried, its entry says so (``ok`` false, ``error``, the age of what is shown);
spawning does not depend on it.
"""

from __future__ import annotations

import json
import os

from tornado import web

from ..options import OptionsError
from .availability import availability_for
from .handlers import _APIHandler

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "availability.schema.json")


def load_schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return json.load(f)


class AvailabilityHandler(_APIHandler):
    @web.authenticated
    async def get(self):
        user = self.current_user
        if user is None or not hasattr(user, "spawners"):
            raise web.HTTPError(403, "only users see availability")
        spawner = user.spawners[""]
        args = {k: self.get_argument(k, "") for k in ("cpus", "memory_gb", "gpus")}
        try:
            view = await availability_for(spawner, args)
        except OptionsError as e:
            self.set_status(400)
            self.set_header("Content-Type", "application/json")
            self.write(json.dumps({"status": 400, "field": e.field, "message": e.message}))
            return
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.write(json.dumps(view))


class AvailabilitySchemaHandler(_APIHandler):
    """``GET /hub/api/batch/availability/schema``: the answer's JSON schema."""

    @web.authenticated
    async def get(self):
        self.set_header("Content-Type", "application/schema+json")
        self.write(json.dumps(load_schema()))


availability_handlers = [
    (r"/api/batch/availability", AvailabilityHandler),
    (r"/api/batch/availability/schema", AvailabilitySchemaHandler),
]
