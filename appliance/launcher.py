#!/usr/bin/env python3
"""``appliance-launch``: the node side of every notebook job, for HTCondor and Slurm alike.

Standard library only, one file, so a site can drop it on nodes next to any Python >= 3.8.

1. Reads the job's private environment file (written 0600 by the submit helper as the user; it
   holds the hub API token, which therefore never appears in a job ad or on a command line) and
   deletes it.
2. Picks a free TCP port in the configured range (random order, bind test).
3. Reports the port to the hub (``POST $JUPYTERHUB_API_URL/batch/port`` with the server's own token).
   The hub takes the host from the scheduler, never from here.
4. Sets ``JOB_END_TIME`` (seconds since the epoch when the job's wall-clock limit ends: Slurm's
   ``SLURM_JOB_END_TIME``, HTCondor's job ad ``JobCurrentStartDate + AllowedJobDuration``, else
   now + ``APPLIANCE_RUNTIME_SECONDS``) and writes it to a small file next to the env file
   (``JOB_END_TIME_FILE``, ``~/.jupyterhub-batch/<job>.end``), which the hub rewrites when the
   session is extended, so notebooks and tools can read it.
5. Execs ``jupyterhub-singleuser`` (or the given command) bound to that port.

Usage: appliance-launch --env-file FILE --port-range LO-HI [-- command args...]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import stat
import sys
import time
import urllib.error
import urllib.request

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


def read_env_file(path: str) -> dict:
    """Read and unlink the private env file; refuse links and files others could read."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise SystemExit(f"appliance-launch: {path} must be a private regular file of this user")
        with os.fdopen(fd, "r") as f:
            fd = -1
            data = json.load(f)
    finally:
        if fd >= 0:
            os.close(fd)
    try:
        os.unlink(path)
    except OSError:
        pass
    if not isinstance(data, dict):
        raise SystemExit("appliance-launch: env file is not a JSON object")
    env = {}
    for k, v in data.items():
        if not ENV_NAME_RE.match(str(k)):
            raise SystemExit(f"appliance-launch: bad variable name in env file: {k!r}")
        env[str(k)] = str(v)
    return env


def pick_port(lo: int, hi: int, attempts: int = 200) -> int:
    """A port in [lo, hi] nothing listens on now (random order to spread concurrent starts)."""
    ports = list(range(lo, hi + 1))
    random.shuffle(ports)
    for port in ports[:attempts]:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("0.0.0.0", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise SystemExit(f"appliance-launch: no free port in {lo}-{hi}")


def report_port(api_url: str, token: str, port: int, tries: int = 10) -> None:
    url = api_url.rstrip("/") + "/batch/port"
    body = json.dumps({"port": port}).encode()
    delay = 0.2
    for attempt in range(tries):
        req = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                r.read()
                return
        except urllib.error.HTTPError as e:
            if 400 <= e.code < 500:
                detail = e.read()[:500].decode(errors="replace")
                raise SystemExit(f"appliance-launch: hub refused the port report: {e.code} {detail}")
        except OSError as e:
            print(f"appliance-launch: hub not reachable ({e}), retrying", file=sys.stderr)
        time.sleep(delay)
        delay = min(delay * 2, 5)
    raise SystemExit("appliance-launch: could not report the port to the hub")


def _job_ad_numbers(path: str, names: tuple) -> dict:
    out = {}
    try:
        with open(path) as f:
            for line in f:
                key, sep, value = line.partition("=")
                if sep and key.strip() in names:
                    try:
                        out[key.strip()] = int(float(value.strip()))
                    except ValueError:
                        pass
    except OSError:
        pass
    return out


def job_end_time(env: dict, now: float) -> "int | None":
    """When this job's wall-clock limit ends (see module doc), or None if unknown."""
    end = env.get("SLURM_JOB_END_TIME", "")
    if end.isdigit() and int(end) > 0:
        return int(end)
    ad = env.get("_CONDOR_JOB_AD")
    if ad:
        nums = _job_ad_numbers(ad, ("JobCurrentStartDate", "AllowedJobDuration"))
        if len(nums) == 2 and nums["AllowedJobDuration"] > 0:
            return nums["JobCurrentStartDate"] + nums["AllowedJobDuration"]
    runtime = env.get("APPLIANCE_RUNTIME_SECONDS", "")
    return int(now) + int(runtime) if runtime.isdigit() else None


def write_end_file(env_file: str, end: int) -> str:
    """``<env file without .json>.end`` holding the end time (the user's own, 0600)."""
    path = (env_file[:-5] if env_file.endswith(".json") else env_file) + ".end"
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{end}\n")
    os.replace(tmp, path)
    return path


def parse_range(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d{1,5})-(\d{1,5})", text)
    if not m:
        raise argparse.ArgumentTypeError("expected LO-HI")
    lo, hi = int(m.group(1)), int(m.group(2))
    if not (1024 <= lo <= hi <= 65535):
        raise argparse.ArgumentTypeError("range must be within 1024-65535 and LO <= HI")
    return lo, hi


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="appliance-launch")
    ap.add_argument("--env-file", required=True)
    ap.add_argument("--port-range", type=parse_range, default=(40000, 41000))
    ap.add_argument("command", nargs="*", default=[])
    args = ap.parse_args(argv)

    env = read_env_file(args.env_file)
    os.environ.update(env)
    end = job_end_time(dict(os.environ), time.time())
    if end:
        os.environ["JOB_END_TIME"] = str(end)
        try:
            os.environ["JOB_END_TIME_FILE"] = write_end_file(args.env_file, end)
        except OSError as e:  # the variable still says it
            print(f"appliance-launch: could not write the end-time file: {e}", file=sys.stderr)
    # Default: jupyterhub-singleuser next to this interpreter, else on PATH.
    command = args.command or [
        os.path.join(os.path.dirname(sys.executable), "jupyterhub-singleuser")
    ]
    if not os.path.exists(command[0]) and "/" in command[0]:
        command[0] = "jupyterhub-singleuser"
    port = pick_port(*args.port_range)
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    os.environ["JUPYTERHUB_SERVICE_URL"] = f"http://0.0.0.0:{port}{prefix}"
    report_port(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"], port)
    os.chdir(os.path.expanduser("~"))
    sys.stdout.flush()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
