#!/bin/bash
# Mini-site hook: create the demo users (a real site resolves users through NSS/sssd instead).
set -euo pipefail
getent group belle2 >/dev/null || groupadd -g 3001 belle2
getent group upex >/dev/null || groupadd -g 3002 upex
# The hub may run the submit helper only as members of jupyterhub-users (image/sudoers).
getent group jupyterhub-users >/dev/null || groupadd -g 3100 jupyterhub-users
# Tabs are IFS whitespace (an empty groups column would collapse): split on '|' instead.
tail -n +2 /etc/minisite/users.tsv | tr '\t' '|' | while IFS='|' read -r user uid groups _pw; do
  [ -n "$user" ] || continue
  getent group "$user" >/dev/null || groupadd -g "$uid" "$user"
  id "$user" >/dev/null 2>&1 || useradd -M -u "$uid" -g "$uid" -d "/home/$user" -s /bin/bash -G "jupyterhub-users${groups:+,$groups}" "$user"
  id -nG "$user" | tr ' ' '\n' | grep -qx jupyterhub-users || usermod -aG jupyterhub-users "$user"
  [ -d "/home/$user" ] || install -d -m 0700 -o "$uid" -g "$uid" "/home/$user"
done
