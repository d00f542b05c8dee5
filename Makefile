# Two commands for a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := dev,quant,vision,agents,onnx,eval
# Built tokenizers, tiny trained guards and ONNX exports are cached here (git-ignored).
export LLAMAGUARD_CACHE ?= $(CURDIR)/.cache
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install test test-lowest demo lint bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
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

clean:
	rm -rf $(VENV) .venv-lowest .cache
