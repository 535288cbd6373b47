# Every target installs what it needs into .venv from requirements*.txt first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Extra pytest arguments: make test PYTEST_ARGS="-x -k health"
PYTEST_ARGS ?=
# Tests run like production: DEBUG off, and a real-looking secret. This one is for tests only.
TEST_SECRET_KEY := test-only-secret-key-not-for-any-deployment-8c1f0b7e2d
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
# Arguments for the chaos run: make chaos CHAOS_ARGS="--quick --postgres" (a private server)
CHAOS_ARGS ?=
BENCH_ARGS ?=

.PHONY: install run test test-postgres chaos soak bench bench-events bench-schedules bench-prune fuzz lint format clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

# Web, worker, beat and flower, with a Redis if none runs; Ctrl-C stops them all.
run: $(STAMP)
	$(BIN)/python scripts/run.py

# Tests ignore a developer's .env, and each run gets its own private Redis and, on
# PostgreSQL, its own test database (named after the shell's pid), so runs never share data
# with each other or with `make run`. The database is SQLite unless DATABASE_URL says
# otherwise.
TEST_ENV = ENV_FILE=/dev/null DEBUG=false SECRET_KEY="$${SECRET_KEY:-$(TEST_SECRET_KEY)}" \
	DATABASE_TEST_NAME="$${DATABASE_TEST_NAME:-test_jobsys_$$$$}"

# With DEBUG off, pages find their CSS and JS through collectstatic's manifest, as in
# production.
test: $(STAMP)
	$(BIN)/ruff check .
	$(TEST_ENV) $(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(TEST_ENV) $(BIN)/python scripts/localredis.py exec -- $(BIN)/pytest $(PYTEST_ARGS)

test-postgres: $(STAMP)
	DATABASE_URL="$(TEST_DATABASE_URL)" $(MAKE) test

# Every fault (worker, pool, web and Beat SIGKILLs, database and Redis restarts, FLUSHDB, a
# worker frozen past its lease) while 2,000 jobs run on real processes at 35% of their measured
# capacity; fails if any job is lost, runs to a result twice or is stuck, or if every job is not
# terminal within 30 s of the last fault. make chaos CHAOS_ARGS="--postgres"
chaos: $(STAMP)
	$(BIN)/python scripts/chaos.py $(CHAOS_ARGS)

# A mixed load at half the measured capacity with a fault every 3 minutes; prints what grows
# (RSS, descriptors, connections, Redis, p99s). make soak SOAK_ARGS="--minutes 10 --postgres"
SOAK_ARGS ?=
soak: $(STAMP)
	$(BIN)/python scripts/soak.py $(SOAK_ARGS)

# The service beside raw Celery, on real processes: make bench BENCH_ARGS="--quick"
bench: $(STAMP)
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)

# The event stream on real processes: status change -> event latency, events lost over 1,000
# random disconnects, and 500 open streams' memory and cost to submissions.
# make bench-events BENCH_EVENTS_ARGS="--quick"
BENCH_EVENTS_ARGS ?=
bench-events: $(STAMP)
	$(BIN)/python scripts/bench_events.py $(BENCH_EVENTS_ARGS)

# Users' schedules: duplicate and missed ticks over 48 h around each DST change (3 dispatchers,
# 10,000 schedules), the preview against what fired, the dispatcher's cost at 1,000 and 100,000
# schedules, and fire -> start on real processes. make bench-schedules BENCH_SCHEDULES_ARGS="--quick"
BENCH_SCHEDULES_ARGS ?=
bench-schedules: $(STAMP)
	$(BIN)/python scripts/bench_schedules.py $(BENCH_SCHEDULES_ARGS)

# Pruning 1M expired jobs from a 2M-row PostgreSQL table while single submissions run: submit
# latency without and with the pruner, its longest statement and transaction, its peak RSS.
# make bench-prune BENCH_PRUNE_ARGS="--jobs 200000"
BENCH_PRUNE_ARGS ?=
bench-prune: $(STAMP)
	$(BIN)/python scripts/bench_prune.py $(BENCH_PRUNE_ARGS)

# schemathesis against the live OpenAPI schema as a verified user, with its default checks;
# fails on any server error, schema violation or accepted invalid input (scripts/fuzz.py).
fuzz: $(STAMP)
	$(BIN)/python scripts/fuzz.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) staticfiles .run .test-db.sqlite3*
