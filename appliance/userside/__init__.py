"""Code that runs AS THE USER, under ``sudo -u USER appliance-submit`` (see ``helper``).

Imports only the standard library, ``appliance.names`` and the scheduler's own client (the
htcondor bindings, the ``sbatch`` command); never the hub (traitlets, pydantic, tornado,
jupyterhub), so a submission starts fast and runs no hub policy code as the user. The hub imports
from here (``SubmitError``, ``minimal_env``, ``locate_schedd``), never the other way round.
"""


class SubmitError(Exception):
    """Submission failed; the message is for the user."""
