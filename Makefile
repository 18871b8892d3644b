# Loopspot: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: all deps venv test unit lint demo demo-stop bench clean ipk vendor

all: test

deps:
	@scripts/ensure-debian-packages

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[cloud,lab,dev]'
	@touch $(STAMP)

venv: deps $(STAMP)

CODE := $(wildcard agent cloud lab bench)

lint: venv
	$(VENV)/bin/ruff check $(CODE) tests deploy
	$(VENV)/bin/mypy --strict $(CODE) deploy/openwrt/build_ipk.py deploy/openwrt/bundled_libraries.py

## make test: lint, type-check and run the whole suite (lab tests need root).
test: lint
	$(PY) -m pytest -q -p no:cacheprovider

## make unit: the tests that need no root and no lab.
unit: venv
	$(PY) -m pytest -q -m "not lab and not browser"

## make demo: a shop router, a phone and the internet in network namespaces.
demo: venv
	$(PY) -m lab.demo

demo-stop: venv
	$(PY) -m lab.demo --stop

bench: venv
	$(PY) -m bench.run_all

## make ipk: the router package, dist/loopspot-agent_*_all.ipk, with no download and no SDK.
ipk: venv
	$(PY) deploy/openwrt/build_ipk.py --out dist

## make vendor: the bundled libraries' sources the OpenWrt SDK build takes (docs/openwrt.md).
vendor: venv
	$(PY) deploy/openwrt/build_ipk.py --vendor-only build/openwrt-vendor

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache dist build/openwrt-vendor
