# Reservation policy of the mini site (appliance/reservations/policy.py; docs/operations.md).
# Mounted root-owned at /etc/appliance/reservations_config.py; the root wrapper refuses a file that
# anyone but root may write. alice is staff: she may reserve node1-node3 in jhub, upex and maxwell
# for at most 24 h; nobody may reserve longer than 72 h.
c = get_config()  # noqa: F821
c.ReservationPolicy.staff = {
    "alice": {"partitions": ["jhub", "upex", "maxwell"], "nodes": ["node1", "node2", "node3"],
              "max_hours": 24, "max_nodes": 2},
}
c.ReservationPolicy.max_hours = 72
c.ReservationPolicy.audit_log = "/srv/appliance/reservations/audit.log"
