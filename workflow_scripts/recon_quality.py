"""Snakemake entry point of rule recon_quality; the work is geovq.stages_generative.recon_quality."""
import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 (geovq without install, e.g. --sdm conda)
from geovq.stages import entry
from geovq.stages_generative import recon_quality

entry(snakemake, recon_quality)  # noqa: F821 (snakemake is injected by the script directive)
