PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz

.PHONY: install test test-slow demo bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The package with the exact tested versions (stamp files re-run pip only when setup.cfg or constraints.txt change).
$(VENV)/.installed: setup.cfg constraints.txt | $(PY)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[demo]"
	touch $@

$(VENV)/.installed-test: setup.cfg constraints.txt | $(PY)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

# Real Fashion-MNIST from Debian's package dataset-fashion-mnist, where apt is available (else the Hub is tried).
$(FASHION_MNIST):
	@if command -v apt-get >/dev/null 2>&1; then \
	  $(SUDO) apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist) || \
	  echo "warning: could not install dataset-fashion-mnist; the demo will try the Hub dataset instead"; \
	fi

# The Fashion-MNIST files too: the tests that read the real data would be skipped without them.
# Two tiers: `make test` leaves out the tests marked slow (long trainings, whole-script runs), `make test-slow` runs
# exactly those; CI (.ci/run) runs both.
test: $(VENV)/.installed-test $(FASHION_MNIST)
	$(PY) -m pytest tests -m "not slow" --durations=15  # the slowest tests, to keep this tier under 8 minutes

test-slow: $(VENV)/.installed-test $(FASHION_MNIST)
	$(PY) -m pytest tests -m slow --durations=15

demo: $(VENV)/.installed $(FASHION_MNIST)
	HF_HUB_OFFLINE=1 $(PY) examples/distill_vit.py --overwrite_output_dir  # each demo trains afresh

bench: $(VENV)/.installed-test
	HF_HUB_OFFLINE=1 $(PY) benchmarks/accuracy.py --quick
	HF_HUB_OFFLINE=1 $(PY) benchmarks/speed.py --quick

clean:
	rm -rf $(VENV) outputs build *.egg-info
