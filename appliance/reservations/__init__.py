"""Staff reservation service (SLURM): staff named in the admin's policy create, list, extend and
delete reservations within that policy, through a root-owned, argument-validating wrapper.

* :mod:`.policy`  the policy (traitlets, from ``/etc/appliance/reservations_config.py``), request
  validation and the scontrol argv (pure, unit-tested);
* :mod:`.admin`   ``appliance-reservation-admin``: the only privileged part, run by sudo as root
  for the service account; re-validates every request and writes the audit log;
* :mod:`.service` the hub-managed web service (page + REST API, ``custom:reservations`` scope).

Why this design: docs/security.md, "Reservation service".
"""
