"""HTCondor, user side: submit the hub-built description with the user's Kerberos ticket.

``submit`` = ``{"collector": host | None, "schedd": name | None, "description": {...}}`` from
``HTCondorScheduler.build_submit`` (validated values only), plus ``condor_config``, which the
helper adds from its root-owned config (``appliance.userside.siteconfig``), never the hub.
"""

from __future__ import annotations

import os
from typing import Optional


def submit_as_user(submit: dict) -> str:
    """Runs inside the submit helper, as the user. Returns "cluster.proc"."""
    # Only the user's own ticket: never a token or host credential the machine may hold.
    os.environ["_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS"] = "KERBEROS"
    if not os.environ.get("KRB5CCNAME"):
        raise RuntimeError("no Kerberos ticket: log out and log in again")
    if submit.get("condor_config"):
        os.environ["CONDOR_CONFIG"] = submit["condor_config"]
    import htcondor2 as htcondor

    schedd = locate_or_explain(htcondor, submit.get("collector"), submit.get("schedd"))
    result = schedd.submit(htcondor.Submit(submit["description"]), count=1)
    return f"{result.cluster()}.0"


def locate_or_explain(htcondor, collector: Optional[str], schedd_name: Optional[str]):
    """``locate_schedd``, or RuntimeError in words a user can act on: the schedd is down or
    restarting (its collector no longer lists it), or the collector itself does not answer."""
    try:
        return locate_schedd(htcondor, collector, schedd_name)
    except Exception as e:  # noqa: BLE001 - HTCondorLocateError, HTCondorIOError, ...
        raise RuntimeError(
            f"the HTCondor schedd {schedd_name or '(default)'} is not available (its collector "
            f"{collector or '(default)'} says: {str(e).strip() or type(e).__name__}); it may be "
            "restarting: try again in a few minutes") from None


def locate_schedd_ad(htcondor, collector: Optional[str], schedd_name: Optional[str]):
    """The location ad of schedd ``schedd_name`` (None: the only one) known to ``collector``
    (None: the config's)."""
    coll = htcondor.Collector(collector) if collector else htcondor.Collector()
    if schedd_name:
        return coll.locate(htcondor.DaemonType.Schedd, schedd_name)
    return coll.locate(htcondor.DaemonType.Schedd)


def locate_schedd(htcondor, collector: Optional[str], schedd_name: Optional[str]):
    """The schedd ``schedd_name`` (None: the only one) known to ``collector`` (None: the config's)."""
    return htcondor.Schedd(locate_schedd_ad(htcondor, collector, schedd_name))
