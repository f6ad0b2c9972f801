#!/bin/bash
# The appliance image of the previous release (release/previous), for the upgrade test:
# localhost/jba-appliance:previous, labelled with its commit; rebuilt only when the commit changes.
# Built from `git archive` of that commit (no work tree of it is kept); the layers it shares with
# the current image (base packages, the wheels of an unchanged pyproject.toml) come from the cache.
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF=$PWD/containers.conf
commit=$(grep -Ev '^\s*(#|$)' release/previous | head -1)
tag=localhost/jba-appliance:previous
[[ "$commit" =~ ^[0-9a-f]{40}$ ]] || { echo "release/previous: not a full commit id: '$commit'" >&2; exit 2; }
have=$(podman image inspect --format '{{index .Labels "jba.commit"}}' "$tag" 2>/dev/null || true)
if [ "$have" = "$commit" ]; then echo "previous release image: $tag ($commit) already built"; exit 0; fi
if ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
  # a shallow clone: fetch just that commit from where this clone came from
  git fetch -q --depth=1 origin "$commit" 2>/dev/null || true
  git cat-file -e "$commit^{commit}" 2>/dev/null \
    || { echo "previous release $commit is not in this clone (shallow?): git fetch --unshallow" >&2; exit 1; }
fi
src=$(mktemp -d /tmp/jba-previous.XXXXXX)
trap 'rm -rf "$src"' EXIT
git archive "$commit" | tar -x -C "$src"
secret=()
[ -r /etc/ssl/certs/ca-certificates.crt ] && secret=(--secret id=hostca,src=/etc/ssl/certs/ca-certificates.crt)
start=$(date +%s)
podman build --pull=never "${secret[@]}" --label "jba.commit=$commit" -t "$tag" -f "$src/Containerfile" "$src"
echo "previous release image: $tag ($commit) built in $(( $(date +%s) - start )) s"
