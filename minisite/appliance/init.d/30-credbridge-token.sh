#!/bin/sh
# Appliance init hook (mini site): install the credential bridge's HTCondor IDTOKEN
# (credbridge@mini.test, the lane credd's only CRED_SUPER_USERS entry; minted by the central manager
# into the hub-token volume, mounted read-only at /etc/appliance/condor-secrets).
# It goes to the bridge's OWN token directory (root 0700, file 0600): the bridge runs with
# _CONDOR_SEC_TOKEN_DIRECTORY pointing there (image/bin/appliance-credd-bridge); the hub's
# directory (/srv/appliance/condor-tokens.d) holds only hubsvc's token and vice versa.
set -eu
src=/etc/appliance/condor-secrets/credbridge.token
dir=/srv/appliance/credbridge-tokens.d
wait_s=${APPLIANCE_CONDOR_TOKEN_WAIT:-120}

start=$(date +%s)
while [ ! -s "$src" ]; do
  if [ $(( $(date +%s) - start )) -ge "$wait_s" ]; then
    echo "30-credbridge-token: $src not there after ${wait_s}s; the credential bridge cannot store tickets" >&2
    exit 0
  fi
  sleep 0.5
done
install -d -m 0700 -o root -g root "$dir"
install -m 0600 -o root -g root "$src" "$dir/.credbridge.tmp"
mv -f "$dir/.credbridge.tmp" "$dir/credbridge"
echo "30-credbridge-token: installed $dir/credbridge" >&2
