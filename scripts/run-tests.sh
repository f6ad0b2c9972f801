#!/bin/bash
# `make test`: build images, bring up a fresh mini site, run every test (unit, integration,
# browser) in ONE pytest run, so its closing line counts everything. Exits non-zero on failure.
set -uo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF=$PWD/containers.conf
P=${JBA_PROJECT:-jba}
URL=https://hub.localhost:${JBA_HTTPS_PORT:-8443}
export APPLIANCE_URL=$URL
COMPOSE=(.venv/bin/podman-compose -p "$P" -f compose.yaml)
start=$(date +%s)
make --no-print-directory images || { echo "image build failed"; exit 1; }
# The previous release's appliance image, for the upgrade test (tests/integration/test_zzz_upgrade.py).
bash scripts/build-previous.sh > /tmp/jba-build-previous.log 2>&1 \
  || { tail -30 /tmp/jba-build-previous.log; echo "previous release image build failed: the upgrade test will fail"; }
echo "images ready after $(( $(date +%s) - start )) s"
FULL=1 bash scripts/clean-stale.sh
"${COMPOSE[@]}" down -v >/dev/null 2>&1 || true
"${COMPOSE[@]}" up -d --no-build > /tmp/jba-compose-up.log 2>&1 || { tail -50 /tmp/jba-compose-up.log; echo "compose up failed"; }
bash scripts/wait-ready.sh "$URL" || { "${COMPOSE[@]}" logs --tail 100 appliance; }
# Every service up and the KDC answering; if not, say what is broken before the tests show it.
bash scripts/site-check.sh || echo "the mini site is not healthy (above): integration tests will fail"
echo "mini site ready after $(( $(date +%s) - start )) s"
mkdir -p tests/artifacts
.venv/bin/pytest -ra --timeout 600 tests "$@"
rc=$?
if [ $rc -ne 0 ]; then
  for c in $(podman ps -a --filter label=io.podman.compose.project=$P --format '{{.Names}}'); do
    podman logs --tail 400 "$c" > "tests/artifacts/$c.log" 2>&1 || true
  done
  echo "container logs saved under tests/artifacts/"
fi
echo "make test finished in $(( $(date +%s) - start )) s"
exit $rc
