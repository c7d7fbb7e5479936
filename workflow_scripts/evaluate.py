"""Snakemake entry point of rule evaluate; the work is geovq.stages.evaluate."""
import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 (geovq without install, e.g. --sdm conda)
from geovq.stages import evaluate, entry

entry(snakemake, evaluate)  # noqa: F821 (snakemake is injected by the script directive)
