"""Slurm, user side: run ``sbatch`` with the hub-built argv; munge vouches for the user's uid."""

from __future__ import annotations

import os
import pwd
import re
import subprocess
from typing import Optional

from ..names import SLURM_JOB_ID_RE
from . import SubmitError


def minimal_env(slurm_conf: Optional[str] = None) -> dict[str, str]:
    """The whole environment of a Slurm command: PATH, LANG, HOME/USER/LOGNAME, SLURM_CONF."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    try:
        pw = pwd.getpwuid(os.getuid())
        env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
    except KeyError:
        pass
    if slurm_conf:
        env["SLURM_CONF"] = slurm_conf
    return env


def run_sbatch(submit: dict) -> str:
    """Submit-helper side (runs AS THE USER): run sbatch with the hub-built argv, return the job id.

    ``submit`` = ``{"sbatch": "/usr/bin/sbatch", "slurm_conf": "" | path, "argv": [...],
    "timeout": seconds}``; the helper sets ``sbatch`` and ``slurm_conf`` from its root-owned
    config (``appliance.userside.siteconfig``), the hub sends only ``argv``. The environment is minimal (PATH, HOME, USER, LANG, optional SLURM_CONF):
    no secrets and no SBATCH_* variables reach sbatch. Raises SubmitError with sbatch's message.
    """
    argv = submit.get("argv")
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv) or not argv:
        raise SubmitError("bad submit request: argv must be a list of strings")
    if any("\0" in a for a in argv):
        raise SubmitError("bad submit request: NUL in argv")
    sbatch = submit.get("sbatch") or "/usr/bin/sbatch"
    if not os.path.isabs(sbatch):
        raise SubmitError("bad submit request: sbatch must be an absolute path")
    try:
        proc = subprocess.run(
            [sbatch, *argv],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=float(submit.get("timeout") or 60),
            env=minimal_env(submit.get("slurm_conf") or None),
            close_fds=True,
        )
    except subprocess.TimeoutExpired:
        raise SubmitError("sbatch did not answer in time (is slurmctld reachable?)") from None
    except OSError as e:
        raise SubmitError(f"cannot run sbatch: {e}") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        msgs = [re.sub(r"^sbatch: error: ", "", ln) for ln in lines if "error" in ln.lower()] or lines
        raise SubmitError("; ".join(msgs)[-1000:] or f"sbatch failed with exit code {proc.returncode}")
    # --parsable: "jobid" or "jobid;cluster"
    first = (proc.stdout.strip().splitlines() or [""])[-1]
    job_id = first.split(";", 1)[0].strip()
    if not SLURM_JOB_ID_RE.match(job_id):
        raise SubmitError(f"unexpected sbatch output: {proc.stdout.strip()[:200]!r}")
    return job_id
