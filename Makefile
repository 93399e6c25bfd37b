# The two commands of the README: `make demo` (set up, then run the demo) and `make test` (set up, then run the tests).
# Both install into ./.venv: torch==2.13.0 first (the CPU build on this kind of machine), then covtransfer itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test clean

$(BIN)/covtransfer-installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	touch $@

setup: $(BIN)/covtransfer-installed

demo: setup
	$(BIN)/covtransfer_demo

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) covtransfer_data
