"""Snakemake entry point of rule kmeans_codebook; the work is geovq.stages.kmeans_codebook."""
import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 (geovq without install, e.g. --sdm conda)
from geovq.stages import kmeans_codebook, entry

entry(snakemake, kmeans_codebook)  # noqa: F821 (snakemake is injected by the script directive)
