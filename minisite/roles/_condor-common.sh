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

# The hub's service identity (IDTOKEN subject hubsvc@mini.test) is a QUEUE_SUPER_USER on the notebook
# lane (only there), but HTCondor 23.x refuses every queue change (condor_rm, Schedd.act) from an
# identity that has no schedd *user record* ("QMGT command failed: anonymous user not permitted")
# before it even looks at super-user status. Records are normally made by a first submission.
# `condor_qusers -add` would be the tool for it, but in 23.9 it never asks the schedd to create the
# record (it prints "add succeeded" with Result = 2, i.e. "no such user"). So:
#  ensure_hubsvc_account: an unprivileged, login-less unix account hubsvc on the lane host (the
#                         schedd expects job owners to exist as accounts);
#  add_hubsvc_userrec:    once the schedd answers, submit one HELD job as hubsvc (local FS
#                         authentication, so the identity is exactly hubsvc@mini.test) and remove it.
#                         The user record stays (in the schedd's job queue log). The job must pass
#                         the lane's submit requirements (lane/40-jba-lane-policy.conf: a refused
#                         submission creates no record), so it is shaped like a notebook job; held
#                         and removed at once, it never runs (and no execute node has a hubsvc account).
ensure_hubsvc_account() {
  getent group hubsvc >/dev/null || groupadd -r hubsvc
  id hubsvc >/dev/null 2>&1 || useradd -r -g hubsvc -M -d /nonexistent -s /usr/sbin/nologin hubsvc
}

add_hubsvc_userrec() {
  local start=$SECONDS out
  until condor_qusers -af User >/dev/null 2>&1; do   # readiness: the schedd answers queries
    if (( SECONDS - start >= 300 )); then clog "schedd did not come up"; return 1; fi
    sleep 0.5
  done
  if condor_qusers -af User 2>/dev/null | grep -qx 'hubsvc@mini.test'; then
    clog "schedd user record for hubsvc@mini.test present"; return 0
  fi
  local launcher hub_id group
  launcher=$(condor_config_val JBA_LAUNCHER 2>/dev/null || echo /usr/local/bin/appliance-launch)
  hub_id=$(condor_config_val JBA_HUB_ID 2>/dev/null || echo none)
  group=$(condor_config_val JBA_NOTEBOOK_GROUP 2>/dev/null || echo group_notebook)
  out=$(cd /tmp && printf '%s\n' 'universe = vanilla' "executable = $launcher" 'transfer_executable = false' \
          'arguments = "--env-file /nonexistent/bootstrap.json --port-range 40000-40000"' \
          'initialdir = /' 'should_transfer_files = NO' 'request_cpus = 1' 'request_memory = 1' \
          'allowed_job_duration = 60' '+IsNotebookJob = true' "+JupyterHubId = \"$hub_id\"" \
          '+JupyterHubUser = "hubsvc"' "accounting_group = $group" 'accounting_group_user = hubsvc' \
          'hold = true' '+JbaUserRecordBootstrap = true' 'queue' \
        | runuser -u hubsvc -- condor_submit -terse - 2>&1) || { clog "bootstrap submit failed: $out"; return 1; }
  runuser -u hubsvc -- condor_rm -constraint 'JbaUserRecordBootstrap =?= true' >/dev/null 2>&1 || true
  if condor_qusers -af User 2>/dev/null | grep -qx 'hubsvc@mini.test'; then
    clog "created the schedd user record for hubsvc@mini.test"
  else
    clog "could not create the schedd user record for hubsvc@mini.test"; return 1
  fi
}

# run_condor_master: condor_master in the foreground of the container. On SIGTERM (podman stop)
# HTCondor's default is a GRACEFUL shutdown, which waits for running jobs (up to
# SHUTDOWN_GRACEFUL_TIMEOUT, 30 min) and outlasts podman's 10 s stop timeout; the mini site asks
# for a FAST shutdown (SIGQUIT: jobs are killed, the daemons exit at once) instead.
run_condor_master() {
  condor_master -f &
  local pid=$!
  trap 'kill -QUIT "$pid" 2>/dev/null' TERM INT
  trap 'kill -HUP "$pid" 2>/dev/null' HUP     # condor_master: HUP = reconfig
  local rc=0
  while kill -0 "$pid" 2>/dev/null; do
    wait "$pid" && rc=0 || rc=$?    # wait returns early (>128) when a trapped signal arrives
  done
  exit "$rc"
}
