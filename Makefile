# JupyterHub Batch Appliance — the two commands: `make demo` and `make test`.
SHELL := /bin/bash
export CONTAINERS_CONF := $(CURDIR)/containers.conf
VENV := $(CURDIR)/.venv
# One mini site by default; `source scripts/instance.sh N` selects an independent copy N (development).
export JBA_PROJECT ?= jba
export JBA_TAG ?= latest
export JBA_HTTPS_PORT ?= 8443
export JBA_PROM_PORT ?= 9090
COMPOSE := $(VENV)/bin/podman-compose -p $(JBA_PROJECT) -f compose.yaml
HOSTCA := /etc/ssl/certs/ca-certificates.crt
comma := ,
# Optional: networks that intercept HTTPS need the host CA for pip inside builds (never stored in a layer).
BUILD_SECRET := $(if $(wildcard $(HOSTCA)),--secret id=hostca$(comma)src=$(HOSTCA))
URL := https://hub.localhost:$(JBA_HTTPS_PORT)

.PHONY: demo demo-down deps images up wait clean-stale test unit integration bench logs report demo-load

deps:
	@bash scripts/host-setup.sh

images: deps
	podman build --pull=never $(BUILD_SECRET) -t localhost/jba-minisite:$(JBA_TAG) -f minisite/Containerfile .
	podman build --pull=never $(BUILD_SECRET) -t localhost/jba-appliance:$(JBA_TAG) -f Containerfile .
	podman build --pull=never -t localhost/jba-services:$(JBA_TAG) -f minisite/services/Containerfile .

# Containers left half-dead by an earlier session (CI starts after our processes are killed).
clean-stale: deps
	@bash scripts/clean-stale.sh

up: images clean-stale
	$(COMPOSE) up -d --no-build
	@$(MAKE) --no-print-directory wait

wait:
	@bash scripts/wait-ready.sh $(URL)
	@bash scripts/site-check.sh

demo: up
	@echo
	@echo "JupyterHub Batch Appliance is up: $(URL)/  (each user's server at https://<user>.hub.localhost:$(JBA_HTTPS_PORT)/; https://localhost:$(JBA_HTTPS_PORT)/ and plain HTTP on http://localhost:8080 redirect)"
	@echo "Demo logins (demo/users.tsv):"
	@tail -n +2 demo/users.tsv | grep -v '^bench' | awk -F'\t' '{printf "  %-6s password %-14s groups: %s\n", $$1, $$4, ($$3==""?"-":$$3)}'
	@podman exec $(JBA_PROJECT)_appliance_1 cat /srv/appliance/public/appliance-ca.crt > appliance-ca.crt 2>/dev/null \
	  && echo "TLS: the demo certificate is signed by a local CA, saved as ./appliance-ca.crt (also at http://localhost:$${JBA_HTTP_PORT:-8080}/appliance-ca.crt)" \
	  && echo "     SHA-256 $$(openssl x509 -in appliance-ca.crt -noout -fingerprint -sha256 | cut -d= -f2); trust it in your browser, or use curl --cacert appliance-ca.crt" \
	  || echo "TLS: the site's own certificate (no local CA)"
	@echo "Staff reservations (alice): https://reservations--service.hub.localhost:$(JBA_HTTPS_PORT)/services/reservations/   Prometheus: http://127.0.0.1:$(JBA_PROM_PORT)/"
	@echo "Stop with: make demo-down (state volume is kept)"

demo-down: deps
	$(COMPOSE) down

logs:
	$(COMPOSE) logs --tail 200

unit: deps
	$(VENV)/bin/pytest -q tests/unit

# Everything: unit, integration against the mini site, browser.
test: deps
	bash scripts/run-tests.sh

# Start-latency benchmark (docs/fast-lane.md, results in docs/performance.md); bounded to 20 min,
# removes its load at the end. Needs matplotlib in the tools venv (requirements-test.txt).
bench: up
	@$(VENV)/bin/python -c 'import matplotlib' 2>/dev/null || $(VENV)/bin/pip install -q matplotlib
	$(VENV)/bin/python performance/bench.py

# Usage pictures (docs/operations.md) from the mini site's Prometheus: distinct users per day,
# concurrent sessions per lane/partition (stacked), spawn latency per backend -> docs/report-*.png.
# REPORT_SINCE: the period (default 1d). `make demo-load` first makes a modest load to draw.
REPORT_SINCE ?= 1d
report: deps
	@$(VENV)/bin/python -c 'import matplotlib' 2>/dev/null || $(VENV)/bin/pip install -q matplotlib
	$(VENV)/bin/python -m appliance.report --prometheus http://127.0.0.1:$(JBA_PROM_PORT) --since $(REPORT_SINCE) --out docs

demo-load: deps
	$(VENV)/bin/python performance/demo_load.py
