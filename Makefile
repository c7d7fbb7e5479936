# Two entry points (see README): `make run` sets up and runs the default config;
# `make test` sets up and runs the test suite (what .ci/run calls).
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
SNAKEMAKE := $(VENV)/bin/snakemake
FASHION := /usr/share/datasets/fashion-mnist

.PHONY: setup data run test report clean slurm test-slurm docs summary

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (torch 2.14.1 wheels)"; exit 1; }
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

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
