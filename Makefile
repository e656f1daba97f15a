PY ?= python3
DEMO_DATA ?= runs/demo_data
export PY

.PHONY: setup demo test test-all bench-loaders

setup:
	bash scripts/setup.sh

# The main job on built-in demo data.
demo: setup
	bash scripts/demo.sh $(DEMO_DATA)

# The default test suite (what CI runs).
test:
	bash scripts/test.sh

# Everything, slow tests included.
test-all: setup
	$(PY) -m pytest

bench-loaders: setup
	$(PY) -m benchmarks loaders
