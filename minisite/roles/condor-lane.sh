#!/bin/bash
# Mini-site role "condor-lane" (lane.mini.test): notebook lane collector + negotiator + schedd + credd.
set -euo pipefail
. /usr/local/lib/minisite/roles/_condor-common.sh

install_condor_config lane
install_keytab
install_pool_key
ensure_hubsvc_account
add_hubsvc_userrec &
run_condor_master
