#!/bin/sh
# Appliance init hook (mini site): the operations secrets, made once on first start (kept across
# restarts and image upgrades in their volumes; root 0600, never on a command line or in compose):
#   /etc/appliance/secrets/db/password, .../db/db_url  the hub database (PostgreSQL container "db",
#       which reads only the password); the hub reads db_url (appliance/hub/database.py)
#   /etc/appliance/secrets/metrics/prometheus.token    the token of the hub service "prometheus"
#       (role with read:metrics only); the Prometheus container installs a private copy
#   /etc/appliance/secrets/metrics/cluster-ca.crt     the appliance's cluster CA (public)
set -eu
umask 077
gen() { /opt/jupyterhub/bin/python -c 'import secrets; print(secrets.token_hex(32))'; }
put() {  # FILE CONTENT: atomic, only if missing
  [ -s "$1" ] && return 0
  printf '%s\n' "$2" > "$1.tmp" && mv -f "$1.tmp" "$1"
  echo "30-ops-secrets: created $1" >&2
}
d=/etc/appliance/secrets/db
if [ -d "$d" ]; then
  put "$d/password" "$(gen)"
  # The postgres role's pg_hba.conf admits only this host, with SCRAM.
  put "$d/db_url" "postgresql+psycopg2://jupyterhub:$(cat "$d/password")@db.mini.test:5432/jupyterhub"
fi
m=/etc/appliance/secrets/metrics
[ -d "$m" ] && put "$m/prometheus.token" "$(gen)"
# The cluster CA (public; made by appliance.init before the hooks) for Prometheus to verify the
# hub's cluster-side TLS listener; refreshed when the CA changes.
ca=${APPLIANCE_STATE_DIR:-/srv/appliance}/internal-tls/cluster-ca.crt
if [ -d "$m" ] && [ -s "$ca" ] && ! cmp -s "$ca" "$m/cluster-ca.crt"; then
  cp "$ca" "$m/cluster-ca.crt.tmp" && chmod 0644 "$m/cluster-ca.crt.tmp" && mv -f "$m/cluster-ca.crt.tmp" "$m/cluster-ca.crt"
fi
# Root only: the containers that use them read them as root and keep a private copy.
chmod 0700 "$d" "$m" 2>/dev/null || true
exit 0
