PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv test demo bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

venv: $(PY)
	$(PY) -m pip install -e ".[test]"

test: venv
	$(PY) -m pytest tests

clean:
	rm -rf $(VENV) outputs build *.egg-info
