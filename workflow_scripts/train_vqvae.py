"""Snakemake entry point of rule train_vqvae; the work is geovq.stages_generative.train_vqvae."""
import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 (geovq without install, e.g. --sdm conda)
from geovq.stages import entry
from geovq.stages_generative import train_vqvae

entry(snakemake, train_vqvae)  # noqa: F821 (snakemake is injected by the script directive)
