"""The sbatch command line of a notebook job, from validated values only (a pure builder).

A list of arguments (no shell anywhere), each option glued to its value (``--partition=jhub``) so
no value can become an option; the batch script is the fixed file ``slurm_job.sh`` next to this
module; secrets never appear (they travel in the private env file).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Iterable

from ....names import SLURM_NAME_RE
from ....options import check_constraint
from ....userside import SubmitError
from ..base import SubmitRequest

JOB_SCRIPT = str(Path(__file__).with_name("slurm_job.sh"))
SAFE_PATH_RE = re.compile(r"^/[A-Za-z0-9_.+@%/ -]*\Z")  # absolute, printable, no ':' tricks needed


def _check_path(path: str, what: str) -> str:
    if not isinstance(path, str) or not SAFE_PATH_RE.match(path) or "/../" in path + "/":
        raise SubmitError(f"{what} {path!r} is not an acceptable absolute path")
    return path


def _slurm_minutes(seconds: int) -> int:
    return max(1, math.ceil(int(seconds) / 60))


def build_sbatch_argv(
    request: SubmitRequest,
    *,
    partition: str,
    job_name: str = "jupyterhub",
    launcher: str = "/usr/local/bin/appliance-launch",
    job_script: str = JOB_SCRIPT,
    extra_args: Iterable[str] = (),
) -> list[str]:
    """The sbatch arguments (after the sbatch path) for one notebook job, validated values only.

    Every option is one ``--name=value`` element, so a value can never be taken for an option,
    and there is no shell anywhere. The positional part is the fixed job script, then the launcher
    and its arguments (env file path and port range, which sbatch hands to the script).
    """
    o = request.options
    if not SLURM_NAME_RE.match(partition or ""):
        raise SubmitError(f"bad partition name {partition!r}")
    if not SLURM_NAME_RE.match(job_name):
        raise SubmitError(f"bad job name {job_name!r}")
    cpus, gpus = o.cpus, o.gpus
    if not (isinstance(cpus, int) and not isinstance(cpus, bool) and 1 <= cpus <= 4096):
        raise SubmitError(f"bad cpus {cpus!r}")
    if not (isinstance(gpus, int) and not isinstance(gpus, bool) and 0 <= gpus <= 64):
        raise SubmitError(f"bad gpus {gpus!r}")
    mem = float(o.memory_gb)
    if not (0 < mem <= 65536) or math.isnan(mem):
        raise SubmitError(f"bad memory {o.memory_gb!r}")
    runtime = int(request.runtime_seconds)
    if runtime <= 0:
        raise SubmitError("runtime must be positive")
    home = _check_path(request.home, "home directory")
    env_file = _check_path(request.env_file, "env file")
    if not env_file.startswith(home.rstrip("/") + "/"):
        raise SubmitError("the env file must be in the user's home directory")
    out_dir = os.path.dirname(env_file)
    launcher = _check_path(launcher, "launcher")
    lo, hi = request.port_range
    if not (isinstance(lo, int) and isinstance(hi, int) and 1024 <= lo <= hi <= 65535):
        raise SubmitError(f"bad port range {request.port_range!r}")
    comment = re.sub(r"[^A-Za-z0-9_.@+-]", "_", request.job_name or "")[:128]

    argv = [
        "--parsable",
        "--no-requeue",
        f"--job-name={job_name}",
        f"--partition={partition}",
        f"--time={_slurm_minutes(runtime)}",
        "--nodes=1",
        "--ntasks=1",
        f"--cpus-per-task={cpus}",
        f"--mem={max(1, math.ceil(mem * 1024))}M",
        # sbatch expands %j/%x/%u in file names: double the '%' of a literal path.
        f"--output={out_dir.replace('%', '%%')}/slurm-%j.log",
        f"--chdir={home}",
        "--export=NIL",
        "--propagate=NONE",
    ]
    if comment:
        argv.append(f"--comment={comment}")
    if gpus:
        argv.append(f"--gres=gpu:{gpus}")
    if o.reservation:
        if not SLURM_NAME_RE.match(o.reservation):
            raise SubmitError(f"bad reservation name {o.reservation!r}")
        argv.append(f"--reservation={o.reservation}")
    if o.constraint:
        check_constraint(o.constraint)
        argv.append(f"--constraint={o.constraint.replace(' ', '')}")
    for a in extra_args:  # admin-written (traitlet), still one element per option
        if not isinstance(a, str) or not a.startswith("--") or "\n" in a or "\0" in a:
            raise SubmitError(f"bad extra sbatch argument {a!r}")
        argv.append(a)
    argv += [job_script, launcher, f"--env-file={env_file}", f"--port-range={lo}-{hi}"]
    for a in argv:
        if any(ord(c) < 32 or ord(c) == 127 for c in a):
            raise SubmitError("control characters in a submit argument")
    return argv
