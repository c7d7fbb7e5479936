"""Snakemake entry point of rule knn_graph; the work is geovq.stages_geodesic.knn_graph."""
import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 (geovq without install, e.g. --sdm conda)
from geovq.stages import entry
from geovq.stages_geodesic import knn_graph

entry(snakemake, knn_graph)  # noqa: F821 (snakemake is injected by the script directive)
