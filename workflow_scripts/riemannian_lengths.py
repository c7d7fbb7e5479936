"""Snakemake entry point of rule riemannian_lengths; the work is geovq.stages_geodesic.riemannian_lengths."""
import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 (geovq without install, e.g. --sdm conda)
from geovq.stages import entry
from geovq.stages_geodesic import riemannian_lengths

entry(snakemake, riemannian_lengths)  # noqa: F821 (snakemake is injected by the script directive)
