"""``appliance-worker-reaper``: removes Dask worker jobs whose notebook has ended.

A notebook's Dask cluster lives in its kernel: ``cluster.close()`` and the kernel's exit cancel
the worker jobs, and a running worker exits when it loses its scheduler (at the latest after
``death-timeout``). What neither covers: worker jobs still *queued* when the notebook ends (and
any worker left behind by a killed kernel or a crashed node). Those are this daemon's job.

The site's Dask configuration (minisite/dask/appliance.yaml) tags every worker job a notebook
submits with the notebook's own batch job: HTCondor ``JbaNotebookJob = "<GlobalJobId>"``, Slurm
the job name ``dask-nb<job id>``. Every ``interval`` seconds, one query per schedd / one
``squeue`` for all users: a tagged job is removed when the notebook job it names is not running
with the same owner. A tag is set by the job's owner, so it only ever removes the owner's own jobs,
the ones they asked to be tied to that notebook. Queries are ordered so that a worker submitted
during a pass is never judged against an older list of notebooks (workers first, then notebooks;
Slurm: one snapshot).

Identities: HTCondor as the hub's service identity (IDTOKEN, a QUEUE_SUPER_USER of the worker
schedds); Slurm as root (a Slurm operator), like the hub's own ``scancel``.

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
# HTCondor JobStatus: 1 idle, 2 running, 5 held, 6 transferring, 7 suspended (3/4: removed/done).
HTCONDOR_WORKER_CONSTRAINT = ('JbaNotebookJob =!= undefined && JbaNotebookJob != "" '
                              "&& JobStatus =!= 3 && JobStatus =!= 4")
HTCONDOR_NOTEBOOK_CONSTRAINT = "JobStatus == 2"
REASON = "its notebook has ended (appliance worker reaper)"


@dataclass(frozen=True)
class TaggedJob:
    job_id: str    # HTCondor "cluster.proc", Slurm "123"
    owner: str
    notebook: str  # HTCondor GlobalJobId, Slurm job id


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


# ---------------------------------------------------------------------------------- HTCondor
def parse_schedd(spec: str) -> tuple[str, Optional[str]]:
    """``SCHEDD[@COLLECTOR]`` -> (schedd name, collector or None)."""
    name, _, coll = spec.partition("@")
    return name, coll or None


class HTCondorSide:
    def __init__(self, notebook_schedd: str, worker_schedds: list[str]):
        self.notebook_schedd = parse_schedd(notebook_schedd)
        self.worker_schedds = [parse_schedd(s) for s in worker_schedds]
        import htcondor2

        self.htc = htcondor2

    def _schedd(self, name: str, collector: Optional[str]):
        coll = self.htc.Collector(collector) if collector else self.htc.Collector()
        return self.htc.Schedd(coll.locate(self.htc.DaemonType.Schedd, name))

    def pass_once(self) -> list[TaggedJob]:
        found = []  # (schedd, [TaggedJob])
        for name, coll in self.worker_schedds:
            schedd = self._schedd(name, coll)
            ads = schedd.query(constraint=HTCONDOR_WORKER_CONSTRAINT,
                               projection=["ClusterId", "ProcId", "Owner", "JbaNotebookJob"])
            jobs = [TaggedJob(f"{int(a['ClusterId'])}.{int(a['ProcId'])}", str(a.get("Owner", "")),
                              str(a.get("JbaNotebookJob", ""))) for a in ads]
            if jobs:
                found.append((schedd, jobs))
        if not found:
            return []
        nb = self._schedd(*self.notebook_schedd).query(
            constraint=HTCONDOR_NOTEBOOK_CONSTRAINT, projection=["GlobalJobId", "Owner"])
        running = {(str(a.get("Owner", "")), str(a.get("GlobalJobId", ""))) for a in nb}
        removed = []
        for schedd, jobs in found:
            dead = orphans(jobs, running)
            if dead:
                schedd.act(self.htc.JobAction.Remove, [w.job_id for w in dead], reason=REASON)
                removed += dead
        return removed


# ------------------------------------------------------------------------------------- main
def _env(name: str, default: str = "") -> str:
    return os.environ.get("APPLIANCE_REAPER_" + name, default)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="appliance-worker-reaper", description=__doc__.split("\n")[0])
    ap.add_argument("--interval", type=float, default=float(_env("INTERVAL", "10")),
                    help="seconds between passes (default 10)")
    ap.add_argument("--htcondor-notebook-schedd", default=_env("HTCONDOR_NOTEBOOK_SCHEDD"),
                    help="SCHEDD[@COLLECTOR] that runs the notebooks ('' = no HTCondor)")
    ap.add_argument("--htcondor-worker-schedds", default=_env("HTCONDOR_WORKER_SCHEDDS"),
                    help="comma list of SCHEDD[@COLLECTOR] that notebooks submit workers to")
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
    if args.htcondor_notebook_schedd and args.htcondor_worker_schedds:
        sides.append(HTCondorSide(args.htcondor_notebook_schedd,
                                  [s.strip() for s in args.htcondor_worker_schedds.split(",") if s.strip()]))
    if args.slurm == "yes":
        sides.append(SlurmSide(args.squeue, args.scancel))
    if not sides:
        log.warning("nothing to watch (no HTCondor schedds, Slurm off): idle")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("watching %s every %.0f s", ", ".join(type(s).__name__ for s in sides) or "nothing",
             args.interval)
    run(sides, args.interval, stop, once=args.once)


if __name__ == "__main__":
    main()
