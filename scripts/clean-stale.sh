#!/bin/bash
# Remove this project's containers that are not running (left by a killed session), and with
# FULL=1 every project container; then networks without containers. Volumes are kept.
set -uo pipefail
P=${JBA_PROJECT:-jba}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$(dirname "$0")/../containers.conf}
mapfile -t all < <(podman ps -a --filter label=io.podman.compose.project=$P --format '{{.Names}} {{.State}}')
bad=0
for line in "${all[@]}"; do
  set -- $line
  [ "${2:-}" = running ] || bad=1
done
if [ "${FULL:-0}" = 1 ] || [ $bad = 1 ]; then
  if [ ${#all[@]} -gt 0 ]; then
    echo "clean-stale: removing project containers (${#all[@]})"
    podman ps -a --filter label=io.podman.compose.project=$P -q | xargs -r podman rm -f -t 5 >/dev/null
  fi
  for net in $(podman network ls --format '{{.Name}}' | grep "^${P}_"); do
    podman network rm -f "$net" >/dev/null 2>&1 || true
  done
fi
# Bridge interfaces whose network is gone (a killed session, or `podman network prune` while
# containers were torn down hard) keep their subnet on the host, and netavark then refuses to
# create the project's networks ("subnet ... is already used on the host"). Remove such orphans:
# podman<N> bridges that no podman network names.
used=$(podman network inspect $(podman network ls -q) --format '{{.NetworkInterface}}' 2>/dev/null)
for dev in $(ip -o link show type bridge 2>/dev/null | awk -F': ' '{print $2}' | grep -E '^podman[0-9]+$'); do
  if ! grep -qx "$dev" <<< "$used"; then
    echo "clean-stale: removing orphan bridge $dev ($(ip -o -4 addr show dev "$dev" | awk '{print $4}'))"
    ip link delete "$dev" 2>/dev/null || true
  fi
done
# Port forwards of containers that are gone (netavark's iptables rules outlive a hard kill): a
# stale DNAT to a dead address catches the published port first and the site is unreachable.
if command -v iptables >/dev/null && iptables -t nat -S NETAVARK-HOSTPORT-DNAT >/dev/null 2>&1; then
  ids=$(podman ps -aq --no-trunc)
  iptables -t nat -S NETAVARK-HOSTPORT-DNAT | grep -- '-A NETAVARK-HOSTPORT-DNAT' | while read -r rule; do
    id=$(sed -n 's/.* id: \([0-9a-f]\{64\}\).*/\1/p' <<< "$rule")
    if [ -n "$id" ] && ! grep -qx "$id" <<< "$ids"; then
      echo "clean-stale: removing the port forward of gone container ${id:0:12}"
      eval "iptables -t nat ${rule/-A /-D }" || true
    fi
  done
  for chain in $(iptables -t nat -S | awk '$1 == "-N" && $2 ~ /^NETAVARK-DN-/ {print $2}'); do
    if ! iptables -t nat -S NETAVARK-HOSTPORT-DNAT | grep -q -- "-j $chain"; then
      iptables -t nat -F "$chain" && iptables -t nat -X "$chain" || true
    fi
  done
fi
# The name filter is a regular expression: anchor it, or project jba would also take pod_jba4 & co.
podman pod ls --filter "name=^pod_${P}\$" -q | xargs -r podman pod rm -f >/dev/null 2>&1 || true
exit 0
