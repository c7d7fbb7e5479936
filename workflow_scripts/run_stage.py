"""Snakemake entry point of every rule: runs the stage geovq/stages/registry.py names for the rule.

Imports only that stage's module (one process per job, as `script:` runs it), then hands it to
geovq.stages.runner.entry: log file, threads, one-line errors.
"""

import importlib
import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 (geovq without install, e.g. --sdm conda)
from geovq.stages.registry import STAGES  # noqa: E402

rule = snakemake.rule  # noqa: F821 (snakemake is injected by the script directive)
if rule not in STAGES:
    sys.exit(f"geovq error: rule {rule!r} has no stage in geovq/stages/registry.py")
module, _, name = STAGES[rule].partition(":")

from geovq.stages.runner import entry  # noqa: E402

entry(snakemake, getattr(importlib.import_module(module), name))  # noqa: F821
