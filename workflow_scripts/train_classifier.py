"""Snakemake entry point of rule train_classifier; the work is geovq.stages_generative.train_classifier."""
import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 (geovq without install, e.g. --sdm conda)
from geovq.stages import entry
from geovq.stages_generative import train_classifier

entry(snakemake, train_classifier)  # noqa: F821 (snakemake is injected by the script directive)
