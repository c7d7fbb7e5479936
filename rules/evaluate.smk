rule evaluate:
    """Paired test-set metrics of one quantizer under one test assignment, per image and as means."""
    input:
        test=f"{RESULTS}/{{dataset}}/data/test.npz",
        model=decoder_of,
        latents_test=latents_test_of,
        codebook=f"{QRUN}/codebook.npz",
        codes_train=f"{QRUN}/codes_train.npz",
        codes_test=codes_test_of,
        nll=f"{QRUN}/prior/nll.json",
        sample_quality=f"{QRUN}/prior/sample_quality.json",
        recon_quality=f"{RUN}/vae/recon_quality.json",
        classifier_metrics=f"{RESULTS}/{{dataset}}/classifier/metrics.json",
        code=code_inputs("evaluate"),
    output:
        metrics=f"{EVAL}/metrics.json",
        per_image=f"{EVAL}/per_image.npz",
    log:
        f"{QRUN}/logs/evaluate_{{assign}}.log",
    benchmark:
        f"{QRUN}/benchmarks/evaluate_{{assign}}.tsv"
    conda:
        "../envs/geovq.yaml"
    threads: config["threads"]
    params:
        evaluate=lambda wc: dcfg(wc, "evaluate"),
        device=config["device"],
    script:
        "../workflow_scripts/run_stage.py"


rule metrics_table:
    """One table over every dataset x variant x quantizer x assign x seed."""
    input:
        metrics=evaluations_of(f"{EVAL}/metrics.json"),
        code=code_inputs("metrics_table"),
    output:
        csv=report(f"{RESULTS}/tables/metrics.csv", caption="../report/metrics_table.rst", category="Metrics table"),
        md=f"{RESULTS}/tables/metrics.md",
        html=report(f"{RESULTS}/tables/metrics.html", caption="../report/metrics_table.rst", category="Metrics table"),
    log:
        f"{RESULTS}/logs/metrics_table.log",
    benchmark:
        f"{RESULTS}/benchmarks/metrics_table.tsv"
    conda:
        "../envs/geovq.yaml"
    script:
        "../workflow_scripts/run_stage.py"
