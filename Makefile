# The two set-up commands of README.md. Both are idempotent: the venv is rebuilt only when
# a pyproject.toml or constraints.txt changes.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Which torch build `pip install torch==2.13.0` gets depends on the index: PyPI's Linux wheel is the
# CUDA build (multi-GB, with its nvidia-* wheels); a machine whose pip is configured with a local wheel
# index gets whatever that holds (a CPU build on this project's machines). Choose explicitly with
# TORCH_INDEX_URL, e.g. https://download.pytorch.org/whl/cpu (CPU only) or .../whl/cu128 (CUDA 12.8).
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX_URL ?=

.PHONY: install serve test clean

$(STAMP): pyproject.toml clients/python/pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(if $(TORCH_INDEX_URL),--index-url "$(TORCH_INDEX_URL)") "$(TORCH_SPEC)"
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	$(PY) -m pip install -q -c constraints.txt -e clients/python
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/nrg serve

# lint-imports first: the layout rules of docs/architecture.md (pyproject.toml's [tool.importlinter]).
test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q --durations=15

clean:
	rm -rf $(VENV) out
