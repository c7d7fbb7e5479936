"""Snakemake entry point of rule train_vae; the work is geovq.stages.train_vae."""
from geovq.stages import train_vae, entry

entry(snakemake, train_vae)  # noqa: F821 (snakemake is injected by the script directive)
