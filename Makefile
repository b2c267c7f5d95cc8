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
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 600

demo: build
	@./$(BUILD)/ssmlab train configs/quickstart.toml

bench: build
	@BUILD=$(BUILD) bash scripts/bench.sh

clean:
	rm -rf $(BUILD)
