"""Dask scheduler preload: a lease on the kernel's HTCondor worker jobs, renewed while it lives.

The site's Dask configuration gives every HTCondor worker job ``JbaDaskKernel = "<host>:<pid>:<t>"``
(this kernel, from ``APPLIANCE_DASK_KERNEL``, set here), ``JbaLeaseExpiry = QDate + LEASE`` and
``periodic_remove = time() > JbaLeaseExpiry``. While a Dask scheduler runs in the kernel, this
preload moves the expiry of the kernel's jobs forward every ``RENEW`` seconds with
``condor_qedit``, as the user (her Kerberos ticket, which the node keeps renewed). When the kernel
or the whole notebook ends, renewals stop and the batch schedd removes the jobs itself, queued or
running, within ``LEASE`` + the schedd's ``PERIODIC_EXPR_INTERVAL`` (30 + 15 s in the mini site).
Nothing with more rights than the user is involved: the hub's identity may not write to the batch
schedd (docs/security.md).

Runs only in an HTCondor job (``_CONDOR_JOB_AD``); a failed renewal is logged and retried at the
next tick (the lease allows three to fail in a row).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import time

logger = logging.getLogger("appliance_notebook.job_lease")

KERNEL_VAR = "APPLIANCE_DASK_KERNEL"
LEASE = 30   # seconds; the same number is in the site's Dask configuration
RENEW = 8

def kernel_tag() -> str:
    tag = os.environ.get(KERNEL_VAR)
    if not tag:
        tag = f"{socket.getfqdn()}:{os.getpid()}:{int(time.time())}"
        os.environ[KERNEL_VAR] = tag  # condor_submit, run by dask-jobqueue from here, sees it
    return tag


def qedit_argv(tag: str, now: float, lease: int = LEASE) -> list[str]:
    """The renewal: this kernel's live Dask worker jobs get a new expiry (pure; tested)."""
    if '"' in tag or "\\" in tag:
        raise ValueError("bad kernel tag")
    constraint = (f'JbaDaskKernel == "{tag}" && JbaDaskWorker =?= true '
                  "&& JobStatus =!= 3 && JobStatus =!= 4")
    return ["condor_qedit", "-constraint", constraint, "JbaLeaseExpiry", str(int(now) + lease)]


def no_job_matched(stderr: str) -> bool:
    """condor_qedit's answer when the constraint matches no job (the cluster has none yet, or all
    are gone): not a failure. A connection or authentication failure reads differently."""
    return "by constraint" in stderr and "No attributes were set" in stderr


def _alive(scheduler) -> bool:
    return getattr(getattr(scheduler, "status", None), "name", "running") not in (
        "closing", "closed", "failed", "closing_gracefully")


async def _renew_while_alive(scheduler, tag: str) -> None:
    """Renew every RENEW s while this scheduler lives (each scheduler of the kernel runs its own
    loop of renewals for the kernel's tag: duplicates are harmless, and none depends on another
    cluster's event loop)."""
    qedit = shutil.which("condor_qedit") or "condor_qedit"
    while _alive(scheduler):
        argv = qedit_argv(tag, time.time())
        argv[0] = qedit
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
            _, err = await asyncio.wait_for(proc.communicate(), timeout=RENEW * 2)
            if proc.returncode and not no_job_matched(err.decode(errors="replace")):
                logger.warning("lease renewal failed: %s", err.decode(errors="replace").strip()[-300:])
        except Exception as e:
            logger.warning("lease renewal failed: %s", e)
        await asyncio.sleep(RENEW)


def dask_setup(scheduler) -> None:
    if os.environ.get("_CONDOR_JOB_AD"):
        scheduler._appliance_lease = asyncio.ensure_future(_renew_while_alive(scheduler, kernel_tag()))


# Set the tag as soon as the module is imported (the scheduler's __init__), before any job exists.
if os.environ.get("_CONDOR_JOB_AD"):
    kernel_tag()
