"""``appliance-worker-reaper``: removes Slurm Dask worker jobs whose notebook has ended.

A notebook's Dask cluster lives in its kernel: ``cluster.close()`` and the kernel's exit cancel
the worker jobs, and a running worker exits when it loses its scheduler (at the latest after
``death-timeout``). What neither covers: worker jobs still *queued* when the notebook ends (and
any worker left behind by a killed kernel or a crashed node). On HTCondor the worker jobs carry a
lease their kernel renews and the batch schedd removes them itself (appliance/notebook/job_lease.py);
Slurm has no such mechanism, so this daemon does it.

The site's Dask configuration names every Slurm worker job a notebook submits ``dask-nb<job id of
the notebook>``. Every ``interval`` seconds, one ``squeue --json`` for all users: a job so named is
cancelled when the notebook job it names is not running with the same owner. The name is set by
the job's owner, so this only ever removes the owner's own jobs, the ones she tied to that
notebook (a name pointing at another user's notebook protects nothing: the owners differ). One
snapshot holds workers and notebooks, so a worker submitted meanwhile is never judged against an
older list of notebooks. It runs as root, a Slurm operator, like the hub's own ``scancel``.

Options (each also from the environment, ``APPLIANCE_REAPER_<OPTION>``): see ``--help``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import subprocess
import threading
from dataclasses import dataclass
from typing import Iterable, Optional

log = logging.getLogger("appliance.worker_reaper")

SLURM_WORKER_RE = re.compile(r"^dask-nb(\d+)$")
LIVE_SLURM = {"PENDING", "RUNNING", "SUSPENDED", "CONFIGURING", "REQUEUED", "RESIZING"}


@dataclass(frozen=True)
class TaggedJob:
    job_id: str
    owner: str
    notebook: str  # the notebook's job id


def orphans(workers: Iterable[TaggedJob], running: set[tuple[str, str]]) -> list[TaggedJob]:
    """Tagged jobs whose notebook (owner, id) is not among the running ones."""
    return [w for w in workers if (w.owner, w.notebook) not in running]


# ------------------------------------------------------------------------------------ Slurm
def _state(job: dict) -> str:
    st = job.get("job_state")
    if isinstance(st, list):
        st = st[0] if st else ""
    return str(st or "").upper()


def slurm_snapshot(squeue_json: dict) -> tuple[list[TaggedJob], set[tuple[str, str]]]:
    """(tagged live worker jobs, running (user, job id)) from one ``squeue --json`` answer."""
    workers, running = [], set()
    for job in squeue_json.get("jobs", []):
        jid, user, state = str(job.get("job_id", "")), str(job.get("user_name", "")), _state(job)
        if state == "RUNNING":
            running.add((user, jid))
        m = SLURM_WORKER_RE.match(str(job.get("name", "")))
        if m and state in LIVE_SLURM:
            workers.append(TaggedJob(jid, user, m.group(1)))
    return workers, running


class SlurmSide:
    def __init__(self, squeue: str, scancel: str, timeout: float = 30):
        self.squeue, self.scancel, self.timeout = squeue, scancel, timeout

    def pass_once(self) -> list[TaggedJob]:
        out = subprocess.run([self.squeue, "--json"], capture_output=True, text=True,
                             timeout=self.timeout, check=True).stdout
        dead = orphans(*slurm_snapshot(json.loads(out)))
        if dead:
            subprocess.run([self.scancel, *[w.job_id for w in dead]], capture_output=True,
                           text=True, timeout=self.timeout)
        return dead


# ------------------------------------------------------------------------------------- main
def _env(name: str, default: str = "") -> str:
    return os.environ.get("APPLIANCE_REAPER_" + name, default)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="appliance-worker-reaper", description=__doc__.split("\n")[0])
    ap.add_argument("--interval", type=float, default=float(_env("INTERVAL", "10")),
                    help="seconds between passes (default 10)")
    ap.add_argument("--slurm", choices=("yes", "no"), default=_env("SLURM", "no"))
    ap.add_argument("--squeue", default=_env("SQUEUE", "/usr/bin/squeue"))
    ap.add_argument("--scancel", default=_env("SCANCEL", "/usr/bin/scancel"))
    ap.add_argument("--once", action="store_true", help="one pass, then exit")
    ap.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))
    return ap


def run(sides: list, interval: float, stop: threading.Event, once: bool = False) -> None:
    while not stop.is_set():
        for side in sides:
            try:
                for w in side.pass_once():
                    log.info("removed job %s of %s: notebook %s has ended", w.job_id, w.owner, w.notebook)
            except Exception as e:  # a scheduler down: log, try again next pass
                log.warning("%s pass failed: %s", type(side).__name__, e)
        if once:
            return
        stop.wait(interval)


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sides: list = []
    if args.slurm == "yes":
        sides.append(SlurmSide(args.squeue, args.scancel))
    if not sides:
        log.warning("nothing to watch (Slurm off): idle")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("watching %s every %.0f s", ", ".join(type(s).__name__ for s in sides) or "nothing",
             args.interval)
    run(sides, args.interval, stop, once=args.once)


if __name__ == "__main__":
    main()
