# Every target creates .venv and installs what it needs, so each works on a fresh machine.
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: demo test lint bench bench-tools soak stack compose-secrets tools rules dashboards clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# promtool and amtool come from Debian's prometheus and prometheus-alertmanager packages,
# kubectl (for `kubectl kustomize`) from kubernetes-client; each installed only when missing.
tools:
	@command -v promtool >/dev/null 2>&1 && command -v amtool >/dev/null 2>&1 || { $(APT_GET) update -qq && $(APT_GET) install -y -qq prometheus prometheus-alertmanager >/dev/null; }
	@# sql_exporter 0.4.5, the peer of tests/test_peers.py
	@command -v prometheus-sql-exporter >/dev/null 2>&1 || { $(APT_GET) update -qq && $(APT_GET) install -y -qq prometheus-sql-exporter >/dev/null; }
	@command -v kubectl >/dev/null 2>&1 || { $(APT_GET) update -qq && $(APT_GET) install -y -qq kubernetes-client >/dev/null; }

# `make demo PORT=9700` serves on another port.
demo: $(STAMP)
	$(VENV)/bin/cockpit-exporter demo $(if $(PORT),--web.listen-address 127.0.0.1:$(PORT))

lint: $(STAMP)
	$(VENV)/bin/ruff check exporter tests
	$(VENV)/bin/ruff format --check exporter tests
	$(VENV)/bin/mypy

# Test files run in parallel, three at a time: most tests wait on servers (Prometheus, MariaDB,
# subprocesses), so a 2-core machine keeps three busy; a file's tests share a worker.
test: lint tools
	$(PY) -m pytest -n 3 --dist loadfile --durations=15

# The fleet benchmark's peer, sql_exporter 0.4.5 (Debian's prometheus-sql-exporter), comes with tools.
bench-tools: tools

bench: $(STAMP) bench-tools
	$(PY) -m tests.bench.scrape
	$(PY) -m tests.bench.hostile
	$(PY) -m tests.bench.databases
	$(PY) -m tests.bench.platform
	$(PY) -m tests.bench.shards
	$(PY) -m tests.bench.tracing

# 30 minutes, 1,000 tenants with faults, a real Prometheus; not part of `make test`.
# SOAK_MINUTES and SOAK_TENANTS shorten it.
soak: $(STAMP) tools
	$(PY) -m tests.bench.soak

# The passwords and demo secrets docker-compose.yml names, made once into deploy/secrets/
# (git-ignored); `docker compose up` needs them, `make stack` makes them itself.
compose-secrets: $(STAMP)
	$(PY) -m exporter.stack.secrets deploy/secrets

# docker-compose.yml's topology without docker: MariaDB is the local server, Prometheus and
# Alertmanager Debian's; Grafana and prom-label-proxy are skipped. STACK_PORT_OFFSET moves ports.
stack: $(STAMP) tools
	$(PY) -m exporter.stack $(if $(STACK_PORT_OFFSET),--port-offset $(STACK_PORT_OFFSET)) \
		$(if $(STACK_DATABASE),--database $(STACK_DATABASE)) \
		$(if $(STACK_DB_USER),--db-user $(STACK_DB_USER)) $(if $(STACK_KEEP),--keep)

# Alert and recording rules are generated; a test fails when the committed file is stale.
rules: $(STAMP)
	$(VENV)/bin/cockpit-exporter render rules > alerts/cockpit.rules.yml

# Dashboards are generated from exporter/grafana/; a test fails when the committed JSON is stale.
dashboards: $(STAMP)
	$(VENV)/bin/cockpit-exporter render dashboards --out grafana/dashboards

clean:
	@# What a killed stack left on MariaDB (its record in .stack says what), then the files.
	-@test ! -f .stack/created.json || $(PY) -m exporter.stack --clean
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .stack
