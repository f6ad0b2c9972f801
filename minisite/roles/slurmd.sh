#!/bin/bash
# Role slurmd (node1..3.mini.test): a Slurm compute node (munged + slurmd). Its NodeName is the short
# hostname; its size and features come from slurm.conf (SlurmdParameters=config_overrides).
set -euo pipefail
. /usr/local/lib/minisite/roles/slurm-common.sh
start_munge
slurm_dirs
exec /usr/sbin/slurmd -D
