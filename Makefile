# The two commands of the README:
#   make run   set up a virtualenv, create the embedded SQLite database, load the demo data,
#              and run the server in the foreground (Ctrl-C stops it)
#   make test  install the Debian packages the tests need when missing (.ci/install-deps, as root;
#              the list is .ci/deps), lint (ruff, mypy --strict, import-linter) and every
#              test; the tests start their own PostgreSQL and Redis unless
#              RADIUSD_TEST_POSTGRES_URL / RADIUSD_TEST_REDIS_URL name servers to use;
#              TEST_WORKERS pytest-xdist workers (default 6: the tests mostly wait on daemons
#              and servers, so 6 on two cores keep lint and every test under 10 minutes)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TEST_WORKERS ?= 6
# Python may cache compiled modules (__pycache__, ignored by git) even where the environment
# says not to: without the cache every process compiles our 22,000 lines again (about 0.2 s
# of CPU per billingctl and radiusd the tests start, hundreds of them), and pytest rewrites
# every test module's asserts again in each of its workers.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: run setup deps test lint unit integration e2e bench bench-two-node clean

$(STAMP): pyproject.toml setup.py radiusd/_walk.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

deps:
	@.ci/install-deps

run: $(STAMP)
	$(BIN)/billingctl db upgrade
	$(BIN)/billingctl load config/demo.yaml
	$(BIN)/radiusd serve

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest -q -n $(TEST_WORKERS) tests/unit

integration: deps $(STAMP)
	$(BIN)/pytest -q -n $(TEST_WORKERS) tests/integration

e2e: deps $(STAMP)
	$(BIN)/pytest -q -n $(TEST_WORKERS) tests/e2e

test: deps lint
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist worksteal tests

# make bench: our server and FreeRADIUS measured in one run; writes BENCHMARKS.md (bench/).
#   BENCH_REDIS_URL  a Redis database the benchmark owns (it is emptied); empty: no Redis run
#   BENCH_ARGS       more options: $(BIN)/python -m bench --help
BENCH_REDIS_URL ?= redis://127.0.0.1:6379/14
BENCH_ARGS ?=
BENCH_DEBS := freeradius freeradius-postgresql

bench: $(STAMP)
	@missing=""; for p in $(BENCH_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  own_policy=""; \
	  if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' | $$sudo tee /usr/sbin/policy-rc.d >/dev/null; \
	    $$sudo chmod 755 /usr/sbin/policy-rc.d; own_policy=1; \
	  fi; \
	  echo "installing$$missing (the freeradius service is not started)"; \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null; \
	  status=$$?; [ -z "$$own_policy" ] || $$sudo rm -f /usr/sbin/policy-rc.d; \
	  [ $$status = 0 ] || exit $$status; \
	fi
	@test -x $(BIN)/py-spy || $(BIN)/pip install --quiet py-spy
	$(BIN)/python -m bench --redis-url '$(BENCH_REDIS_URL)' $(BENCH_ARGS)

# make bench-two-node: only the two-node scenario (issue 12); its section goes to stdout.
#   BENCH_ARGS="--quick" for a small run that checks it works
bench-two-node: $(STAMP)
	$(BIN)/python -m bench --only two-node --redis-url '$(BENCH_REDIS_URL)' $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
