#!/bin/bash
# Mini-site role "condor-schedd" (schedd.mini.test): the main pool's batch schedd + credd.
# (No hubsvc account or user record here: the hub's identity is a queue super user on the lane only.)
set -euo pipefail
. /usr/local/lib/minisite/roles/_condor-common.sh

install_condor_config schedd
install_keytab
install_pool_key
run_condor_master
