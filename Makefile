# Everything a fresh machine needs goes through these targets; .ci/run calls `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BUNDLE ?= var/bundle
DEMO_SECONDS ?= 0

.PHONY: venv bundle demo test lint generate bench bench-drift clean system-deps

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[service,dev]'
	touch $@

venv: $(VENV)/.installed

# Prometheus and Alertmanager from Debian, for the integration tests (needs root or sudo).
system-deps:
	@if ! command -v promtool >/dev/null || ! command -v amtool >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null; \
	fi

$(BUNDLE)/metadata.json: | venv
	$(PY) -m model_service.train --out $(BUNDLE)

bundle: $(BUNDLE)/metadata.json

# make demo                 runs until Ctrl-C
# make demo DEMO_SECONDS=60 runs for a minute, then stops everything it started
demo: venv bundle
	$(PY) -m native_stack.demo --bundle $(BUNDLE) --seconds $(DEMO_SECONDS)

lint: venv
	$(PY) -m ruff check mlpulse model_service native_stack alert_webhook tests bench

test: lint system-deps
	$(PY) -m pytest

# Every generated file (dashboards, ELK artefacts) from its sources; the tests fail while one is stale.
generate: venv bundle
	$(VENV)/bin/mlpulse generate --bundle $(BUNDLE)

bench: venv bundle
	$(PY) -m bench.instrumentation

# Evidently pins its own numpy/pandas/scipy ranges, so it lives in a separate venv and never
# changes what the tests run against.
bench-drift: venv
	test -x .venv-bench/bin/python || ($(PYTHON) -m venv .venv-bench && .venv-bench/bin/pip install --quiet -e . evidently 'pandas<3')
	.venv-bench/bin/python -m bench.drift

# .env and var/secrets/ for docker compose, with random secrets (docs/security.md). Never
# overwrites: an existing .env or var/secrets/ is kept, only a missing one is written (remove
# one to rotate its secrets, then recreate the stack). `make clean` removes var/secrets/.
.PHONY: env
env: venv
	$(PY) -m mlpulse.prometheus.native env --env-file .env --secrets-dir var/secrets

clean:
	rm -rf var .pytest_cache
