"""Which batch job is this notebook? (pure functions of the environment; stdlib only)

HTCondor: the starter writes the job ad to ``$_CONDOR_JOB_AD``; its ``GlobalJobId``
(``schedd#cluster.proc#qdate``) names the job uniquely across schedds and time.
Slurm: ``SLURM_JOB_ID`` (and ``SLURM_CLUSTER_NAME``).

The result tags the Dask worker jobs a notebook submits (``JbaNotebookJob`` on HTCondor, the job
name ``dask-nb<id>`` on Slurm) so that the appliance's reaper can remove the ones whose notebook
has ended (appliance/reaper.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

# What a GlobalJobId looks like: host#cluster.proc#epoch (host: a schedd name).
GLOBAL_JOB_ID_RE = re.compile(r"^[A-Za-z0-9._@-]+#\d+\.\d+#\d+$")
SLURM_JOB_ID_RE = re.compile(r"^\d+$")
# Job name prefix of Slurm Dask workers from a notebook; the rest is the notebook's job id.
SLURM_WORKER_PREFIX = "dask-nb"


@dataclass(frozen=True)
class NotebookJob:
    backend: str  # "htcondor" | "slurm"
    job_id: str   # HTCondor: GlobalJobId; Slurm: the numeric job id

    @property
    def slurm_worker_name(self) -> str:
        return SLURM_WORKER_PREFIX + self.job_id if self.backend == "slurm" else ""


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read(1 << 20)


def ad_attribute(text: str, name: str) -> Optional[str]:
    """The value of ``name`` in an old-style ClassAd text (``Name = value`` lines), unquoted."""
    pat = re.compile(r"^\s*" + re.escape(name) + r"\s*=\s*(.*?)\s*$", re.I | re.M)
    m = pat.search(text)
    if not m:
        return None
    value = m.group(1)
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value


def notebook_job(env: Mapping[str, str],
                 read: Callable[[str], str] = _read_text) -> Optional[NotebookJob]:
    """The batch job this process runs in, or None (not in a batch job, or nothing readable)."""
    ad_path = env.get("_CONDOR_JOB_AD")
    if ad_path:
        try:
            gid = ad_attribute(read(ad_path), "GlobalJobId")
        except OSError:
            gid = None
        if gid and GLOBAL_JOB_ID_RE.match(gid):
            return NotebookJob("htcondor", gid)
    sid = env.get("SLURM_JOB_ID", "")
    if SLURM_JOB_ID_RE.match(sid):
        return NotebookJob("slurm", sid)
    return None
