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
# The name filter is a regular expression: anchor it, or project jba would also take pod_jba4 & co.
podman pod ls --filter "name=^pod_${P}\$" -q | xargs -r podman pod rm -f >/dev/null 2>&1 || true
exit 0
