#!/bin/bash
# Sourced by slurmctld.sh and slurmd.sh (not a role by itself): munge and Slurm directories.
# The munge key lives in the shared `munge` volume, mounted at /etc/minisite/munge. slurmctld
# creates it once (first start); every other host (and the appliance) copies it from there.
MUNGE_SHARED=/etc/minisite/munge/munge.key

create_munge_key() {
  if [ ! -s "$MUNGE_SHARED" ]; then
    echo "slurm: creating the site munge key in the munge volume"
    local tmp="$MUNGE_SHARED.tmp.$$"
    ( umask 077; dd if=/dev/urandom of="$tmp" bs=1024 count=1 status=none )
    chown munge:munge "$tmp"
    chmod 0400 "$tmp"
    mv -f "$tmp" "$MUNGE_SHARED"
  fi
}

start_munge() {
  wait_file "$MUNGE_SHARED"
  # munged checks ownership and modes: the key 0400 munge, its directories not writable by others.
  install -o munge -g munge -m 0400 "$MUNGE_SHARED" /etc/munge/munge.key
  install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
  install -d -o munge -g munge -m 0755 /run/munge
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 1 50); do
    munge -n </dev/null >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "slurm: munged did not come up" >&2
  return 1
}

slurm_dirs() {
  install -d -o slurm -g slurm -m 0755 /var/lib/slurm /var/lib/slurm/slurmctld /var/log/slurm
  install -d -o root -g root -m 0755 /var/lib/slurm/slurmd
}
