"""Snakemake entry point of rule geodesic_medoids; the work is geovq.stages_geodesic.geodesic_medoids."""
import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 (geovq without install, e.g. --sdm conda)
from geovq.stages import entry
from geovq.stages_geodesic import geodesic_medoids

entry(snakemake, geodesic_medoids)  # noqa: F821 (snakemake is injected by the script directive)
