#!/bin/bash
# After the appliance answers (wait-ready.sh): every service of the mini site is running and the
# KDC gives a demo user a ticket from the appliance (what every login needs). Bounded (120 s).
# On failure it prints what is wrong (container states, the last log lines of the broken ones)
# and exits 1, so a broken site is named before any test fails for it.
set -uo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/containers.conf}
P=${JBA_PROJECT:-jba}
mapfile -t services < <(.venv/bin/podman-compose -p "$P" -f compose.yaml config --services 2>/dev/null)
user=$(awk -F'\t' 'NR == 2 {print $1}' demo/users.tsv)
pw=$(awk -F'\t' 'NR == 2 {print $4}' demo/users.tsv)
deadline=$(( $(date +%s) + ${SITE_CHECK_TIMEOUT:-120} ))
while :; do
  bad=()
  for s in "${services[@]}"; do
    state=$(podman inspect -f '{{.State.Status}}' "${P}_${s}_1" 2>/dev/null || echo missing)
    [ "$state" = running ] || bad+=("$s ($state)")
  done
  kinit_out=""
  if [ ${#bad[@]} -eq 0 ]; then
    kinit_out=$(printf '%s\n' "$pw" | podman exec -i "${P}_appliance_1" \
      env KRB5CCNAME=MEMORY:sitecheck kinit "$user" 2>&1 >/dev/null) && {
      echo "site check: ${#services[@]} services running; the KDC answers a login of $user"
      exit 0
    }
  fi
  [ "$(date +%s)" -lt "$deadline" ] && { sleep 2; continue; }
  echo "site check FAILED:" >&2
  [ ${#bad[@]} -gt 0 ] && echo "  not running: ${bad[*]}" >&2
  [ -n "$kinit_out" ] && echo "  kinit $user from the appliance: $kinit_out" >&2
  podman ps -a --filter "label=io.podman.compose.project=$P" --format '  {{.Names}} {{.Status}}' >&2
  for s in "${services[@]}"; do
    state=$(podman inspect -f '{{.State.Status}}' "${P}_${s}_1" 2>/dev/null || echo missing)
    if [ "$state" != running ] || [ "$s" = kdc ]; then
      echo "--- last log lines of ${P}_${s}_1 ($state)" >&2
      podman logs --tail 30 "${P}_${s}_1" 2>&1 | sed 's/^/  /' >&2
    fi
  done
  exit 1
done
