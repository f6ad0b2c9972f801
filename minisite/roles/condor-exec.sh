#!/bin/bash
# Mini-site role "condor-exec" (exec1/exec2.mini.test): startd serving the main pool and the lane.
# Arguments: further condor-config/ directories for this node (exec1: exec-gpu, its GPUs).
set -euo pipefail
. /usr/local/lib/minisite/roles/_condor-common.sh

install_condor_config exec "$@"
install_keytab
install_pool_key
run_condor_master
