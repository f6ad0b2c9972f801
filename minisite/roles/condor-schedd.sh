#!/bin/bash
# Mini-site role "condor-schedd" (schedd.mini.test): the main pool's batch schedd + credd.
set -euo pipefail
. /usr/local/lib/minisite/roles/_condor-common.sh

install_condor_config schedd
install_keytab
install_pool_key
ensure_hubsvc_account
add_hubsvc_userrec &
run_condor_master
