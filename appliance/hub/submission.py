"""The hub side of the submit helper protocol (docs/architecture.md, "Submit helper protocol").

The spawner runs ``appliance-submit`` as the user (``sudo -n -u USER ...``) with ONE JSON request
on stdin (secrets travel only there) and reads one JSON answer from stdout: ``{"job_id": ...}`` or
``{"error": message}``. The helper gets a minimal environment, never the hub's own.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
from typing import Optional, Sequence

from ..options import UserOptions
from .scheduler.base import SubmitError, SubmitRequest

#: the only environment the helper sees
HELPER_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def submit_request(account: pwd.struct_passwd, server_name: str, suffix: str, *, job_dir: str,
                   options: UserOptions, port_range: tuple[int, int], ccache: Optional[str],
                   runtime_seconds: int) -> SubmitRequest:
    """What the backend builds its submission from: job name
    ``jupyterhub-<user>-<server or "default">-<suffix>``, env file ``~/<job_dir>/<name>.json``."""
    name = f"jupyterhub-{account.pw_name}-{server_name or 'default'}-{suffix}"
    return SubmitRequest(
        user=account.pw_name,
        uid=account.pw_uid,
        home=account.pw_dir,
        options=options,
        job_name=name,
        env_file=os.path.join(account.pw_dir, job_dir, name + ".json"),
        port_range=(int(port_range[0]), int(port_range[1])),
        ccache=ccache,
        runtime_seconds=runtime_seconds,
    )


def helper_request(request: SubmitRequest, env: dict[str, str], submit: dict) -> dict:
    """The helper's stdin: the job's private env (written to ``request.env_file`` as the user)
    and the backend's part (``Scheduler.build_submit``)."""
    return {"backend": request.options.backend, "ccache": request.ccache,
            "env_path": request.env_file, "env": env, "submit": submit}


def helper_argv(command: Sequence[str], username: str) -> list[str]:
    """The configured command with ``{username}`` replaced."""
    return [arg.replace("{username}", username) for arg in command]


async def run_submit_helper(argv: Sequence[str], request: dict) -> dict:
    """Run the helper with ``request`` on stdin; its answer, or ``SubmitError`` in its own words
    (the ``error`` it sent, else the end of its stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(HELPER_ENV),
    )
    out, err = await proc.communicate(json.dumps(request).encode())
    try:
        answer = json.loads(out.decode() or "{}")
    except ValueError:
        answer = {}
    if not isinstance(answer, dict):
        answer = {}
    if proc.returncode != 0 or "job_id" not in answer:
        msg = answer.get("error") or err.decode(errors="replace").strip()[-500:] or "no answer"
        raise SubmitError(msg)
    return answer
