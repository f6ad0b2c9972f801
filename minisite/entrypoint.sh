#!/bin/bash
# Mini-site entrypoint: common setup, then the role script minisite/roles/<role>.sh.
set -euo pipefail
role=${1:?role}
shift || true
# Users and groups from demo/users.tsv (same uid/gid everywhere).
if [ -r /etc/minisite/users.tsv ]; then
  getent group belle2 >/dev/null || groupadd -g 3001 belle2
  getent group upex >/dev/null || groupadd -g 3002 upex
  # Tabs are IFS whitespace (runs collapse, so an empty groups column would shift the rest): use '|'.
  tail -n +2 /etc/minisite/users.tsv | tr '\t' '|' | while IFS='|' read -r user uid groups _pw; do
    [ -n "$user" ] || continue
    getent group "$user" >/dev/null || groupadd -g "$uid" "$user"
    id "$user" >/dev/null 2>&1 || useradd -M -u "$uid" -g "$uid" -d "/home/$user" -s /bin/bash ${groups:+-G "$groups"} "$user"
    if [ -d /home ] && [ ! -d "/home/$user" ]; then
      install -d -m 0700 -o "$uid" -g "$uid" "/home/$user"
    fi
  done
fi
# krb5.conf shared by every host.
cat > /etc/krb5.conf <<'KRB'
[libdefaults]
    default_realm = MINI.TEST
    dns_lookup_kdc = false
    dns_lookup_realm = false
    rdns = false
    forwardable = true
    renew_lifetime = 7d
    ticket_lifetime = 10h
[realms]
    MINI.TEST = {
        kdc = kdc.mini.test
        admin_server = kdc.mini.test
    }
[domain_realm]
    .mini.test = MINI.TEST
    mini.test = MINI.TEST
KRB
# Wait for this host's keytab (written by the KDC) when the role needs one: wait_keytab NAME
wait_file() { for _ in $(seq 1 300); do [ -s "$1" ] && return 0; sleep 0.2; done; echo "timeout waiting for $1" >&2; return 1; }
export -f wait_file
exec "/usr/local/lib/minisite/roles/${role}.sh" "$@"
