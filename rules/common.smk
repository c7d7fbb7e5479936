# Config validation, wildcard constraints, paths and the list of final targets.
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)  # the library, also when not pip-installed

from snakemake.exceptions import WorkflowError

import geovq.config
from geovq.io import GeovqError

try:
    geovq.config.validate(config)  # fills defaults in place, rejects unknown keys
except GeovqError as e:
    raise WorkflowError(str(e)) from None

RESULTS = "results"
RUN = RESULTS + "/{dataset}/{variant}/seed{seed}"  # one trained VAE and everything built on it
QRUN = RUN + "/{quantizer}"


wildcard_constraints:
    dataset="|".join(config["datasets"]),
    variant="|".join(config["variants"]),
    quantizer="|".join(config["quantizers"]),
    seed=r"\d+",
    split="train|test",


def lib(*modules):
    """Library modules a rule runs, as inputs: editing one reruns that rule and what follows."""
    return [str(Path(workflow.basedir) / "geovq" / f"{m}.py") for m in ("__init__", "io", "stages", *modules)]


def dcfg(wildcards, section):
    """A config section as the jobs of ``wildcards.dataset`` see it (overrides merged)."""
    return geovq.config.dataset_config(config, wildcards.dataset)[section]


def run_dirs():
    return expand(RUN, dataset=config["datasets"], variant=config["variants"], seed=config["seeds"])


def final_targets():
    """The table (which pulls in every run) and the report's figures and analyses."""
    return [f"{RESULTS}/tables/metrics.csv", f"{RESULTS}/tables/metrics.md"] + report_targets()
