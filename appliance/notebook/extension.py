"""Jupyter server extension ``appliance_notebook``: prepares the notebook's environment for Dask.

Runs once when ``jupyterhub-singleuser`` starts in the notebook job (enabled by
``jupyter_server_config.d/appliance_notebook.json`` in the single-user environment). Everything it
sets goes into ``os.environ``, which every kernel and terminal of this server inherits:

* the TLS identity and ``DASK_DISTRIBUTED__COMM__*`` (see :mod:`.tls`);
* ``APPLIANCE_NOTEBOOK_JOB`` / ``APPLIANCE_NOTEBOOK_HOST``: this notebook's batch job and node, which
  the site's Dask configuration puts on the worker jobs (HTCondor ``$ENV(...)`` in the submit
  description);
* ``DASK_JOBQUEUE__SLURM__NAME=dask-nb<job id>``: the Slurm worker jobs' name carries the tag
  (``#SBATCH`` lines cannot expand variables);
* ``DASK_JOBQUEUE__{SLURM,HTCONDOR}__SCHEDULER_OPTIONS__PROTOCOL=tls``: the jobqueue scheduler
  listens with TLS (only notebook sessions have the identity, so this is not site-wide);
* ``DASK_DISTRIBUTED__DASHBOARD__LINK``: the dashboard through the hub at this server's own URL,
  ``<JUPYTERHUB_SERVICE_PREFIX>proxy/{port}/status`` (jupyter-server-proxy), which the cluster
  widget links to. Relative to the server's origin, so it holds whatever host the hub uses.

A failure is logged and leaves Dask requiring encryption without a certificate, i.e. clusters
refuse to start rather than start open.
"""

from __future__ import annotations

import os
import socket
from typing import Mapping, MutableMapping, Optional

from . import jobinfo, tls

NOTEBOOK_JOB = "APPLIANCE_NOTEBOOK_JOB"
NOTEBOOK_HOST = "APPLIANCE_NOTEBOOK_HOST"
SLURM_NAME = "DASK_JOBQUEUE__SLURM__NAME"
DASHBOARD_LINK = "DASK_DISTRIBUTED__DASHBOARD__LINK"
# dask-jobqueue starts its scheduler with the protocol of its scheduler-options (the Scheduler does
# not derive "tls" from require-encryption when it is given an interface): merged into the site's
# scheduler-options (Dask merges nested keys from the environment into the YAML's).
SCHEDULER_PROTOCOL = [f"DASK_JOBQUEUE__{name}__SCHEDULER_OPTIONS__PROTOCOL" for name in ("SLURM", "HTCONDOR")]


def session_env(env: Mapping[str, str], identity_dir: Optional[str],
                host: Optional[str] = None) -> dict[str, str]:
    """The variables to add to the server's environment (pure; tested whole)."""
    out = tls.dask_env(identity_dir)
    out.update({name: "tls" for name in SCHEDULER_PROTOCOL})
    job = jobinfo.notebook_job(env)
    if job is not None:
        out[NOTEBOOK_JOB] = job.job_id
        if job.backend == "slurm":
            out[SLURM_NAME] = job.slurm_worker_name
    out[NOTEBOOK_HOST] = host or socket.getfqdn()
    prefix = env.get("JUPYTERHUB_SERVICE_PREFIX") or "/"
    if not prefix.endswith("/"):
        prefix += "/"
    # distributed formats the link with str.format(port=..., **os.environ): keep the prefix literal.
    out[DASHBOARD_LINK] = prefix.replace("{", "{{").replace("}", "}}") + "proxy/{port}/status"
    return out


def prepare(environ: MutableMapping[str, str] = os.environ, log=None) -> dict[str, str]:
    identity = None
    try:
        identity = tls.make_identity(environ.get("APPLIANCE_DASK_TLS_DIR") or tls.DEFAULT_DIR)
    except Exception as e:  # never stop the server; Dask then refuses to start clusters
        if log:
            log.error("appliance_notebook: no TLS identity for Dask (%s); clusters will not start", e)
    added = session_env(environ, identity)
    environ.update(added)
    if log:
        log.info("appliance_notebook: Dask TLS identity in %s, notebook job %s",
                 identity, added.get(NOTEBOOK_JOB, "-"))
    return added


def _load_jupyter_server_extension(serverapp) -> None:
    prepare(os.environ, serverapp.log)


# Older name used by notebook < 7 / jupyter_server 1.
load_jupyter_server_extension = _load_jupyter_server_extension
