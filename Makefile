# Two entry points (see README): `make run` sets up and runs the default config;
# `make test` sets up and runs the test suite (what .ci/run calls).
# Any python3 >= 3.11 (requires-python); another one with PYTHON=python3.12 or a path.
PYTHON ?= python3
# The environment to install into and run from: .venv, created with PYTHON when it has no bin/python.
VENV ?= .venv
# Exact versions to install (CI's, see constraints/tested.txt). CONSTRAINTS= installs pyproject.toml's
# ranges instead and keeps the torch and torchvision that VENV already has (README: The two commands).
CONSTRAINTS ?= constraints/tested.txt
STAMP := $(VENV)/.installed
KEEP := $(VENV)/.keep-torch.txt
SNAKEMAKE := $(VENV)/bin/snakemake
FASHION := /usr/share/datasets/fashion-mnist
# The interpreter's path and version, or a one-line error when it is older than 3.11.
PYCHECK := import sys, platform; sys.exit(f"need Python >= 3.11, {sys.executable} is {platform.python_version()}") \
	if sys.version_info < (3, 11) else print(f"using {sys.executable} (Python {platform.python_version()})")

.PHONY: setup data run test report clean slurm test-slurm docs summary FORCE

# Reinstalls when pyproject.toml or the constraints change, or when CONSTRAINTS names another file.
$(STAMP): pyproject.toml $(CONSTRAINTS) $(VENV)/.constraints-used
	@if [ -x $(VENV)/bin/python ]; then $(VENV)/bin/python -c '$(PYCHECK)'; \
	elif command -v $(PYTHON) >/dev/null; then $(PYTHON) -c '$(PYCHECK)'; \
	else echo "no $(PYTHON): name a python3 >= 3.11 with PYTHON=..."; exit 1; fi
	test -x $(VENV)/bin/python || { $(PYTHON) -m venv $(VENV) && $(VENV)/bin/pip install -q --upgrade pip; }
ifeq ($(CONSTRAINTS),)
	$(VENV)/bin/pip list --format=freeze 2>/dev/null | grep -E '^(torch|torchvision)==' > $(KEEP) || true
	@echo "kept as installed: $$(tr '\n' ' ' < $(KEEP))"
	@grep -q '^torchvision==' $(KEEP) || ! grep -q '^torch==' $(KEEP) || \
		echo "note: no torchvision here; pip takes PyPI's build for this torch (if torch came from another index, install torchvision from there too)"
	$(VENV)/bin/pip install -q -c $(KEEP) -e '.[test]'
else
	$(VENV)/bin/pip install -q -c $(CONSTRAINTS) -e '.[test]'
endif
	@$(VENV)/bin/python -c 'import torchvision' 2>/dev/null || { echo "torchvision does not load with \
$(VENV)'s torch: install the one built for that torch (CPU/CUDA), from the index it came from"; exit 1; }
	touch $(STAMP)

$(VENV)/.constraints-used: FORCE
	@mkdir -p $(VENV)
	@echo '$(CONSTRAINTS)' | cmp -s - $@ || echo '$(CONSTRAINTS)' > $@

setup: $(STAMP)

# Real Fashion-MNIST offline from Debian's package where we may install it; otherwise the
# pipeline looks in data_dir and then downloads (see README).
data:
	@if [ ! -d $(FASHION) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -q dataset-fashion-mnist >/dev/null || \
		{ apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; } || \
		echo "note: dataset-fashion-mnist not installed; the pipeline will look in data/ or download"; \
	fi

run: setup data
	$(SNAKEMAKE)

report: setup
	$(SNAKEMAKE) --report results/report.html

test: setup
	$(VENV)/bin/python -m pytest

# The generated documents: config/README.md's reference tables from config/schema.yaml and
# docs/rulegraph.md from the rules (tests/test_docs.py fails when either is stale).
docs: setup
	$(VENV)/bin/python workflow_scripts/config_reference.py
	$(VENV)/bin/python workflow_scripts/rulegraph.py

# README.md's findings block from the last run's results/tables/answer.md (and contrasts.png).
summary: setup
	$(VENV)/bin/python workflow_scripts/readme_summary.py

clean:
	rm -rf results .snakemake

# On a SLURM login node; edit profiles/slurm/config.yaml first (docs/cluster.md).
slurm: setup
	$(SNAKEMAKE) --workflow-profile profiles/slurm

test-slurm: setup
	$(VENV)/bin/python -m pytest tests/test_slurm.py -x -q
