#!/bin/bash
# Installs what the demo and the tests need on a Debian 12/13 host (root), idempotently:
# podman (+runc, aardvark-dns, slirp4netns), debootstrap, podman-compose from PyPI,
# Debian chromium for browser tests, and imports a debootstrapped debian:trixie base image.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
need_apt=()
for p in podman runc iptables gcc libkrb5-dev krb5-kdc krb5-admin-server aardvark-dns netavark slirp4netns uidmap debootstrap chromium fonts-dejavu-core python3-venv openssl curl krb5-user; do
  dpkg -s "$p" >/dev/null 2>&1 || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  # Install only: no package may start a host service (krb5-kdc is here for the unit tests' own
  # throwaway KDC on loopback, not as a service). policy-rc.d 101 = "action not allowed".
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && guard=1
  fi
  apt-get update -qq
  rc=0; apt-get install -y -qq --no-install-recommends "${need_apt[@]}" || rc=$?
  [ -n "$guard" ] && rm -f /usr/sbin/policy-rc.d
  [ $rc -eq 0 ] || exit $rc
fi
export CONTAINERS_CONF="$PWD/containers.conf"
# A venv for host-side tools (podman-compose, pytest, playwright) so the system python stays clean.
VENV=${TOOLS_VENV:-$PWD/.venv}
req_sha=$(sha256sum requirements-test.txt | cut -c1-16)
if [ ! -x "$VENV/bin/pytest" ] || [ "$(cat "$VENV/.req-sha" 2>/dev/null)" != "$req_sha" ]; then
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"   # an existing (or linked) venv is reused
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -r requirements-test.txt
  echo "$req_sha" > "$VENV/.req-sha"
fi
# axe-core (npm, MPL-2.0) for the browser tests' accessibility checks (tests/browser/axe.py),
# into build/npm (git-ignored): pinned, installed once, never loaded by the appliance itself.
AXE_VERSION=4.14.1
AXE_DIR=${AXE_DIR:-$PWD/build/npm}
if [ "$(cat "$AXE_DIR/.axe-version" 2>/dev/null)" != "$AXE_VERSION" ] \
   || [ ! -f "$AXE_DIR/node_modules/axe-core/axe.min.js" ]; then
  if ! command -v npm >/dev/null; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm
  fi
  mkdir -p "$AXE_DIR"
  npm install --prefix "$AXE_DIR" --no-audit --no-fund --no-save --silent "axe-core@$AXE_VERSION"
  echo "$AXE_VERSION" > "$AXE_DIR/.axe-version"
fi
# The Debian mirror the host itself uses (a site with a local mirror or proxy works as is): the
# repository apt fetches the host's own release from, main component, from apt's configuration
# (sources.list and deb822 .sources alike). DEBIAN_MIRROR overrides it.
host_debian_mirror() {
  local codename uri
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  uri=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT) $(IDENTIFIER)' 2>/dev/null \
        | awk -v rel="$codename" '$2 == rel && $3 == "main" && $4 == "Packages" { print $1; exit }')
  case "$uri" in
    http://*|https://*|file:/*) echo "${uri%/}" ;;
    *) return 1 ;;
  esac
}
# Base image: debootstrapped trixie imported under the standard name (no registry here).
if ! podman image exists docker.io/library/debian:trixie; then
  mirror=${DEBIAN_MIRROR:-$(host_debian_mirror)} || {
    echo "host-setup: no Debian mirror for the host's release in its apt sources; set DEBIAN_MIRROR" >&2
    exit 1
  }
  echo "host-setup: debootstrap trixie from $mirror (the host's apt mirror)"
  root=$(mktemp -d /var/tmp/trixie.XXXXXX)
  debootstrap --variant=minbase trixie "$root" "$mirror" >/dev/null
  rm -rf "$root"/var/cache/apt/archives/*.deb
  tar -C "$root" -c . | podman import - docker.io/library/debian:trixie >/dev/null
  rm -rf "$root"
fi
echo "host-setup: ok"
