# fedmarket: every target installs what it needs first (`setup` is idempotent).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH_VERSION := 2.13.0
ANVIL_DIR := $(CURDIR)/node_modules/@foundry-rs/anvil-linux-amd64/bin
# ape-foundry starts `anvil` from PATH; py-solc-x and ape-solidity find solc through SOLCX_BINARY_PATH.
export PATH := $(ANVIL_DIR):$(CURDIR)/$(VENV)/bin:$(PATH)
export SOLCX_BINARY_PATH := $(CURDIR)/.solcx
SOLC_VERSION := $(shell sed -n 's/.*"solc": "\(.*\)".*/\1/p' package.json)
SETUP_STAMP := $(VENV)/.setup-stamp
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup test lint format demo gas bench bench-store attacks fairness fuzz openapi compile devnet deploy coordinator clean help

help:
	@echo "make demo   - start a devnet, deploy, and run the end-to-end demo"
	@echo "make test   - run every test (starts its own Anvil)"
	@echo "make lint   - ruff check, ruff format --check, mypy (make format rewrites the files)"
	@echo "make gas    - gas used per operation on a real devnet -> reports/gas.json"
	@echo "make bench  - protocol overhead per round (5/20/50 trainers) and Shapley cost (10/50/200 updates) -> reports/bench.json"
	@echo "make attacks - ten attacks, 3 of 10 trainers, in-process on a real devnet -> reports/attacks.json"
	@echo "make fairness - does pay follow value for honest trainers (cases a-e) -> reports/fairness.json"
	@echo "make bench-store - coordinator memory with 20 stalled 40 MiB uploads -> reports/store_memory.json"
	@echo "make fuzz   - the contract invariant fuzzer, 200 new random examples (make test runs 8 fixed ones)"
	@echo "make openapi - the coordinator API's schema -> docs/openapi.json (a test fails while it is stale)"
	@echo "make devnet - Anvil on :8545 in the foreground; then make deploy, make coordinator"
	@echo "make compile, make clean"

setup: $(SETUP_STAMP)

# Debian's chromium for the browser tests (Playwright drives it; its own browser download cannot
# work offline). Installed once, as root or through sudo; the package lists are fetched if stale.
# The downloaded .deb files are dropped afterwards (apt-get clean): CI disks can be nearly full.
$(CHROMIUM):
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium \
		|| ($(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)
	$(SUDO) apt-get clean

# Rebuilt when the dependency lists change. torch goes first and pinned: an unpinned torch
# would pull a multi-GB CUDA build.
$(SETUP_STAMP): pyproject.toml package.json package-lock.json
	test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -e '.[dev]'
	npm ci --no-audit --no-fund
	mkdir -p .solcx && ln -sf ../toolchain/solc .solcx/solc-v$(SOLC_VERSION)
	touch $@

compile: setup
	$(VENV)/bin/ape compile

test: setup $(CHROMIUM)
	$(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

LINT_PATHS := fedmarket backend trainer scripts bench tests

lint: setup
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff check --fix $(LINT_PATHS)
	$(VENV)/bin/ruff format $(LINT_PATHS)

demo: setup
	$(PY) scripts/demo.py $(DEMO_ARGS)

gas: setup
	$(PY) scripts/gas_report.py

bench: setup
	$(PY) bench/protocol_overhead.py
	$(PY) bench/shapley_cost.py

attacks: setup
	$(PY) bench/attacks.py --rounds 5

fairness: setup
	$(PY) bench/fairness.py

bench-store: setup
	$(PY) bench/store_memory.py

fuzz: setup
	FEDMARKET_FUZZ=1 FEDMARKET_FUZZ_EXAMPLES=200 $(PY) -m pytest -q tests/contracts/test_invariants.py

openapi: setup
	$(PY) scripts/openapi.py

devnet: setup
	$(PY) -m fedmarket.devnet --port 8545

deploy: setup
	$(VENV)/bin/ape run deploy --network ethereum:local:foundry --fund 8

coordinator: setup
	$(VENV)/bin/fedmarket-coordinator

clean:
	rm -rf build .build .cache .solcx .pytest_cache .hypothesis
