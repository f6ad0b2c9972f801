#!/usr/bin/env python3
"""``appliance-launch``: the node side of every notebook job, for HTCondor and Slurm alike.

Standard library only, one file, so a site can drop it on nodes next to any Python >= 3.8.

1. Reads the job's private environment file (written 0600 by the submit helper as the user; it
   holds the hub API token, which therefore never appears in a job ad or on a command line) and
   deletes it.
   With internal TLS the file also holds the server's key and certificate (issued by the hub for
   this spawn, for the user's own host) and the appliance's cluster CA: they go to 0600 files in a
   private temporary directory (``JUPYTERHUB_SSL_KEYFILE``/``CERTFILE``/``CLIENT_CA``), so the
   server serves HTTPS and accepts only clients with the appliance's certificate; removed at exit.
2. Picks a free TCP port in the configured range (random order, bind test) and starts
   ``jupyterhub-singleuser`` (or the given command) on it, as a child.
3. Waits until a socket listens on that port and checks, from ``/proc/net/tcp{,6}`` and the
   socket inodes in ``/proc/<pid>/fd``, that it is the child's (this job's uid, a process of the
   child's tree) and that no other uid listens on the port. Another uid holding the port (a
   hostile user on a shared node binding it first): the child is stopped and another port tried
   (``--port-attempts``), else the job fails with a message naming the uid.
4. Only then reports the port to the hub (``POST $JUPYTERHUB_API_URL/batch/port`` with the
   server's own token). The hub takes the host from the scheduler, never from here.
4. Sets ``JOB_END_TIME`` (seconds since the epoch when the job's wall-clock limit ends: Slurm's
   ``SLURM_JOB_END_TIME``, HTCondor's job ad ``JobCurrentStartDate + AllowedJobDuration``, else
   now + ``APPLIANCE_RUNTIME_SECONDS``) and writes it to a small file next to the env file
   (``JOB_END_TIME_FILE``, ``~/.jupyterhub-batch/<job>.end``), which the hub rewrites when the
   session is extended, so notebooks and tools can read it.
5. Stays the child's parent: forwards termination signals to it and exits with its status. A
   server that has not exited ``--stop-timeout`` seconds (default 10) after the first SIGTERM,
   SIGINT or SIGHUP is killed (SIGKILL): the scheduler's stop must free the slot. Seen in a full
   run: a server stopped 7 s after its start hung in "Shutting down 8 extensions" until
   HTCondor's 10-min vacate limit, holding its lane slot, so the next notebook found no room.

Usage: appliance-launch --env-file FILE --port-range LO-HI [--port-attempts N]
       [--stop-timeout S] [-- command args...]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
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


TCP_LISTEN = "0A"


def listeners(port: int, tables=("/proc/net/tcp", "/proc/net/tcp6")) -> list:
    """(uid, socket inode) of every socket listening on ``port`` (any address, IPv4 and IPv6)."""
    out = []
    for table in tables:
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != TCP_LISTEN:
                continue
            if int(fields[1].rpartition(":")[2], 16) == port:
                out.append((int(fields[7]), int(fields[9])))
    return out


def process_tree(root: int) -> set:
    """``root`` and all its descendants (from /proc/<pid>/stat)."""
    children: dict = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat_line = f.read()
        except OSError:
            continue
        ppid = int(stat_line.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo.extend(children.get(pid, ()))
    return tree


def socket_inodes(pids) -> set:
    """Inodes of the sockets the processes ``pids`` hold open."""
    inodes = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def port_owner(port: int, uid: int, child: int) -> "tuple[str, int | None]":
    """Who listens on ``port``: ("ours", uid) when a socket of ``child``'s process tree listens
    and no other uid does; ("foreign", that uid) when another uid listens; ("none", None)."""
    found = listeners(port)
    for owner_uid, _ in found:
        if owner_uid != uid:
            return "foreign", owner_uid
    if found and socket_inodes(process_tree(child)) & {inode for _, inode in found}:
        return "ours", uid
    return "none", None


def start_server(command: list, port: int, uid: int, timeout: float, poll: float = 0.02):
    """Start ``command`` (its env names ``port``) and wait until its own socket listens there.

    Returns (process, None) when it listens, or (None, foreign uid or None) after stopping it:
    another uid listens on the port, or the server ended / did not listen within ``timeout``
    (then the caller decides; its exit status is in the message printed here)."""
    proc = subprocess.Popen(command, preexec_fn=_die_with_parent)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        verdict, who = port_owner(port, uid, proc.pid)
        if verdict == "ours":
            return proc, None
        if verdict == "foreign" or proc.poll() is not None:
            break
        time.sleep(poll)
    verdict, who = port_owner(port, uid, proc.pid)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if verdict == "foreign":
        print(f"appliance-launch: port {port} is held by uid {who}, not by this job "
              f"(uid {uid}): not reported", file=sys.stderr)
        return None, who
    print(f"appliance-launch: the server did not listen on port {port} "
          f"(exit status {proc.returncode})", file=sys.stderr)
    return None, None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the server gets SIGTERM if the launcher dies (prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)
    except Exception:
        pass


TLS_VARS = {"APPLIANCE_TLS_KEY": ("key.pem", "JUPYTERHUB_SSL_KEYFILE"),
            "APPLIANCE_TLS_CERT": ("cert.pem", "JUPYTERHUB_SSL_CERTFILE"),
            "APPLIANCE_TLS_CLIENT_CA": ("client-ca.pem", "JUPYTERHUB_SSL_CLIENT_CA")}


def install_tls(env: dict, base: "str | None" = None) -> "str | None":
    """The server's TLS identity from the env file (PEM values, issued by the hub for this spawn)
    into files of a new private directory (0700, files 0600, node-local temp dir); sets
    ``JUPYTERHUB_SSL_KEYFILE``/``CERTFILE``/``CLIENT_CA`` in ``env`` and drops the PEM values (the
    server and its kernels get paths only). Returns the directory, or None without TLS."""
    if not any(k in env for k in TLS_VARS):
        return None
    missing = [k for k in TLS_VARS if not env.get(k)]
    if missing:
        raise SystemExit(f"appliance-launch: env file lacks {', '.join(missing)}")
    d = tempfile.mkdtemp(prefix="appliance-tls-", dir=base)
    for var, (name, target) in TLS_VARS.items():
        path = os.path.join(d, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(env.pop(var))
        env[target] = path
    return d


def remove_tls(d: "str | None") -> None:
    if d:
            shutil.rmtree(d, ignore_errors=True)


def report_port(api_url: str, token: str, port: int, tries: int = 10,
                ca_file: "str | None" = None) -> None:
    """POST the port; over https the hub's cluster-side certificate must verify against
    ``ca_file`` (the appliance's cluster CA, from the env file)."""
    url = api_url.rstrip("/") + "/batch/port"
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context(cafile=ca_file)
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
            with urllib.request.urlopen(req, timeout=10, context=context) as r:
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


#: signals by which a scheduler stops a job (HTCondor's soft kill, Slurm's scancel, a hangup)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="appliance-launch")
    ap.add_argument("--env-file", required=True)
    ap.add_argument("--port-range", type=parse_range, default=(40000, 41000))
    ap.add_argument("--port-attempts", type=int, default=5,
                    help="ports to try when other users' processes hold the one picked")
    ap.add_argument("--start-timeout", type=float, default=120.0,
                    help="seconds the server may take to listen")
    ap.add_argument("--stop-timeout", type=float, default=10.0,
                    help="seconds the server may take to exit after a termination signal "
                    "before it is killed")
    ap.add_argument("command", nargs="*", default=[])
    args = ap.parse_args(argv)
    started = time.monotonic()

    env = read_env_file(args.env_file)
    tls_dir = install_tls(env)
    scheme = "https" if tls_dir else "http"
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
    os.chdir(os.path.expanduser("~"))
    sys.stdout.flush()
    child = {"proc": None}

    def forward(signum, _frame):
        proc = child["proc"]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signum)
            if signum in STOP_SIGNALS and signal.getitimer(signal.ITIMER_REAL)[0] == 0:
                # the first stop request arms the deadline (a timer: proc.wait() stays a
                # blocking wait, no polling for the hours a notebook runs)
                signal.setitimer(signal.ITIMER_REAL, max(args.stop_timeout, 0.01))
        elif proc is None:
            raise SystemExit(128 + signum)

    def overdue(_signum, _frame):
        proc = child["proc"]
        if proc is not None and proc.poll() is None:
            print(f"appliance-launch: the server (pid {proc.pid}) did not exit within "
                  f"{args.stop_timeout:g} s of the stop signal: killed", file=sys.stderr)
            proc.kill()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, forward)
    signal.signal(signal.SIGALRM, overdue)
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    uid = os.getuid()
    for _ in range(args.port_attempts):
        port = pick_port(*args.port_range)
        os.environ["JUPYTERHUB_SERVICE_URL"] = f"{scheme}://0.0.0.0:{port}{prefix}"
        proc, foreign = start_server(command, port, uid, args.start_timeout)
        if proc is not None:
            break
        if foreign is None:  # the server itself failed: no other port will help
            remove_tls(tls_dir)
            raise SystemExit("appliance-launch: the notebook server did not start (see above)")
    else:
        remove_tls(tls_dir)
        raise SystemExit(f"appliance-launch: {args.port_attempts} ports of the range were taken "
                         "by other users' processes before the server could listen; not started")
    child["proc"] = proc
    print(f"appliance-launch: server (pid {proc.pid}, uid {uid}) listens on port {port}; "
          f"reporting {time.monotonic() - started:.3f} s after start", file=sys.stderr)
    try:
        report_port(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"], port,
                    ca_file=os.environ.get("JUPYTERHUB_SSL_CLIENT_CA"))
    except SystemExit:
        proc.terminate()
        remove_tls(tls_dir)
        raise
    code = proc.wait()
    remove_tls(tls_dir)
    raise SystemExit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
