#!/bin/bash
# Mini-site hook: the example notebooks (demo/notebooks/, mounted at /etc/minisite/notebooks) in
# every demo user's home as ~/examples/<name>.ipynb. An existing copy is never overwritten (the
# user may have edited it); a user gets a missing one back at the next start of the appliance.
set -euo pipefail
src=/etc/minisite/notebooks
[ -d "$src" ] || exit 0
tail -n +2 /etc/minisite/users.tsv | tr '\t' '|' | while IFS='|' read -r user uid _groups _pw; do
  case "$user" in ''|bench*) continue ;; esac
  home=/home/$user
  [ -d "$home" ] || continue
  # As the user: their home is theirs (0700); root must not follow links the user could plant.
  runuser -u "$user" -- sh -c 'umask 022; mkdir -p "$1/examples" && for f in "$2"/*.ipynb; do
      t="$1/examples/$(basename "$f")"; [ -e "$t" ] || cp "$f" "$t"; done' sh "$home" "$src" \
    || echo "30-example-notebooks: could not install the examples for $user" >&2
done
