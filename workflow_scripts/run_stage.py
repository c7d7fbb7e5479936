"""Snakemake entry point of every rule: runs the stage geovq/stages/registry.py names for the rule.

The job goes to a warm server when one can be had (geovq.stages.warm: a child forked from a
process that has already imported torch, numpy, scipy and faiss), else it runs here, importing
only that stage's module; either way through geovq.stages.runner.run_rule (log file, threads,
one-line errors).
"""

import sys

ROOT = snakemake.scriptdir + "/.."  # noqa: F821 (snakemake is injected by the script directive)
sys.path.insert(0, ROOT)  # geovq without install, e.g. --sdm conda
from geovq.stages.warm import delegate  # noqa: E402 (standard library only)

status = delegate(snakemake, ROOT)  # noqa: F821
if status is not None:
    sys.exit(status)

from geovq.stages.runner import run_rule  # noqa: E402

run_rule(snakemake)  # noqa: F821
