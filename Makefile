# The two set-up commands of the README: `make setup` and `make test`; `make test-fast` is a
# quicker tier for developers (no QEMU, no TensorFlow conversions, no TFLM tree).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Debian packages for the emulated Cortex-M4 target (qemu-m4): compiler, C/C++ libraries, QEMU.
APT_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib qemu-system-arm
# Headless Chromium for the report's browser test (~120 MB download, ~410 MB installed with its
# libraries); the test skips without it, tinyforge itself never needs it.
APT_PACKAGES += chromium
# espeak-ng and sox make the keyword example's training data offline (examples/keyword/train.py);
# tests/test_examples.py skips its data test without them.
APT_PACKAGES += espeak-ng sox

.PHONY: setup test test-fast python-version system-packages bench clean

setup: python-version system-packages
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@$(BIN)/tinyforge setup || echo "note: the emulated target (qemu-m4) is not ready, see above; its tests will be skipped"
	@echo "setup done: activate with 'source $(VENV)/bin/activate', then run 'tinyforge doctor'"

# tinyforge reads board profiles with tomllib (3.11+); TensorFlow 2.21 has wheels up to 3.13.
python-version:
	@$(PYTHON) -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 13) else "tinyforge needs Python 3.11-3.13 (tomllib; TensorFlow 2.21 wheels), this is " + sys.version.split()[0] + ": run make setup PYTHON=python3.11 (or 3.12, 3.13)")'

# Installs the Debian packages only when running as root and only those that are missing;
# otherwise says what is missing and how to install it (tinyforge doctor says the same).
system-packages:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "system packages: all present ($(APT_PACKAGES))"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "system packages: installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null && \
	  echo "system packages: installed$$missing"; \
	else echo "system packages: missing$$missing (not root: run 'sudo apt-get install --no-install-recommends$$missing'; the qemu-m4 tests will be skipped)"; fi

test:
	$(BIN)/python -m pytest -q -ra

# -n auto: one worker per core (2 here); the tests are independent (own tmp dirs, caches, ptys).
test-fast:
	$(BIN)/python -m pytest -q -ra -n auto -m "not emulator and not tensorflow and not tflm_tree and not slow"

bench:
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
