"""Pipeline stages: one module per rule file (rules/<name>.smk <-> geovq/stages/<name>.py), one
function per rule, ``stage(inp, out, params, log)``, run through runner.entry by
workflow_scripts/run_stage.py as registry.STAGES names it.

Nothing is imported here: a job loads only its own stage module (and what it imports), which is
what geovq.codedeps lists as the rule's code inputs.
"""
