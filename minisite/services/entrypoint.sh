#!/bin/bash
# Roles of the mini site's operations image (minisite/services/Containerfile):
#   prometheus  scrapes the hub's /hub/metrics with a token that may read metrics only. The token
#               is written by the appliance (minisite/appliance/init.d/30-ops-secrets.sh) into the
#               metrics-token volume; this role waits for it and installs a private copy.
#   postgres    the hub database. The password comes from the db-secret volume (same hook); the
#               data directory lives in the db-data volume and is initialised on first start.
set -euo pipefail
role=${1:?role}
wait_file() {  # PATH SECONDS
  for _ in $(seq 1 $(( $2 * 5 ))); do [ -s "$1" ] && return 0; sleep 0.2; done
  echo "$role: timeout waiting for $1" >&2; return 1
}
case "$role" in
  prometheus)
    wait_file /etc/minisite/metrics-token/prometheus.token 300
    install -m 0400 -o prometheus -g prometheus /etc/minisite/metrics-token/prometheus.token /etc/prometheus/hub.token
    # the appliance's cluster CA (public), to verify the hub's cluster-side TLS listener
    wait_file /etc/minisite/metrics-token/cluster-ca.crt 300
    install -m 0444 /etc/minisite/metrics-token/cluster-ca.crt /etc/prometheus/cluster-ca.crt
    install -d -o prometheus -g prometheus /var/lib/prometheus/data
    exec runuser -u prometheus -- /usr/bin/prometheus \
      --config.file=/etc/minisite/prometheus/prometheus.yml \
      --storage.tsdb.path=/var/lib/prometheus/data \
      --storage.tsdb.retention.time=30d \
      --web.listen-address=0.0.0.0:9090
    ;;
  postgres)
    wait_file /etc/minisite/db-secret/password 300
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    data=/var/lib/postgresql/data
    install -d -o postgres -g postgres -m 0700 "$data"
    install -d -o postgres -g postgres /run/postgresql
    if [ ! -s "$data/PG_VERSION" ]; then
      runuser -u postgres -- "$bin/initdb" -D "$data" --auth-local=peer --auth-host=scram-sha-256 \
        --encoding=UTF8 >/dev/null
      # Only the appliance's address, only its database and role, password (SCRAM) required.
      echo "host jupyterhub jupyterhub ${APPLIANCE_ADDR:?}/32 scram-sha-256" >> "$data/pg_hba.conf"
    fi
    runuser -u postgres -- "$bin/pg_ctl" -D "$data" -w -o "-c listen_addresses=''" start >/dev/null
    # Role and database (idempotent); the password goes over stdin, never on a command line.
    pw=$(cat /etc/minisite/db-secret/password)
    { echo "SELECT 'CREATE ROLE jupyterhub LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname='jupyterhub')\\gexec"
      echo "\\set pw '$pw'"
      echo "ALTER ROLE jupyterhub PASSWORD :'pw';"
      echo "SELECT 'CREATE DATABASE jupyterhub OWNER jupyterhub' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname='jupyterhub')\\gexec"
    } | runuser -u postgres -- "$bin/psql" -q -v ON_ERROR_STOP=1 -d postgres >/dev/null
    unset pw
    runuser -u postgres -- "$bin/pg_ctl" -D "$data" -w stop >/dev/null
    exec runuser -u postgres -- "$bin/postgres" -D "$data" -c listen_addresses='*' -c log_connections=off
    ;;
  *) echo "unknown role $role" >&2; exit 2 ;;
esac
