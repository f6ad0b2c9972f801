#!/bin/sh
# Appliance init hook (mini site): install the hub's HTCondor IDTOKEN (hubsvc@mini.test).
# The condor-secrets volume is mounted read-only at /etc/appliance/condor-secrets; HTCondor only
# uses token files that are private to their owner, so copy it into the state volume as root 0600.
# SEC_TOKEN_DIRECTORY in /etc/appliance/condor/condor_config points at the destination.
set -eu
src=/etc/appliance/condor-secrets/hubsvc.token
dir=/srv/appliance/condor-tokens.d
wait_s=${APPLIANCE_CONDOR_TOKEN_WAIT:-120}

# Readiness check: the central manager writes the token (atomically) on its first start.
start=$(date +%s)
while [ ! -s "$src" ]; do
  if [ $(( $(date +%s) - start )) -ge "$wait_s" ]; then
    echo "20-condor-token: $src not there after ${wait_s}s; HTCondor backend will not work" >&2
    exit 0
  fi
  sleep 0.5
done
install -d -m 0700 -o root -g root "$dir"
install -m 0600 -o root -g root "$src" "$dir/.hubsvc.tmp"
mv -f "$dir/.hubsvc.tmp" "$dir/hubsvc"
echo "20-condor-token: installed $dir/hubsvc" >&2
