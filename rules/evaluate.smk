rule evaluate:
    """Paired test-set metrics of one quantizer: reconstructions, codebook usage, prior NLL, sample quality."""
    input:
        test=f"{RESULTS}/{{dataset}}/data/test.npz",
        model=decoder_of,
        latents_test=latents_test_of,
        codebook=f"{QRUN}/codebook.npz",
        codes_train=f"{QRUN}/codes_train.npz",
        codes_test=f"{QRUN}/codes_test.npz",
        nll=f"{QRUN}/prior/nll.json",
        sample_quality=f"{QRUN}/prior/sample_quality.json",
        recon_quality=f"{RUN}/vae/recon_quality.json",
        code=lib("metrics", "codebook", "train", "vqvae", "models", "data"),
    output:
        metrics=f"{QRUN}/metrics.json",
    params:
        dataset="{dataset}",
        variant="{variant}",
        quantizer="{quantizer}",
        seed=lambda wc: int(wc.seed),
        evaluate=lambda wc: dcfg(wc, "evaluate"),
        device=config["device"],
    threads: config["threads"]
    log:
        f"{QRUN}/logs/evaluate.log",
    benchmark:
        f"{QRUN}/benchmarks/evaluate.tsv"
    conda:
        "../envs/geovq.yaml"
    script:
        "../workflow_scripts/evaluate.py"


rule metrics_table:
    """One table over every dataset x variant x quantizer x seed."""
    input:
        metrics=expand(
            f"{QRUN}/metrics.json",
            dataset=config["datasets"],
            variant=config["variants"],
            quantizer=config["quantizers"],
            seed=config["seeds"],
        ),
        code=lib(),
    output:
        csv=report(f"{RESULTS}/tables/metrics.csv", caption="../report/metrics_table.rst", category="Metrics table"),
        md=f"{RESULTS}/tables/metrics.md",
        html=report(f"{RESULTS}/tables/metrics.html", caption="../report/metrics_table.rst", category="Metrics table"),
    log:
        f"{RESULTS}/logs/metrics_table.log",
    conda:
        "../envs/geovq.yaml"
    script:
        "../workflow_scripts/metrics_table.py"
