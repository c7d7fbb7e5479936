"""Snakemake entry point of rule geodesic_codes; the work is geovq.stages_geodesic.geodesic_codes."""
import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 (geovq without install, e.g. --sdm conda)
from geovq.stages import entry
from geovq.stages_geodesic import geodesic_codes

entry(snakemake, geodesic_codes)  # noqa: F821 (snakemake is injected by the script directive)
