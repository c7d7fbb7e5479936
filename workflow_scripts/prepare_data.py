"""Snakemake entry point of rule prepare_data; the work is geovq.stages.prepare_data."""
import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 (geovq without install, e.g. --sdm conda)
from geovq.stages import prepare_data, entry

entry(snakemake, prepare_data)  # noqa: F821 (snakemake is injected by the script directive)
