# The project's entry points. Every target that runs code first runs scripts/setup.sh, which installs what is
# missing (gfortran, .venv, torch/torchvision, the project) and returns at once when nothing changed.

VENV ?= .venv
PY := $(VENV)/bin/python
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k monotone -x"`.
PYTEST_ARGS ?=

.PHONY: setup demo test bench docs gpu-check

setup:
	@VENV=$(VENV) bash scripts/setup.sh

# The main job: train a plain and a DEC-canonicalized classifier on Locally Scaled MNIST made from the bundled
# digits (a few minutes on 2 CPU cores), print their accuracy / invariance / local-scale errors, and save a figure
# of canonical forms in outputs/demo/. `equican show-groups` draws every group acting on digits.
demo: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/equican demo

# HF_HUB_OFFLINE: there is no network; without it timm's hub lookups retry for about 50 s.
test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

# Benchmarks are scripts, not tests: each writes its JSON/CSV and plots and prints its numbers.
bench: setup
	@set -e; for script in benchmarks/*.py; do \
		[ -e "$$script" ] || { echo "bench: no benchmarks/*.py yet"; exit 0; }; \
		echo "bench: $$script"; HF_HUB_OFFLINE=1 $(PY) "$$script"; \
	done

# The documentation site (mkdocs.yml) into site/; --strict turns every warning (a broken link, a docstring that
# mkdocstrings cannot read) into an error. The tests build it the same way. `mkdocs serve` previews it.
docs: setup
	NO_MKDOCS_2_WARNING=1 HF_HUB_OFFLINE=1 $(VENV)/bin/mkdocs build --strict

# On a machine with CUDA: every CUDA-parametrized test (group laws, exactness, toolkit, device errors), a smoke
# check of every group's canonicalizer and the dec/latent methods on the GPU, and the
# performance suite's GPU section (--quick), about 8 minutes at most; writes docs/results/gpu.json. Without CUDA it
# prints that it skipped and exits 0, writing nothing. See scripts/gpu_check.py.
gpu-check: setup
	HF_HUB_OFFLINE=1 $(PY) scripts/gpu_check.py
