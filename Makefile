# Everything a fresh machine needs goes through these targets; .ci/run calls `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BUNDLE ?= var/bundle
SCHEDULE ?= demo

.PHONY: constraints venv bundle demo test lint generate bench bench-serving bench-ingest bench-drift bench-quality bench-capacity clean system-deps

# constraints.txt pins every package the tests ran with (regenerate: make constraints).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[service,dev]'
	touch $@

constraints:
	$(PY) -m pip freeze --exclude-editable | grep -v '^mlpulse' > constraints.txt

venv: $(VENV)/.installed

# Prometheus, Alertmanager, Chromium and kubectl from Debian, for the tests (needs root or sudo).
# Chromium opens the drift report in the tests (no console error, no request, a screenshot).
system-deps:
	@# kubectl renders the Kubernetes manifests offline (kubectl kustomize; docs/kubernetes.md). A kubectl
	@# already on PATH is kept; otherwise Debian's kubernetes-client (kubectl 1.20). debootstrap makes the
	@# local Debian base of the compose stack test's images, where a Docker engine is installed.
	@need=""; \
	for pair in promtool:prometheus amtool:prometheus-alertmanager chromium:chromium kubectl:kubernetes-client; do \
		command -v $${pair%%:*} >/dev/null || need="$$need $${pair#*:}"; \
	done; \
	if command -v docker >/dev/null && ! command -v debootstrap >/dev/null; then need="$$need debootstrap"; fi; \
	if [ -n "$$need" ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		echo "system-deps: apt-get install$$need"; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$need >/dev/null; \
	fi

$(BUNDLE)/metadata.json: | venv
	$(PY) -m model_service.train --out $(BUNDLE)

bundle: $(BUNDLE)/metadata.json

# make demo                  plays native_stack/schedules/demo.yml (about 7 minutes), writes var/demo/report.html
# make demo SCHEDULE=ci      the short one the tests play (under 2 minutes); Ctrl-C stops everything
demo: venv bundle system-deps
	$(PY) -m native_stack.demo --bundle $(BUNDLE) --schedule $(SCHEDULE)

lint: venv
	$(PY) -m ruff check mlpulse model_service native_stack alert_webhook tests bench

test: lint system-deps
	$(PY) -m pytest

# Every generated file (dashboards, ELK artefacts) from its sources; the tests fail while one is stale.
generate: venv bundle
	$(VENV)/bin/mlpulse generate --bundle $(BUNDLE)

bench: venv bundle
	$(PY) -m bench.instrumentation

# The request path beside the previous service (a temporary git worktree), under gunicorn.
bench-serving: venv
	$(PY) -m bench.serving

# The capacity model's inputs (docs/scaling.md): the service, the exporter and Prometheus measured
# as real processes in one run (about 4 minutes); every figure in var/bench/capacity.json.
bench-capacity: venv bundle system-deps
	$(PY) -m bench.capacity --json var/bench/capacity.json

# The exporter's ingest beside a previous revision's (a temporary git worktree), same event file,
# interleaved rounds, the realized-quality join on and off (about 1 minute).
bench-ingest: venv
	$(PY) -m bench.ingest

# Evidently pins its own numpy/pandas/scipy ranges, so it lives in a separate venv and never
# changes what the tests run against.
bench-drift: venv
	test -x .venv-bench/bin/python || ($(PYTHON) -m venv .venv-bench && .venv-bench/bin/pip install --quiet -e . evidently 'pandas<3')
	.venv-bench/bin/python -m bench.drift

# The label-free quality estimate against realized quality and NannyML's CBPE / DLE (docs/quality.md).
# NannyML lives in its own venv (its pins differ from ours; pandas<3 as it needs).
bench-quality: venv
	test -x .venv-nannyml/bin/python || ($(PYTHON) -m venv .venv-nannyml && .venv-nannyml/bin/pip install --quiet -e . nannyml statsmodels 'pandas<3')
	.venv-nannyml/bin/python -m bench.quality_estimate

# False-alarm rate, power and raw-sample agreement of the drift decisions (docs/drift-statistics.md).
bench-drift-calibration: venv
	test -x .venv-bench/bin/python || ($(PYTHON) -m venv .venv-bench && .venv-bench/bin/pip install --quiet -e . evidently 'pandas<3')
	.venv-bench/bin/python -m bench.drift_calibration

# .env and var/secrets/ for docker compose, with random secrets (docs/security.md). Never
# overwrites: an existing .env or var/secrets/ is kept, only a missing one is written (remove
# one to rotate its secrets, then recreate the stack). `make clean` removes var/secrets/.
.PHONY: env
env: venv
	$(PY) -m mlpulse.prometheus.native env --env-file .env --secrets-dir var/secrets

# The images tests/stack/test_compose_stack.py runs, built on a local Debian base made with
# debootstrap and cached (docs/compose.md; needs root, debootstrap and a Docker engine). The test
# builds them itself when missing; this target does it ahead, and says what cannot be built.
.PHONY: stack-images
stack-images: venv
	$(PY) -m tests.stack.images

clean:
	rm -rf var .pytest_cache
