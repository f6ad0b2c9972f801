#!/bin/bash
# Role slurmctld (slurmctld.mini.test): the Slurm controller. Creates the site munge key on first
# start, runs munged + slurmctld, and (re)creates the belle2 group reservation.
set -euo pipefail
. /usr/local/lib/minisite/roles/slurm-common.sh
create_munge_key
start_munge
slurm_dirs
/usr/sbin/slurmctld -D &
ctld=$!
trap 'kill -TERM $ctld 2>/dev/null; wait $ctld' TERM INT
for _ in $(seq 1 150); do scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done
# The belle2 reservation: node2 for group belle2, for one day from (first) startup. It lives in
# slurmctld's state (StateSaveLocation), so a restart keeps it; an expired one is created anew.
# IGNORE_JOBS: create it even if jobs run on node2 right now (they keep running).
if ! scontrol show reservation belle2 >/dev/null 2>&1; then
  scontrol create reservation ReservationName=belle2 StartTime=now Duration=1-00:00:00 \
    Nodes=node2 Groups=belle2 Flags=IGNORE_JOBS \
    || echo "slurmctld: could not create the belle2 reservation" >&2
fi
wait $ctld
