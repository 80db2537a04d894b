# Two commands matter: `make demo` and `make test`. Each builds .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench clean venv systemd-tools mosquitto-tools

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check edgeopt simulators tests benchmarks
	$(BIN)/ruff format --check edgeopt simulators tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

# The systemd unit is checked with systemd-analyze; fetch it if this machine lacks it.
systemd-tools:
	@command -v systemd-analyze >/dev/null 2>&1 || \
	  (apt-get install -y -q systemd >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q systemd >/dev/null 2>&1)) || \
	  echo "warning: could not install systemd-analyze; the unit-file test will fail"

# The northbound tests (and `make bench`) start a real mosquitto broker; fetch it if missing.
mosquitto-tools:
	@(command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto) || \
	  (apt-get install -y -q mosquitto >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q mosquitto >/dev/null 2>&1)) || \
	  echo "warning: could not install mosquitto; the northbound tests will fail"

test: $(STAMP) lint typecheck systemd-tools mosquitto-tools
	$(BIN)/pytest

demo: $(STAMP)
	scripts/demo.sh

bench: $(STAMP) mosquitto-tools
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
