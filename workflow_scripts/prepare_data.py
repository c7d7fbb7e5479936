"""Snakemake entry point of rule prepare_data; the work is geovq.stages.prepare_data."""
from geovq.stages import prepare_data, entry

entry(snakemake, prepare_data)  # noqa: F821 (snakemake is injected by the script directive)
