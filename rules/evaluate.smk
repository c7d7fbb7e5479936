rule evaluate:
    """Paired test-set metrics of one quantizer: reconstructions, codebook usage."""
    input:
        test=RESULTS + "/{dataset}/data/test.npz",
        model=RUN + "/vae/model.pt",
        latents_test=RUN + "/vae/latents_test.npz",
        codebook=QRUN + "/codebook.npz",
        codes_train=QRUN + "/codes_train.npz",
        codes_test=QRUN + "/codes_test.npz",
        code=lib("metrics", "codebook", "train", "models", "data"),
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
        csv=RESULTS + "/tables/metrics.csv",
        md=RESULTS + "/tables/metrics.md",
    log:
        RESULTS + "/logs/metrics_table.log",
    script:
        "../workflow_scripts/metrics_table.py"
