"""Running Slurm's commands from the hub (as root): no shell, minimal environment, a timeout.

The hub only reads (``squeue --json``, ``scontrol show ... --json``, ``sacctmgr``) and cancels
(``scancel``; root is a Slurm operator). Submission never happens here: it runs as the user in
the submit helper (``appliance.userside.slurm``), which shares :func:`minimal_env`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from typing import Optional

from ....userside.slurm import minimal_env
from ... import metrics

#: scancel's words for "nothing to cancel any more".
ALREADY_GONE_RE = re.compile(r"Invalid job id|already completing or completed", re.I)


async def run(argv: list[str], *, slurm_conf: Optional[str] = None, timeout: float = 30.0,
              query: Optional[str] = None) -> str:
    """Run one command, return its stdout; RuntimeError with its stderr on failure or timeout.
    ``query``: its label in the query metrics (default: the command's name)."""
    name = os.path.basename(argv[0])
    with metrics.time_query("slurm", query or name):
        return await _run(argv, name, slurm_conf, timeout)


async def _run(argv: list[str], name: str, slurm_conf: Optional[str], timeout: float) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=minimal_env(slurm_conf),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"{name} timed out") from None
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed: {err.decode(errors='replace').strip()[-500:]}")
    return out.decode()


def parse_json(text: str, name: str) -> dict:
    """A Slurm ``--json`` answer; RuntimeError with Slurm's first error if it reports one."""
    data = json.loads(text or "{}")
    errors = [e for e in data.get("errors", []) or [] if e]
    if errors:
        raise RuntimeError(f"{name}: {errors[0]}")
    return data


async def run_json(argv: list[str], *, slurm_conf: Optional[str] = None,
                   timeout: float = 30.0, query: Optional[str] = None) -> dict:
    text = await run(argv, slurm_conf=slurm_conf, timeout=timeout, query=query)
    return parse_json(text, os.path.basename(argv[0]))
