"""The submit helper's own settings, from a root-owned file (never from its request).

``/etc/appliance/submit-helper.json`` (the image ships one with the defaults below; a site mounts
its own)::

    {"min_uid": 1000,                                  # refuse to run for uids below this
     "sbatch": "/usr/bin/sbatch",                      # the sbatch the helper runs as the user
     "slurm_conf": "",                                 # SLURM_CONF for it ('' = Slurm's default)
     "condor_config": "/etc/appliance/condor/condor_config"}   # CONDOR_CONFIG for HTCondor

Every key is optional. The file must be a regular file (no symlink) owned by root with a mode of
0644 or stricter, in a directory owned by root that nobody else may write; otherwise the helper
refuses every request and says which check failed. A missing file means the defaults. Standard
library only: the helper runs once per submission.
"""

from __future__ import annotations

import json
import os
import stat

PATH = "/etc/appliance/submit-helper.json"

DEFAULTS = {
    "min_uid": 1000,
    "sbatch": "/usr/bin/sbatch",
    "slurm_conf": "",
    "condor_config": "/etc/appliance/condor/condor_config",
}

# Keys a request may never carry: they are this file's to set.
PATH_KEYS = ("sbatch", "slurm_conf", "condor_config")

MAX_BYTES = 64 * 1024


class ConfigError(ValueError):
    """The helper's config file is missing a protection or holds a bad value (the message says)."""


def _check_owner_mode(st: os.stat_result, what: str, path: str, allowed: int) -> None:
    if st.st_uid != 0:
        raise ConfigError(f"{what} {path} is owned by uid {st.st_uid}, not root")
    extra = stat.S_IMODE(st.st_mode) & ~allowed
    if extra:
        raise ConfigError(f"{what} {path} has mode {stat.S_IMODE(st.st_mode):04o}; at most "
                          f"{allowed:04o} is allowed")


def load(path: str = PATH) -> dict:
    """The settings (DEFAULTS overlaid with the file's). Raises ConfigError naming the problem."""
    parent = os.path.dirname(os.path.abspath(path))
    try:
        dst = os.stat(parent)
    except FileNotFoundError:
        return dict(DEFAULTS)
    _check_owner_mode(dst, "the directory", parent, 0o755)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return dict(DEFAULTS)
    except OSError as e:  # ELOOP: a symlink
        raise ConfigError(f"cannot open the helper config {path} (a symlink is refused): "
                          f"{e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"the helper config {path} is not a regular file")
        _check_owner_mode(st, "the helper config", path, 0o644)
        data = os.read(fd, MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise ConfigError(f"the helper config {path} is larger than {MAX_BYTES} bytes")
    try:
        doc = json.loads(data.decode("utf-8") or "{}")
    except (UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"the helper config {path} is not valid JSON: {e}") from None
    return validate(doc, path)


def validate(doc, path: str = PATH) -> dict:
    if not isinstance(doc, dict):
        raise ConfigError(f"the helper config {path} must hold a JSON object")
    unknown = sorted(set(doc) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"the helper config {path}: unknown setting(s) {', '.join(unknown)} "
                          f"(known: {', '.join(DEFAULTS)})")
    cfg = dict(DEFAULTS, **doc)
    m = cfg["min_uid"]
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ConfigError(f"the helper config {path}: min_uid must be an integer of at least 1")
    for key in PATH_KEYS:
        v = cfg[key]
        if not isinstance(v, str) or "\0" in v or (v and not os.path.isabs(v)) or \
                (not v and key != "slurm_conf"):
            raise ConfigError(f"the helper config {path}: {key} must be an absolute path"
                              + (" or ''" if key == "slurm_conf" else ""))
    return cfg


def refuse_paths_in(request: dict, path: str = PATH) -> None:
    """A request that names a program or config path is refused (they come from the file)."""
    sub = request.get("submit")
    named = [k for k in PATH_KEYS if k in request or (isinstance(sub, dict) and k in sub)]
    if named:
        raise ConfigError(f"the request names {', '.join(named)}: the submit helper takes "
                          f"{'it' if len(named) == 1 else 'them'} only from its root-owned "
                          f"config ({path}), never from a request")
