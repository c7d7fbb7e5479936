"""Snakemake entry point of rule analysis; the work is geovq.stages_report.analysis."""
import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 (geovq without install, e.g. --sdm conda)
from geovq.stages import entry
from geovq.stages_report import analysis

entry(snakemake, analysis)  # noqa: F821 (snakemake is injected by the script directive)
