# Everyday commands. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export SERVICE_MODEL_STORE ?= model_store
# Flags for bench/run.py, e.g. make bench BENCH_ARGS="--quick" or "--duration 5 --runs 1".
BENCH_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help serve test train lint verify screenshots bench proto browser-deps bench-deps redis-deps ci-deps clean

help: ## List the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(BIN)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(BIN)/.dev: requirements.txt requirements-dev.txt $(BIN)/.runtime
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

serve: $(BIN)/.runtime ## Serve the models on 127.0.0.1:8000, and gRPC on 8001 (trains the demo models if the store has none)
	$(BIN)/flask --app wsgi models demo --if-empty
	SERVICE_GRPC_PORT=$${SERVICE_GRPC_PORT-8001} $(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

train: $(BIN)/.runtime ## (Re)train the demo models into the model store
	$(BIN)/flask --app wsgi models demo --force

verify: $(BIN)/.runtime ## Check every stored model: hash, load, one prediction
	$(BIN)/flask --app wsgi models verify

test: $(BIN)/.dev ## Run the whole test suite (unit, store, CLI, real Gunicorn)
	$(BIN)/python -m pytest

lint: $(BIN)/.dev ## Lint with ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

screenshots: $(BIN)/.dev browser-deps ## Save screenshots of /docs, /redoc, the home page and the iris page into docs/
	SCREENSHOTS_DIR=docs $(BIN)/python -m pytest tests/test_browser.py tests/test_browser_pages.py -q

bench: $(BIN)/.runtime bench-deps ## Benchmark the service against the tutorial Flask app and a bare WSGI app (report in bench/results/)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

proto: $(BIN)/.dev ## Regenerate the gRPC modules from service/v2/grpc_predict_v2.proto
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. service/v2/grpc_predict_v2.proto

browser-deps: ## Install Debian's headless Chromium for the browser tests (no browser download)
	@command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium fonts-dejavu-core)

bench-deps: ## Install Debian's wrk and h2load (HTTP/2, for gRPC), the load generators the benchmark drives
	@command -v wrk >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y wrk)
	@command -v h2load >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nghttp2-client)

redis-deps: ## Install Debian's redis-server, which the rate limit tests start on a free port
	@command -v redis-server >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server)

ci-deps: browser-deps bench-deps redis-deps ## Install the system packages the tests need
	@$(PYTHON) -c 'import venv, ensurepip' || (apt-get update && apt-get install -y python3-venv)

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache
