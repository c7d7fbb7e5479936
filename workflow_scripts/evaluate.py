"""Snakemake entry point of rule evaluate; the work is geovq.stages.evaluate."""
from geovq.stages import evaluate, entry

entry(snakemake, evaluate)  # noqa: F821 (snakemake is injected by the script directive)
