"""Snakemake entry point of rule sample_quality; the work is geovq.stages_generative.sample_quality."""
import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 (geovq without install, e.g. --sdm conda)
from geovq.stages import entry
from geovq.stages_generative import sample_quality

entry(snakemake, sample_quality)  # noqa: F821 (snakemake is injected by the script directive)
