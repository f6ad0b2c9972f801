#!/bin/bash
# Role slurmd (node1..3.mini.test): a Slurm compute node (munged + slurmd). Its NodeName is the short
# hostname; its size and features come from slurm.conf (SlurmdParameters=config_overrides).
set -euo pipefail
. /usr/local/lib/minisite/roles/slurm-common.sh
start_munge
slurm_dirs
# Placeholder device files for the fake GPUs of slurm-config/gres.conf (node3).
ln -sf /dev/null /dev/fakegpu0; ln -sf /dev/null /dev/fakegpu1
exec /usr/sbin/slurmd -D
