#!/bin/bash
# Mini-site role "kdc": MIT KDC for realm MINI.TEST.
#
# - Database and stash live in the `kdc-db` volume (/var/lib/krb5kdc), host keytabs in the `keytabs`
#   volume (/keytabs/<fqdn>.keytab, root 0600; every reader runs as root). The database is not in the
#   keytabs volume on purpose: the other hosts mount that volume and must not see the master key.
# - Both volumes carry a generation id (a random string made with the database). Same id: the
#   keytabs were exported from this database, only missing ones are exported. Different or missing
#   id (e.g. one volume was removed): every keytab is exported again from this database.
# - Users come from /etc/minisite/users.tsv (user uid groups password, one header line) and are
#   (re)set to the password listed there on every start, so the file stays authoritative.
# - /keytabs/.ready is touched last; the other hosts wait for it.
set -euo pipefail

REALM=MINI.TEST
DB_DIR=/var/lib/krb5kdc
KT_DIR=/keytabs
USERS_TSV=/etc/minisite/users.tsv
# Hosts that get host/<fqdn>@MINI.TEST and a keytab.
HOSTS=(schedd.mini.test lane.mini.test cm.mini.test exec1.mini.test exec2.mini.test appliance.mini.test)
# Renewable tickets: the effective limits are the minimum of realm, krbtgt and client principal.
MAXLIFE="10 hours"
MAXRENEW="7 days"

log() { echo "kdc: $*" >&2; }

mkdir -p /etc/krb5kdc "$DB_DIR" "$KT_DIR"
chmod 0700 "$DB_DIR"
cat > /etc/krb5kdc/kdc.conf <<EOF
[kdcdefaults]
    kdc_ports = 88
    kdc_tcp_ports = 88

[realms]
    $REALM = {
        database_name = $DB_DIR/principal
        key_stash_file = $DB_DIR/stash
        acl_file = /etc/krb5kdc/kadm5.acl
        max_life = 10h 0m 0s
        max_renewable_life = 7d 0h 0m 0s
        master_key_type = aes256-cts-hmac-sha1-96
        supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
        default_principal_flags = +renewable +forwardable +preauth
    }

[logging]
    kdc = STDERR
    admin_server = FILE:/var/log/kadmin.log
    default = FILE:/var/log/krb5.log
EOF
: > /etc/krb5kdc/kadm5.acl

kadm() { kadmin.local -r "$REALM" -q "$1" >/dev/null; }
has_princ() { kadmin.local -r "$REALM" -q "getprinc $1" 2>/dev/null | grep -q '^Principal:'; }

# 1. Database (created once; kept in the kdc-db volume).
if [ ! -s "$DB_DIR/principal" ] || [ ! -s "$DB_DIR/stash" ]; then
  log "creating the database for $REALM"
  rm -f "$DB_DIR"/principal* "$DB_DIR/stash" "$DB_DIR/generation"
  kdb5_util create -s -r "$REALM" -P "$(openssl rand -hex 32)" >/dev/null
  openssl rand -hex 16 > "$DB_DIR/generation"
fi
[ -s "$DB_DIR/generation" ] || openssl rand -hex 16 > "$DB_DIR/generation"
generation=$(cat "$DB_DIR/generation")

# 2. Realm-wide ticket limits on the TGS principal as well (it caps every ticket's renew-till).
kadm "modprinc -maxlife \"$MAXLIFE\" -maxrenewlife \"$MAXRENEW\" +allow_renewable krbtgt/$REALM@$REALM"

# 3. Users, with the passwords from users.tsv: one kadmin.local session for all of them (a call
#    each took ~0.1 s; the file lists 120 bench users), then a check that every one exists.
if [ -r "$USERS_TSV" ]; then
  existing=$(kadmin.local -r "$REALM" -q listprincs 2>/dev/null | grep "@$REALM\$" | sed "s/@$REALM\$//")
  # Tabs are IFS whitespace (a run of them collapses, shifting columns after an empty one): use '|'.
  tail -n +2 "$USERS_TSV" | tr '\t' '|' | while IFS='|' read -r user _uid _groups pw; do
    [ -n "$user" ] && [ -n "$pw" ] || continue
    if grep -qx "$user" <<<"$existing"; then
      echo "cpw -pw \"$pw\" $user"
    else
      echo "addprinc -pw \"$pw\" $user"
    fi
    echo "modprinc -maxlife \"$MAXLIFE\" -maxrenewlife \"$MAXRENEW\" +allow_renewable $user"
  done | kadmin.local -r "$REALM" >/dev/null 2>&1
  have=$(kadmin.local -r "$REALM" -q listprincs 2>/dev/null)
  missing=$(tail -n +2 "$USERS_TSV" | cut -f1 | while read -r user; do
    [ -z "$user" ] || grep -qx "$user@$REALM" <<<"$have" || echo "$user"; done)
  [ -z "$missing" ] || { log "could not add user principals: $missing"; exit 1; }
  log "user principals: $(tail -n +2 "$USERS_TSV" | grep -c .) from $USERS_TSV"
fi

# 4. A short-lived test principal for credential-renewal tests: tickets live 2 minutes and can be
#    renewed for 10 minutes (set on the principal, so kinit cannot ask for more).
has_princ shortlived || kadm "addprinc -pw shortlived-pass shortlived"
kadm "cpw -pw shortlived-pass shortlived"
kadm "modprinc -maxlife \"2 minutes\" -maxrenewlife \"10 minutes\" +allow_renewable shortlived"

# 5. Host principals and keytabs.
if [ "$(cat "$KT_DIR/.generation" 2>/dev/null || true)" != "$generation" ]; then
  log "keytab volume does not belong to this database: exporting every keytab again"
  rm -f "$KT_DIR/.ready" "$KT_DIR"/*.keytab
fi
for fqdn in "${HOSTS[@]}"; do
  princ="host/$fqdn@$REALM"
  has_princ "$princ" || kadm "addprinc -randkey $princ"
  kadm "modprinc -maxlife \"$MAXLIFE\" -maxrenewlife \"$MAXRENEW\" +allow_renewable $princ"
  kt="$KT_DIR/$fqdn.keytab"
  if [ ! -s "$kt" ]; then
    rm -f "$KT_DIR/.ready"
    # ktadd gives the principal fresh random keys and writes them; write to a temp file and rename
    # so a reader never sees half a keytab.
    tmp="$KT_DIR/.$fqdn.keytab.tmp"
    rm -f "$tmp"
    kadm "ktadd -k $tmp $princ"
    chmod 0600 "$tmp"
    mv -f "$tmp" "$kt"
    log "exported $kt"
  fi
done
echo "$generation" > "$KT_DIR/.generation"
touch "$KT_DIR/.ready"
log "realm $REALM ready (hosts: ${HOSTS[*]})"

exec krb5kdc -n -r "$REALM"
