# Set-up and test commands for napari-dip; the README's two commands are `make demo` and
# `make test`, and CI (.ci/run) runs `make test`.
#
# TORCH pins the PyTorch build to install first. 2.13.0 is the CPU wheel the project's
# machines have on disk; on a GPU machine use e.g. `make demo TORCH=torch` to get the
# CUDA build pip picks for you.

PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
# Debian packages the widget tests need for a real (virtual) X display.
SYSTEM_PACKAGES := xvfb libxcb-icccm4 libxcb-keysyms1

.PHONY: demo test napari system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.base: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q "$(TORCH)" -e .
	touch $@

$(VENV)/.testing: $(VENV)/.base
	$(BIN)/python -m pip install -q "$(TORCH)" -e ".[testing]"
	touch $@

$(VENV)/.napari: $(VENV)/.base
	$(BIN)/python -m pip install -q "$(TORCH)" -e ".[napari]"
	touch $@

## demo: install napari-dip with napari, denoise the built-in example (PSNR and time),
## then, when there is a display, open napari with a sample and the widget
demo: $(VENV)/.napari
	$(BIN)/napari-dip demo
	@if [ -n "$${DISPLAY}$${WAYLAND_DISPLAY}" ]; then $(BIN)/napari-dip gui; \
	else echo "No display here: on a desktop, '$(BIN)/napari-dip gui' opens napari with a sample and the widget."; fi

## napari: open napari with the plugin's sample and the denoising widget
napari: $(VENV)/.napari
	$(BIN)/napari-dip gui

## test: install the test dependencies (and Xvfb when apt-get can) and run the suite
test: $(VENV)/.testing system-deps
	$(BIN)/npe2 validate napari-dip
	XDG_CONFIG_HOME=$$(mktemp -d) XDG_CACHE_HOME=$$(mktemp -d) $(BIN)/python -m pytest

system-deps:
	@if command -v Xvfb >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	else \
		echo "Xvfb is missing: install it ($(SYSTEM_PACKAGES) on Debian/Ubuntu) to run the widget tests" >&2; \
	fi

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
