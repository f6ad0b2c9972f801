#!/bin/bash
# Wait until the appliance answers /hub/health over HTTPS (readiness check, bounded).
url=${1:-https://hub.localhost:8443}
for i in $(seq 1 600); do
  if curl -ksf -o /dev/null "$url/hub/health"; then echo "ready: $url ($((i/2)) s)"; exit 0; fi
  sleep 0.5
done
echo "appliance did not become ready at $url" >&2
exit 1
