"""The schedulers and job watchers of one hub: one of each per backend, shared by all spawners.

Every spawner of a hub must use the same :class:`~appliance.hub.scheduler.base.Scheduler` and the
same ``JobWatcher`` per backend (one status query per interval for all users). The registry that
holds them lives in JupyterHub's settings dict, the one object every ``User`` of a hub shares
(``user.settings``), not in a module global: a second hub in the same process (a test, a simulated
restart) gets a registry of its own, and :meth:`Registry.close` stops its watchers.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any, Mapping, Optional, Union

from traitlets.utils.importstring import import_item

from ..options import OptionsError
from . import metrics
from .availability import Availability
from .scheduler.base import Scheduler
from .scheduler.watcher import JobWatcher

#: key of the hub's registry in JupyterHub's settings dict
SETTINGS_KEY = "appliance_batch_registry"


class Registry:
    """Schedulers and watchers by backend name, created on first use."""

    def __init__(self, classes: Mapping[str, Union[str, type]], *, config: Any = None,
                 log: Optional[logging.Logger] = None):
        self.classes = dict(classes)  # backend name -> Scheduler class or import string
        self.config = config
        self.log = log or logging.getLogger(__name__)
        self._schedulers: dict[str, Scheduler] = {}
        self._watchers: dict[str, JobWatcher] = {}
        self._availability: Optional[Availability] = None

    def scheduler(self, name: str) -> Scheduler:
        """The backend's scheduler; ``OptionsError`` (field ``backend``) if it is not enabled."""
        sched = self._schedulers.get(name)
        if sched is None:
            cls = self.classes.get(name)
            if cls is None:
                raise OptionsError("backend", f"{name!r} is not enabled on this hub")
            if isinstance(cls, str):
                cls = import_item(cls)
            sched = self._schedulers[name] = cls(config=self.config, log=self.log)
        return sched

    def watcher(self, name: str) -> JobWatcher:
        """The backend's watcher, running (started on first use)."""
        watcher = self._watchers.get(name)
        if watcher is None:
            watcher = self._watchers[name] = JobWatcher(
                self.scheduler(name), log=self.log,
                on_query=lambda seconds, ok: metrics.observe_query(name, "status", seconds, ok))
        watcher.start()
        return watcher

    def availability(self) -> Availability:
        """The hub's shared availability views (``appliance.hub.availability``)."""
        if self._availability is None:
            self._availability = Availability(self, config=self.config, log=self.log)
        return self._availability

    def watchers(self) -> dict[str, JobWatcher]:
        """The watchers started so far, by backend (for the metrics collectors)."""
        return dict(self._watchers)

    def running_watcher(self, name: str) -> Optional[JobWatcher]:
        """The backend's watcher if one was started, else None (starts nothing)."""
        return self._watchers.get(name)

    def close(self) -> None:
        """Stop every watcher and forget every scheduler."""
        for watcher in self._watchers.values():
            watcher.stop()
        self._watchers.clear()
        self._schedulers.clear()


def hub_registry(settings: dict, classes: Mapping[str, Union[str, type]], *, config: Any = None,
                 log: Optional[logging.Logger] = None) -> Registry:
    """The registry of the hub whose settings dict this is (made on first use)."""
    global _latest
    registry = settings.get(SETTINGS_KEY)
    if registry is None:
        registry = settings[SETTINGS_KEY] = Registry(classes, config=config, log=log)
        _latest = weakref.ref(registry)
    return registry


# The newest hub registry of this process, weakly held, for the scrape-time metrics collectors
# (prometheus_client's registry is process-wide too); a second hub in a test replaces it.
_latest: Optional["weakref.ref[Registry]"] = None


def latest_watchers() -> dict[str, JobWatcher]:
    """The watchers of the newest hub registry of this process ({} if none)."""
    registry = _latest() if _latest is not None else None
    return registry.watchers() if registry is not None else {}
