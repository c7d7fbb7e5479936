"""Snakemake entry point of rule metrics_table; the work is geovq.stages.metrics_table."""
from geovq.stages import metrics_table, entry

entry(snakemake, metrics_table)  # noqa: F821 (snakemake is injected by the script directive)
