# The project's entry points. Every target that runs code first runs scripts/setup.sh, which installs what is
# missing (gfortran, .venv, torch/torchvision, the project) and returns at once when nothing changed.

VENV ?= .venv
PY := $(VENV)/bin/python
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k monotone -x"`.
PYTEST_ARGS ?=

.PHONY: setup demo test bench

setup:
	@VENV=$(VENV) bash scripts/setup.sh

# The main job: a PNG grid of every group acting on bundled MNIST digits, and each group's measured law errors.
demo: setup
	$(VENV)/bin/equican show-groups

# HF_HUB_OFFLINE: there is no network; without it timm's hub lookups retry for about 50 s.
test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

# Benchmarks are scripts, not tests: each writes its JSON/CSV and plots and prints its numbers.
bench: setup
	@set -e; for script in benchmarks/*.py; do \
		[ -e "$$script" ] || { echo "bench: no benchmarks/*.py yet"; exit 0; }; \
		echo "bench: $$script"; HF_HUB_OFFLINE=1 $(PY) "$$script"; \
	done
