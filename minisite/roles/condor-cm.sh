#!/bin/bash
# Mini-site role "condor-cm" (cm.mini.test): main pool collector + negotiator.
# Also creates the pool's shared secrets in the condor-secrets volume, once:
#   /condor-secrets/POOL          pool signing key (every pool host installs it; daemons mint their
#                                 condor@mini.test IDTOKENs from it)
#   /condor-secrets/hubsvc.token  IDTOKEN for the hub's service identity hubsvc@mini.test
# and, in the hub-token volume the appliance mounts (never the pool key):
#   /hub-token/hubsvc.token       copy of the above
#   /hub-token/credbridge.token   IDTOKEN of the credential bridge, credbridge@mini.test
set -euo pipefail
. /usr/local/lib/minisite/roles/_condor-common.sh

install_condor_config cm
install_keytab

umask 077
if [ ! -s "$SECRETS/POOL" ]; then
  # A random pool password, written in HTCondor's key-file format by condor_store_cred.
  rm -f "$SECRETS/.POOL.tmp"
  openssl rand -base64 48 | tr -d '\n' | condor_store_cred add -c -i - -f "$SECRETS/.POOL.tmp" >/dev/null
  chmod 0600 "$SECRETS/.POOL.tmp"
  mv -f "$SECRETS/.POOL.tmp" "$SECRETS/POOL"
  rm -f "$SECRETS/hubsvc.token"       # a token from an older key would no longer verify
  clog "created the pool signing key"
fi
install_pool_key

if [ ! -s "$SECRETS/hubsvc.token" ] || [ "$SECRETS/POOL" -nt "$SECRETS/hubsvc.token" ]; then
  # The hub needs READ (condor_q, collector lookups) and WRITE (condor_rm); the token is bounded to
  # those, so even a leaked copy cannot act as a daemon or administrator.
  condor_token_create -identity hubsvc@mini.test -key POOL -authz READ -authz WRITE \
    > "$SECRETS/.hubsvc.token.tmp"
  chmod 0600 "$SECRETS/.hubsvc.token.tmp"
  mv -f "$SECRETS/.hubsvc.token.tmp" "$SECRETS/hubsvc.token"
  clog "created the hubsvc@mini.test IDTOKEN"
fi
# The appliance mounts only the hub-token volume, never the pool key (which could mint any identity).
if [ -d /hub-token ] && ! cmp -s "$SECRETS/hubsvc.token" /hub-token/hubsvc.token; then
  install -m 0600 "$SECRETS/hubsvc.token" /hub-token/.hubsvc.token.tmp
  mv -f /hub-token/.hubsvc.token.tmp /hub-token/hubsvc.token
fi
# The credential bridge's identity credbridge@mini.test: the ONLY entry of CRED_SUPER_USERS on the
# credds (it stores users' Kerberos tickets for them; condor-config/{lane,schedd}/30-jba-credmon-krb.conf).
# Minted straight into the hub-token volume (no other host needs it); READ to locate the credd in
# the collector, WRITE for STORE_CRED. Not a queue super user, not a daemon, not an administrator.
if [ -d /hub-token ] && { [ ! -s /hub-token/credbridge.token ] || [ "$SECRETS/POOL" -nt /hub-token/credbridge.token ]; }; then
  condor_token_create -identity credbridge@mini.test -key POOL -authz READ -authz WRITE \
    > /hub-token/.credbridge.token.tmp
  chmod 0600 /hub-token/.credbridge.token.tmp
  mv -f /hub-token/.credbridge.token.tmp /hub-token/credbridge.token
  clog "created the credbridge@mini.test IDTOKEN"
fi

run_condor_master
