# The two set-up commands of README.md. Both are idempotent: the venv is rebuilt only when
# a pyproject.toml or constraints.txt changes.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# CPU torch by default (a local wheel here); on a GPU host install the CUDA torch first.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install serve test clean

$(STAMP): pyproject.toml clients/python/pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	$(PY) -m pip install -q -c constraints.txt -e clients/python
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/nrg serve

test: $(STAMP)
	$(PY) -m pytest -q --durations=15

clean:
	rm -rf $(VENV) out
