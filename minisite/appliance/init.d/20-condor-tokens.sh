#!/bin/sh
# Appliance init hook (mini site): install the two HTCondor IDTOKENs the central manager mints into
# the hub-token volume (mounted read-only at /etc/appliance/condor-secrets; never the pool key):
#   hubsvc.token      -> /srv/appliance/condor-tokens.d/hubsvc          the hub (query/remove jobs;
#                        QUEUE_SUPER_USERS), SEC_TOKEN_DIRECTORY of /etc/appliance/condor/condor_config
#   credbridge.token  -> /srv/appliance/credbridge-tokens.d/credbridge  the credential bridge only
#                        (the credds' sole CRED_SUPER_USERS entry; image/bin/appliance-credd-bridge
#                        points _CONDOR_SEC_TOKEN_DIRECTORY there)
# Each identity gets its own directory (root 0700, file 0600: HTCondor ignores readable tokens).
set -eu
wait_s=${APPLIANCE_CONDOR_TOKEN_WAIT:-120}

install_token() {  # NAME DEST_DIR
  src=/etc/appliance/condor-secrets/$1.token
  start=$(date +%s)
  # Readiness check: the central manager writes the token (atomically) on its first start.
  while [ ! -s "$src" ]; do
    if [ $(( $(date +%s) - start )) -ge "$wait_s" ]; then
      echo "20-condor-tokens: $src not there after ${wait_s}s; $1 cannot talk to HTCondor" >&2
      return 0
    fi
    sleep 0.5
  done
  install -d -m 0700 -o root -g root "$2"
  install -m 0600 -o root -g root "$src" "$2/.$1.tmp"
  mv -f "$2/.$1.tmp" "$2/$1"
  echo "20-condor-tokens: installed $2/$1" >&2
}

install_token hubsvc /srv/appliance/condor-tokens.d
install_token credbridge /srv/appliance/credbridge-tokens.d
