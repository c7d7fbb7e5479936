"""Snakemake entry point of rule train_vae; the work is geovq.stages.train_vae."""
import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 (geovq without install, e.g. --sdm conda)
from geovq.stages import train_vae, entry

entry(snakemake, train_vae)  # noqa: F821 (snakemake is injected by the script directive)
