# The README's two commands: `make run` (set up and start the agent, offline) and
# `make test` (set up and run every test). Both work on a fresh machine.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# llama-cpp-python compiles from its sdist (~5-8 min on 2 cores, once per venv).
# The multimodal (llava) library is not used, so it is not built. On x86-64 llama.cpp is
# built for this CPU without its AMX kernels: on this machine class they crash the process
# (SIGSEGV in ggml_backend_amx_mul_mat) on the Q4_K weights of the default LLM; GCC keeps an
# explicit -mno-amx-* even where -march=native would enable AMX.
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF $(if $(filter x86_64,$(shell uname -m)),"-DCMAKE_C_FLAGS=$(NO_AMX)" "-DCMAKE_CXX_FLAGS=$(NO_AMX)")
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the tests need: chromium for the real-browser tests, PortAudio's
# headers to build PyAudio for the microphone CLI (`python -m bot chat`), and a PulseAudio
# server with its tools and ALSA plugin for that CLI's virtual sound card; espeak-ng and flite
# speak test questions in voices unlike the bot's own (bench/voices.py); redis-server is the
# cluster's shared registry (REDIS_URL; the tests start their own on a free port).
APT_PACKAGES := chromium portaudio19-dev pulseaudio pulseaudio-utils libasound2-plugins espeak-ng flite redis-server
MIC_STAMP := $(VENV)/.installed-mic

.PHONY: run test setup test-setup system-deps client clean

run: setup client
	$(PY) -m bot serve

# Two pytest-xdist workers, one test file each at a time: most tests wait on real-time audio,
# so the second core has room (27 -> 18 min here); a file's server and browser fixtures stay
# shared.
test: test-setup
	$(PY) -m pytest -n 2 --dist loadfile

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python >= 3.11 is needed (found $$($(PYTHON) --version))"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@# pip's wheel cache ignores CMAKE_ARGS: a llama.cpp wheel built elsewhere with AMX is
	@# thrown away and rebuilt with the flags above.
	@if grep -q ggml_backend_amx_mul_mat $(VENV)/lib/python3*/site-packages/llama_cpp/lib/libggml-cpu.so; then \
		echo "The cached llama-cpp-python wheel has AMX kernels: rebuilding it without them"; \
		$(PY) -m pip cache remove llama_cpp_python; \
		$(PY) -m pip install --quiet --force-reinstall --no-deps \
			"$$(grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml)"; \
	fi
	touch $(STAMP)

# Order matters: PyAudio (the mic extra) compiles against portaudio19-dev.
test-setup: system-deps setup $(MIC_STAMP) client

$(MIC_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,mic]"
	touch $(MIC_STAMP)

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# The browser client (web/client, Vite) is built into web/static/dist, which the server
# serves. Dependencies are installed when node_modules is missing or package-lock.json
# changed; the bundle is rebuilt when any client source is newer than it.
CLIENT_DIR := web/client
CLIENT_STAMP := $(CLIENT_DIR)/node_modules/.package-lock.json
CLIENT_BUNDLE := web/static/dist/index.html
CLIENT_SOURCES := $(shell find $(CLIENT_DIR)/src -type f 2>/dev/null) $(CLIENT_DIR)/index.html \
	$(CLIENT_DIR)/package.json $(wildcard $(CLIENT_DIR)/vite.config.*)

client: $(CLIENT_BUNDLE)

$(CLIENT_STAMP): $(CLIENT_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed to build the web client (Node.js >= 20.19)"; exit 1; }
	cd $(CLIENT_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(CLIENT_BUNDLE): $(CLIENT_STAMP) $(CLIENT_SOURCES)
	cd $(CLIENT_DIR) && npm run --silent build

clean:
	rm -rf $(VENV) web/static/dist
