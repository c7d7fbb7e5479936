rule evaluate:
    """Paired test-set metrics of one quantizer: reconstructions, codebook usage, prior NLL, sample quality."""
    input:
        test=RESULTS + "/{dataset}/data/test.npz",
        model=decoder_of,
        latents_test=latents_test_of,
        codebook=QRUN + "/codebook.npz",
        codes_train=QRUN + "/codes_train.npz",
        codes_test=QRUN + "/codes_test.npz",
        nll=QRUN + "/prior/nll.json",
        sample_quality=QRUN + "/prior/sample_quality.json",
        recon_quality=RUN + "/vae/recon_quality.json",
        code=lib("metrics", "codebook", "train", "vqvae", "models", "data"),
    output:
        metrics=QRUN + "/metrics.json",
    params:
        dataset="{dataset}",
        variant="{variant}",
        quantizer="{quantizer}",
        seed=lambda wc: int(wc.seed),
        evaluate=lambda wc: dcfg(wc, "evaluate"),
        device=config["device"],
    threads: config["threads"] or workflow.cores
    log:
        QRUN + "/logs/evaluate.log",
    benchmark:
        QRUN + "/benchmarks/evaluate.tsv"
    script:
        "../workflow_scripts/evaluate.py"


rule metrics_table:
    """One table over every dataset x variant x quantizer x seed."""
    input:
        metrics=expand(
            QRUN + "/metrics.json",
            dataset=config["datasets"],
            variant=config["variants"],
            quantizer=config["quantizers"],
            seed=config["seeds"],
        ),
        code=lib(),
    output:
        csv=report(RESULTS + "/tables/metrics.csv", caption="../report/metrics_table.rst", category="Metrics table"),
        md=RESULTS + "/tables/metrics.md",
        html=report(RESULTS + "/tables/metrics.html", caption="../report/metrics_table.rst", category="Metrics table"),
    log:
        RESULTS + "/logs/metrics_table.log",
    script:
        "../workflow_scripts/metrics_table.py"
