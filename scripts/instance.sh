# Source this to work on an independent copy of the mini site (development only; make demo and
# make test use the default copy): `source scripts/instance.sh N` with N in 1..9.
# Copy N has its own compose project (jbaN), image tag, subnets and host ports.
n=${1:?usage: source scripts/instance.sh N}
case "$n" in [1-9]) ;; *) echo "N must be 1..9" >&2; return 1 2>/dev/null || exit 1 ;; esac
export JBA_PROJECT=jba$n JBA_TAG=i$n JBA_NET=172.30.$n JBA_DMZ=172.31.$n
export JBA_HTTPS_PORT=$((8443 + n * 100)) JBA_HTTP_PORT=$((8080 + n * 100)) JBA_PROM_PORT=$((9090 + n * 100))
export APPLIANCE_URL=https://hub.localhost:$JBA_HTTPS_PORT
echo "mini site copy $n: project $JBA_PROJECT, $APPLIANCE_URL, cluster net $JBA_NET.0/24"
