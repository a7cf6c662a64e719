# Every target creates .venv on first use, so a fresh clone needs only python3 >= 3.11, gcc and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

# Bytecode caches are what make a second run quick: an environment that turns them off
# (PYTHONDONTWRITEBYTECODE=1, set on some build machines) costs each of the six test workers ~4 CPU-seconds of
# recompiling every test module per run. They stay in the clone's __pycache__/ directories, which git ignores.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: run test test-slow test-all soak chaos lint bench bench-readme screenshots constraints clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "python3 >= 3.11 is required (found %s)" % sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint constraints.txt -e '.[dev]'
	@touch $(STAMP)

# ARGS passes options to `sbworker dev`: `make run ARGS="--no-demo --topic"`.
ARGS ?=
run: $(STAMP)
	$(BIN)/sbworker dev $(ARGS)

# The fast default: everything but the suites marked slow. The tests mostly wait on sockets and subprocesses (a run
# uses about 3.5 CPU-minutes), so six pytest-xdist workers share the two cores; --dist worksteal hands out single
# tests and lets an idle worker take queued ones, so no long file holds the end of the run.
# pytest-randomly shuffles the order on every run and prints its seed ("Using --randomly-seed=N"); replay an order
# with PYTEST_ARGS=--randomly-seed=N, or keep the file order with PYTEST_ARGS=-p no:randomly (TEST_WORKERS=1: serial).
TEST_WORKERS ?= 6
PYTEST_ARGS  ?=
test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# The long suites: reliability (kill -9, outages, fuzzing, network faults), chaos campaigns, packaging, big
# restarts, the quick bench. Three workers: the suites are heavier on the CPU, and none asserts a time (each waits
# for its outcome with a liveness bound), so sharing the cores slows them without changing what they prove. The ten
# longest are listed at the end (the place to look when CI gets slow). SLOW_WORKERS=1 runs them one at a time.
SLOW_WORKERS ?= 3
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -n $(SLOW_WORKERS) --dist worksteal --durations=10 $(PYTEST_ARGS)

test-all: $(STAMP)
	$(BIN)/python -m pytest

# 30 minutes of steady mixed load; RSS, descriptors, tasks and SQLite sizes must level off (SOAK_MINUTES=N shortens).
soak: $(STAMP)
	SOAK=1 $(BIN)/python -m pytest -m soak tests/reliability/test_soak.py -s

# A seeded fault campaign over the embedded stack, judged by the history checker (README: Guarantees). SEED is one
# seed, a range (1-10) or a list (1,4,9); DURATION is seconds of faults per seed; REPLICAS (2 or 3) and WINDOW (the
# approval not-found window) default to the seed's choice and 30. Histories and logs go to .chaos/seed-N/.
SEED     ?= 1
DURATION ?= 60
REPLICAS ?=
WINDOW   ?= 30
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos run --seed $(SEED) --duration $(DURATION) --window $(WINDOW) \
		$(if $(REPLICAS),--replicas $(REPLICAS))

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(MAKE) lint-infra

# About 20 minutes. BENCH_ARGS passes options (`make bench BENCH_ARGS=--quick`); `make bench-readme` also rewrites
# the README's generated Performance tables from that one run.
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-readme: $(STAMP)
	$(BIN)/python -m bench --write-readme $(BENCH_ARGS)

# The README's dashboard pictures, taken in headless Chromium from a real run of the embedded stack.
screenshots: $(STAMP)
	$(BIN)/python -m sbworker.dashboard.screenshots --out docs/images

# After a deliberate upgrade in pyproject.toml: resolve afresh in a scratch venv and pin what it installed.
constraints:
	rm -rf .venv-constraints && $(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/python -m pip install --quiet --upgrade pip
	.venv-constraints/bin/python -m pip install --quiet -e '.[dev]'
	head -3 constraints.txt > constraints.new
	.venv-constraints/bin/python -m pip freeze --exclude-editable >> constraints.new
	mv constraints.new constraints.txt && rm -rf .venv-constraints

clean:
	rm -rf $(VENV) .venv-lint .localdata .pytest_cache .mypy_cache .ruff_cache

# Static checks of Dockerfile, docker-compose.yml and infra/ (checkov, hadolint, pycep, Compose schema).
# The tools live in their own venv: checkov pins libraries that would conflict with the project's.
LINT_VENV  := .venv-lint
LINT_STAMP := $(LINT_VENV)/.installed-stamp

$(LINT_STAMP): infra/requirements-lint.txt
	@test -x $(LINT_VENV)/bin/python || $(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LINT_VENV)/bin/python -m pip install --quiet -r infra/requirements-lint.txt
	@touch $(LINT_STAMP)

.PHONY: lint-infra
lint-infra: $(LINT_STAMP)
	$(LINT_VENV)/bin/python tests/deploy/lint_infra.py
