# ssmlab: the two commands of the README are `make demo` and `make test`.
BUILD ?= build
JOBS  ?= $(shell nproc)

.PHONY: all setup build test demo bench gpu-check clean

all: build

setup:
	@bash scripts/setup.sh

build: setup
	@BUILD=$(BUILD) JOBS=$(JOBS) bash scripts/build.sh

test: build
	@cd $(BUILD) && ctest --output-on-failure --progress -j $(JOBS) --timeout 600

# The quickstart Mamba-1 and attention side by side, their influence and over-smoothing analyses, one report.
demo: build
	@./$(BUILD)/ssmlab sweep configs/sweeps/demo.toml --jobs 2
	@./$(BUILD)/ssmlab report runs/demo

bench: build
	@BUILD=$(BUILD) bash scripts/bench.sh

clean:
	rm -rf $(BUILD)
