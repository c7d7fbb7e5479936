"""Snakemake entry point of rule run_figures; the work is geovq.stages_report.run_figures."""
import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 (geovq without install, e.g. --sdm conda)
from geovq.stages import entry
from geovq.stages_report import run_figures

entry(snakemake, run_figures)  # noqa: F821 (snakemake is injected by the script directive)
