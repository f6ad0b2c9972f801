"""``appliance-submit``: submit one notebook job AS THE USER.

The hub (root) runs ``sudo -u USER /opt/jupyterhub/bin/appliance-submit`` and writes one JSON request
on stdin; the helper answers one JSON object on stdout. Running as the user means the scheduler sees
the user's own identity (Kerberos ticket for HTCondor, munge uid for Slurm); the hub never submits
with a privileged identity.

Request::

    {"backend": "htcondor" | "slurm",
     "ccache": "/path/to/user's ticket cache" | null,
     "env_path": "/home/USER/.jupyterhub-batch/<name>.json",
     "env": {"JUPYTERHUB_API_TOKEN": "...", ...},        # secret: only ever in this file
     "submit": {...backend specific, built from validated values...}}

The ``sbatch`` path, ``SLURM_CONF`` and ``CONDOR_CONFIG`` come from the root-owned
``/etc/appliance/submit-helper.json`` (``appliance.userside.siteconfig``), which also sets the
lowest uid the helper runs for (``min_uid``, default 1000); a request naming any of those paths is
refused, and so is every request while the file is not root-owned 0644 or stricter.

Answer: ``{"job_id": "..."}`` or ``{"error": "message for the user"}`` (exit status 1).

The one other request, after the hub extended a running session::

    {"action": "end-time", "path": "/home/USER/.jupyterhub-batch/<name>.end", "end": 1767225600}

rewrites the job's end-time file (``appliance-launch`` made it at start) as the user; answer
``{"ok": true}``.
"""

from __future__ import annotations

import json
import os
import sys

from appliance.privfile import atomic_write, create_in_dir, open_dir
from appliance.userside import siteconfig

# Where the helper's own settings live (tests point it elsewhere; never taken from the request).
CONFIG_PATH = siteconfig.PATH


def write_env_file(path: str, env: dict) -> None:
    """Write the secret environment as JSON into a NEW 0600 file in a 0700 directory of the
    user's home, refusing links (``appliance.privfile.create_in_dir``)."""
    home = os.path.expanduser("~")
    real = os.path.realpath(os.path.dirname(path))
    if not (real == home or real.startswith(home.rstrip("/") + "/")):
        raise ValueError("env_path must be inside the user's home")
    data = json.dumps({str(k): str(v) for k, v in env.items()}).encode()
    create_in_dir(os.path.dirname(path), os.path.basename(path), data, mode=0o600, dir_mode=0o700)


def _inside_home(path: str) -> str:
    home = os.path.expanduser("~")
    real = os.path.realpath(os.path.dirname(path))
    if not (real == home or real.startswith(home.rstrip("/") + "/")):
        raise ValueError("path must be inside the user's home")
    return real


def write_end_time(path: str, end) -> None:
    """Replace the job's ``<name>.end`` file with the new end time (seconds since the epoch)."""
    if not str(path).endswith(".end") or isinstance(end, bool) or not isinstance(end, int):
        raise ValueError("end-time: a .end path and an integer end are required")
    fd = open_dir(_inside_home(path))
    try:
        atomic_write(fd, os.path.basename(path), f"{end}\n".encode(), mode=0o600, uid=-1, gid=-1)
    finally:
        os.close(fd)


def submit(request: dict, cfg: dict) -> str:
    """Submit with the backend's client (imported only for that backend); returns the job id.
    The program and config paths come from ``cfg`` (the root-owned file), never the request."""
    backend = request.get("backend")
    sub = request.get("submit")
    if not isinstance(sub, dict):
        raise ValueError("bad submit request: 'submit' must be an object")
    if request.get("ccache"):
        os.environ["KRB5CCNAME"] = "FILE:" + request["ccache"]
    if backend == "htcondor":
        from .htcondor import submit_as_user

        return submit_as_user(dict(sub, condor_config=cfg["condor_config"]))
    if backend == "slurm":
        from .slurm import run_sbatch

        return run_sbatch(dict(sub, sbatch=cfg["sbatch"], slurm_conf=cfg["slurm_conf"]))
    raise ValueError(f"unknown backend {backend!r}")


def check_caller(cfg: dict, uid: int) -> None:
    """Refuse system accounts: uids below the site's minimum (``min_uid`` of the config)."""
    if uid < cfg["min_uid"]:
        raise PermissionError(f"the submit helper does not run for uid {uid}: below the site's "
                              f"minimum {cfg['min_uid']} (min_uid in {CONFIG_PATH})")


def main() -> int:
    os.umask(0o077)
    try:
        cfg = siteconfig.load(CONFIG_PATH)
        check_caller(cfg, os.getuid())
        request = json.loads(sys.stdin.read(1 << 20))
        if not isinstance(request, dict):
            raise ValueError("bad request: one JSON object expected")
        siteconfig.refuse_paths_in(request, CONFIG_PATH)
        if request.get("action") == "end-time":
            write_end_time(request.get("path", ""), request.get("end"))
            json.dump({"ok": True}, sys.stdout)
            return 0
        if request.get("env_path"):
            write_env_file(request["env_path"], request.get("env") or {})
        job_id = submit(request, cfg)
    except Exception as e:  # the message goes back to the hub, never the request (it holds secrets)
        msg = str(e).strip() or e.__class__.__name__
        json.dump({"error": msg[-2000:]}, sys.stdout)
        return 1
    json.dump({"job_id": str(job_id)}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
