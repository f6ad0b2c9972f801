"""``python -m appliance.credmon``: the Kerberos credmon daemon (runs as root).

Started by ``condor_master`` as ``CREDMON_KRB`` (see condor-config/*/..-credmon-krb.conf)
or by any supervisor.  The credential directory defaults to HTCondor's
``SEC_CREDENTIAL_DIRECTORY_KRB`` when the htcondor bindings can tell it.
Unknown arguments (whatever condor_master passes) are logged and ignored.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import sys
from typing import Optional

from appliance import renewal

from . import KerberosCredmon


def _condor_param(name: str) -> Optional[str]:
    for modname in ("htcondor2", "htcondor"):
        try:
            mod = __import__(modname)
            value = mod.param.get(name)
            if value:
                return str(value)
        except Exception:  # noqa: BLE001 - bindings missing or unconfigured
            continue
    return None


def _notify_master(log: logging.Logger):
    """After the first pass, tell condor_master we are ready (only when it started us)."""

    def notify() -> None:
        if "CONDOR_INHERIT" not in os.environ:
            return
        for modname in ("htcondor2", "htcondor"):
            try:
                mod = __import__(modname)
                mod.set_ready_state("Ready")
                log.info("told condor_master we are ready")
                return
            except Exception:  # noqa: BLE001
                continue
        log.warning("could not send the ready state to condor_master")

    return notify


def main(argv: Optional[list[str]] = None) -> int:
    env = os.environ.get
    ap = argparse.ArgumentParser(prog="python -m appliance.credmon",
                                 description="Kerberos credmon for HTCondor.")
    ap.add_argument("--cred-dir", default=env("CREDMON_KRB_DIR"),
                    help="credential directory [CREDMON_KRB_DIR]; default: HTCondor's "
                    "SEC_CREDENTIAL_DIRECTORY_KRB")
    ap.add_argument("--realm", default=env("CREDMON_KRB_REALM"),
                    help="if set, <user>.cred must hold user@REALM [CREDMON_KRB_REALM]")
    renewal.add_arguments(ap, "CREDMON_KRB_")
    ap.add_argument("--max-sleep", type=float, default=float(env("CREDMON_KRB_MAX_SLEEP", "60")),
                    help="rescan at least this often (seconds)")
    ap.add_argument("--once", action="store_true", help="one pass, then exit")
    ap.add_argument("--log-level", default=env("CREDMON_KRB_LOG_LEVEL", "INFO"))
    ap.add_argument("--log-file", default=env("CREDMON_KRB_LOG_FILE"),
                    help="append the log to this file instead of stderr (condor_master sends a "
                    "daemon's stderr to /dev/null) [CREDMON_KRB_LOG_FILE]")
    args, unknown = ap.parse_known_args(argv)
    try:
        policy = renewal.from_args(args)
    except ValueError as exc:
        ap.error(str(exc))

    if args.log_file:
        handler: logging.Handler = logging.handlers.WatchedFileHandler(args.log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s credmon-krb %(levelname)s %(message)s",
        handlers=[handler],
    )
    log = logging.getLogger("appliance.credmon")
    if unknown:
        log.info("ignoring arguments: %s", " ".join(unknown))
    cred_dir = args.cred_dir or _condor_param("SEC_CREDENTIAL_DIRECTORY_KRB")
    if not cred_dir:
        log.error("no credential directory: set --cred-dir or SEC_CREDENTIAL_DIRECTORY_KRB")
        return 2
    os.makedirs(cred_dir, mode=0o700, exist_ok=True)
    credmon = KerberosCredmon(
        cred_dir,
        realm=args.realm,
        policy=policy,
    )
    if args.once:
        credmon.write_pid()
        credmon.scan()
        return 0
    log.info("watching %s", cred_dir)
    credmon.run_forever(max_sleep=args.max_sleep, on_first_pass=_notify_master(log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
