# Mesh-AI: `make demo` runs the whole pipeline on the embedded default; `make test` runs every test, the fast
# tier (no model weights) first, then the slow one (loads or generates with a real model).
# Both start from nothing: they create .venv, install the project and generate the gRPC code.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.meshai-installed
# llama-cpp-python builds from source; portable flags so a cached wheel runs on any x86-64 machine.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)
export MESHAI_CACHE_DIR ?= $(CURDIR)/.cache

.PHONY: install proto demo test test-fast test-slow lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools

$(STAMP): pyproject.toml $(wildcard protos/meshai/v1/*.proto) | $(BIN)/python
	$(BIN)/pip install -e ".[all]"
	$(BIN)/python protos/generate.py
	$(BIN)/python -m meshai_quantizer.converter --cache-dir $(MESHAI_CACHE_DIR)
	touch $@

# The embedding models every time (under a second when present): catalog-v9's copy is tuned for the catalog,
# facts and question bank of this checkout, so a pull that changes them asks for a new one.
install: $(STAMP)
	$(BIN)/python -m meshai_quantizer.embedder --cache-dir $(MESHAI_CACHE_DIR)

proto: | $(BIN)/python
	$(BIN)/python protos/generate.py

demo: install
	$(BIN)/meshai demo

# Style, then the service boundaries (import-linter contracts in pyproject.toml).
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

# Two tiers, each under pytest-timeout's per-test limit (pyproject.toml): a broken build fails in the fast
# tier within minutes, before the slow tier spends its time on real models.
test: install lint
	$(BIN)/pytest -q -m "not slow"
	$(BIN)/pytest -q -m slow

test-fast: install
	$(BIN)/pytest -q -m "not slow"

test-slow: install
	$(BIN)/pytest -q -m slow

# Every service image through docker compose and BuildKit (deploy/images/build.sh): shared stages built once,
# llama.cpp compiled once, each image's size printed. Settings (base image, build-time CA, torch wheels, tag):
# deploy/README.md. Needs a Docker engine (deploy/images/engine.sh) and docker compose.
.PHONY: images
images:
	nice -n 15 deploy/images/build.sh

clean:
	rm -rf $(VENV) .meshai .pytest_cache .ruff_cache protos/meshai/v1/*_pb2*.py protos/meshai/v1/*_pb2*.pyi
