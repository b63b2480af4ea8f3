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
# Debian packages the widget tests need for a real (virtual) X display; Qt >= 6.5 (napari's
# windows) also refuses to start on X11 without libxcb-cursor0.
SYSTEM_PACKAGES := xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0

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

# On Debian/Ubuntu, install whichever of SYSTEM_PACKAGES is missing (not only when Xvfb is);
# elsewhere, only say so when Xvfb is missing.
system-deps:
	@if command -v dpkg-query >/dev/null; then \
		missing=$$(for p in $(SYSTEM_PACKAGES); do \
			dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	elif command -v Xvfb >/dev/null; then missing=""; \
	else missing="$(SYSTEM_PACKAGES)"; fi; \
	missing=$$(echo $$missing); \
	if [ -z "$$missing" ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
		echo "Missing system packages: $$missing (Debian/Ubuntu names); install them to run the widget tests" >&2; \
	fi

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
