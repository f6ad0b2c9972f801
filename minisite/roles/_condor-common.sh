#!/bin/bash
# Shared by the HTCondor roles (condor-cm, condor-schedd, condor-lane, condor-exec); sourced, not a
# role itself. Installs the shipped configs for a role, the host keytab and the pool signing key.

CONDOR_CONFIG_SRC=/etc/minisite/condor-config
SECRETS=/condor-secrets
KEYTABS=/keytabs

clog() { echo "$(basename "$0" .sh): $*" >&2; }

# wait_for PATH [SECONDS]: poll until PATH exists (a readiness check, not a sleep). Every file
# waited for is written to a temporary name and renamed, so existing means complete.
wait_for() {
  local path=$1 limit=${2:-300} start=$SECONDS
  until [ -e "$path" ]; do
    if (( SECONDS - start >= limit )); then clog "timeout after ${limit}s waiting for $path"; return 1; fi
    sleep 0.2
  done
}

# install_condor_config ROLE_DIR...: common/ plus the role's directories into /etc/condor.
install_condor_config() {
  rm -f /etc/condor/config.d/*-jba-*.conf
  install -m 0644 "$CONDOR_CONFIG_SRC"/common/*.conf /etc/condor/config.d/
  local d
  for d in "$@"; do install -m 0644 "$CONDOR_CONFIG_SRC/$d"/*.conf /etc/condor/config.d/; done
  install -m 0644 "$CONDOR_CONFIG_SRC/common/condor_mapfile" /etc/condor/condor_mapfile
}

# install_keytab: this host's keytab from the KDC's export, for condor (read as root).
install_keytab() {
  local fqdn
  fqdn=$(hostname)
  wait_for "$KEYTABS/.ready" 300
  wait_for "$KEYTABS/$fqdn.keytab" 60
  install -m 0600 -o root -g root "$KEYTABS/$fqdn.keytab" /etc/condor/krb5.keytab
}

# install_pool_key: the pool signing key (created by condor-cm) -> SEC_TOKEN_POOL_SIGNING_KEY_FILE.
install_pool_key() {
  wait_for "$SECRETS/POOL" 300
  install -d -m 0700 -o root -g root /etc/condor/passwords.d
  install -m 0600 -o root -g root "$SECRETS/POOL" /etc/condor/passwords.d/POOL
}

# ensure_hubsvc_account: the hub's service identity needs a schedd user record before the schedd
# lets it change the queue (23.x). Give it an unprivileged unix account on the schedd host, the way
# the schedd expects job owners to exist, and, once the schedd runs, add its user record.
ensure_hubsvc_account() {
  getent group hubsvc >/dev/null || groupadd -r hubsvc
  id hubsvc >/dev/null 2>&1 || useradd -r -g hubsvc -M -d /nonexistent -s /usr/sbin/nologin hubsvc
}

# add_hubsvc_userrec (background): wait until the local schedd answers, then add the record.
add_hubsvc_userrec() {
  local start=$SECONDS
  until condor_qusers hubsvc -add >/dev/null 2>&1; do
    if (( SECONDS - start >= 300 )); then clog "could not add the hubsvc user record"; return 1; fi
    sleep 0.5
  done
  clog "schedd user record for hubsvc present"
}
