"""Snakemake entry point of rule metrics_table; the work is geovq.stages.metrics_table."""
import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 (geovq without install, e.g. --sdm conda)
from geovq.stages import metrics_table, entry

entry(snakemake, metrics_table)  # noqa: F821 (snakemake is injected by the script directive)
