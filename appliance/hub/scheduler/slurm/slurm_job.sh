#!/bin/sh
# The batch script of every Slurm notebook job. Fixed text shipped with the appliance: nothing in
# it comes from user input, and sbatch reads it from the appliance's installation.
#
# sbatch passes the arguments after the script path:  LAUNCHER --env-file FILE --port-range LO-HI
# (built by appliance.hub.scheduler.slurm.sbatch.build_sbatch_argv from validated values only).
#
# The job is submitted with --export=NIL: it starts with nothing but SLURM_* variables (neither
# the hub's nor the submit helper's environment, no slow --get-user-env login shell). Give it the
# basic login variables; appliance-launch adds the hub's variables from the private env file.
set -eu
launcher=$1
shift
user=$(id -un)
home=$(getent passwd "$(id -u)" | cut -d: -f6)
HOME=${home:-/}
USER=$user
LOGNAME=$user
SHELL=$(getent passwd "$(id -u)" | cut -d: -f7)
PATH=/usr/local/bin:/usr/bin:/bin
export HOME USER LOGNAME SHELL PATH
cd "$HOME"
exec "$launcher" "$@"
