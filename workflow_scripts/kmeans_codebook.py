"""Snakemake entry point of rule kmeans_codebook; the work is geovq.stages.kmeans_codebook."""
from geovq.stages import kmeans_codebook, entry

entry(snakemake, kmeans_codebook)  # noqa: F821 (snakemake is injected by the script directive)
